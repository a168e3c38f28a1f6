module github.com/mpaged/mpaged

go 1.26.0

require (
	github.com/cockroachdb/datadriven v1.0.3
	github.com/iceber/iouring-go v0.0.0-20230403020409-002cfd2e2a90
	golang.org/x/sys v0.49.0
)

require (
	github.com/dustin/go-humanize v1.1.0 // indirect
	github.com/google/btree v1.1.3 // indirect
	github.com/pmezard/go-difflib v1.0.0 // indirect
)
