# mpaged — make run starts it, make test checks everything. See README.md.

GO        ?= go
TAGGED    := -tags iouringgo -ldflags=-checklinkname=0
VERSION   ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
BIN       := bin/mpaged
# A count, not a duration: a duration-based -fuzztime can fail with a bare
# "context deadline exceeded" at its end on Go 1.26 (golang/go#75804, a race
# in the fuzz coordinator, fixed in Go 1.27). Counts never race a deadline.
FUZZTIME  ?= 100000x
# Fuzz targets run briefly by make test: package:target.
FUZZ      := ./alloc:FuzzParsePSI ./uring/faultring:FuzzParseRule ./fs/ext:FuzzSuperblock ./fs/ext:FuzzGroupDesc ./fs/ext:FuzzInode ./fs/ext:FuzzExtentHeader ./fs/ext:FuzzDirEntries ./fs/ext/jbd2:FuzzSuperblock ./fs/ext/jbd2:FuzzLogBlock ./fs/ext/jbd2:FuzzRecover ./fs/ext:FuzzSplitPath ./api:FuzzPathSegments ./api:FuzzHTTP

.PHONY: all build run test deps fmt-check vet unit tagged invariants fuzz drills-short drills deploy-check bench bench-compare clean

all: build

build:
	$(GO) build -tags iouringgo -ldflags="-checklinkname=0 -X main.version=$(VERSION)" -o $(BIN) ./cmd/mpaged

# The daemon on ./mpaged-data/volume.img (created on first run: a sparse
# 1 GiB ext4 with its journal), at http://127.0.0.1:7070. Flags after
# ARGS=, e.g. make run ARGS="--cache 1GiB".
run: build
	./$(BIN) serve $(ARGS)

deps:
	./scripts/deps.sh

fmt-check:
	@out=$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go')); \
	if [ -n "$$out" ]; then echo "gofmt would change:"; echo "$$out"; exit 1; fi

vet:
	$(GO) vet ./...
	$(GO) vet -tags iouringgo ./...

# unit and tagged include cmd/mpaged's TestBenchQuick: `mpaged bench --quick`
# on a zram (else loop) device, every runner, report, JSON and chart.
# The drills run on their own (drills-short), so they print their table;
# deploy/'s checks too (deploy-check).
unit:
	$(GO) test -race -count=1 $$($(GO) list ./... | grep -v -e '/drills$$' -e '/deploy$$')

# The iouring-go backend links only with -checklinkname=0, behind its tag.
tagged:
	$(GO) test -race -count=1 $(TAGGED) ./uring/iouringgo/ ./engine/ ./cmd/...

# The engine once more with its assertions compiled in.
invariants:
	$(GO) test -race -count=1 -tags invariants ./internal/... ./mpage/...

fuzz:
	@set -e; for t in $(FUZZ); do \
		pkg=$${t%%:*}; name=$${t##*:}; \
		echo "fuzz $$pkg $$name for $(FUZZTIME)"; \
		$(GO) test -run '^$$' -fuzz "^$$name$$" -fuzztime $(FUZZTIME) $$pkg; \
	done

# The reliability drills, short: a few rounds of each, one summary table.
drills-short:
	@mkdir -p drills-out
	$(GO) test -race -count=1 ./drills/ -args -drills.summary=$(CURDIR)/drills-out/short.txt
	@cat drills-out/short.txt

# The reliability drills, long (minutes): the figures in RELIABILITY.md.
drills:
	@mkdir -p drills-out
	$(GO) test -count=1 -timeout 60m ./drills/ -args -drills.long -drills.summary=$(CURDIR)/drills-out/long.txt
	@cat drills-out/long.txt

# The files in deploy/, each checked by the tool that reads it:
# systemd-analyze verify (the unit and its drop-in), promtool (config,
# rules, the rules' unit tests), a real Prometheus scraping a real daemon
# (every dashboard query, the alert rules). The Kubernetes manifests are
# checked by their own module, so k8s.io/api stays out of go.mod.
deploy-check: build
	$(GO) test -race -count=1 ./deploy/
	cd deploy/kubernetes && $(GO) vet ./... && MPAGED_BIN=$(CURDIR)/$(BIN) $(GO) test -count=1 ./...

test: deps fmt-check vet build unit tagged invariants fuzz drills-short deploy-check

bench:
	$(GO) test -run '^$$' -bench . -benchmem ./uring/ ./alloc/ ./mpage/
	$(GO) test -run '^$$' -bench . -benchmem $(TAGGED) ./uring/iouringgo/

# The full comparison (about a minute and a half): every workload and
# runner, the daemon against nginx included, on a zram device made for the
# run (else a loop device), interleaved, three repetitions; the table, JSON
# and chart land in bench-out/.
bench-compare: build
	mkdir -p bench-out
	./$(BIN) bench --json bench-out/bench.json --svg bench-out/bench.svg | tee bench-out/bench.txt

clean:
	rm -rf bin bench-out drills-out
