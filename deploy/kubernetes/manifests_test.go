// Package kubernetes checks the manifests in this directory: each decodes
// strictly (an unknown or misspelt field is an error) into the k8s.io/api
// type of its kind, the kustomization names files that exist, and the
// container's arguments are flags mpaged serve has. It is a module of its
// own so that the main module does not depend on k8s.io/api.
package kubernetes

import (
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	"k8s.io/apimachinery/pkg/util/intstr"
	kjson "sigs.k8s.io/json"
	"sigs.k8s.io/yaml"
)

// kustomization is the part of kustomization.yaml this package uses; the
// strict decode refuses a field it does not list, so a new one is added
// here on purpose.
type kustomization struct {
	APIVersion string   `json:"apiVersion"`
	Kind       string   `json:"kind"`
	Namespace  string   `json:"namespace"`
	Resources  []string `json:"resources"`
	Labels     []struct {
		Pairs map[string]string `json:"pairs"`
	} `json:"labels"`
	Images []struct {
		Name    string `json:"name"`
		NewName string `json:"newName"`
		NewTag  string `json:"newTag"`
	} `json:"images"`
}

// manifests decodes every resource the kustomization lists.
type manifests struct {
	kust      kustomization
	namespace *corev1.Namespace
	daemonSet *appsv1.DaemonSet
	service   *corev1.Service
}

// decodeStrict reads a single-document manifest into out as the API
// server's strict field validation does: an unknown field, a field in
// the wrong case (encoding/json, and so yaml.UnmarshalStrict, would match
// readOnlyRootFileSystem to readOnlyRootFilesystem) or a duplicate key is
// an error.
func decodeStrict(data []byte, out any) error {
	j, err := yaml.YAMLToJSONStrict(data)
	if err != nil {
		return err
	}
	strict, err := kjson.UnmarshalStrict(j, out, kjson.DisallowDuplicateFields, kjson.DisallowUnknownFields)
	if err != nil {
		return err
	}
	return errors.Join(strict...)
}

func loadManifests(t *testing.T) manifests {
	t.Helper()
	var m manifests
	b, err := os.ReadFile("kustomization.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if err := decodeStrict(b, &m.kust); err != nil {
		t.Fatalf("kustomization.yaml: %v", err)
	}
	if m.kust.Kind != "Kustomization" || len(m.kust.Resources) == 0 {
		t.Fatalf("kustomization.yaml: kind %q, %d resources", m.kust.Kind, len(m.kust.Resources))
	}
	for _, res := range m.kust.Resources {
		b, err := os.ReadFile(filepath.Clean(res))
		if err != nil {
			t.Fatalf("kustomization resource %s: %v", res, err)
		}
		var head struct{ Kind string }
		if err := yaml.Unmarshal(b, &head); err != nil {
			t.Fatalf("%s: %v", res, err)
		}
		var out any
		switch head.Kind {
		case "Namespace":
			m.namespace = new(corev1.Namespace)
			out = m.namespace
		case "DaemonSet":
			m.daemonSet = new(appsv1.DaemonSet)
			out = m.daemonSet
		case "Service":
			m.service = new(corev1.Service)
			out = m.service
		default:
			t.Fatalf("%s: kind %q: the test knows no type for it", res, head.Kind)
		}
		if err := decodeStrict(b, out); err != nil {
			t.Fatalf("%s: %v", res, err)
		}
	}
	if m.namespace == nil || m.daemonSet == nil || m.service == nil {
		t.Fatalf("kustomization lists no Namespace, DaemonSet or Service: %v", m.kust.Resources)
	}
	return m
}

// TestDecodeIsStrict: the decoder the manifests go through refuses what a
// lenient one would drop without a word.
func TestDecodeIsStrict(t *testing.T) {
	for _, tc := range []struct {
		name, doc string
		ok        bool
	}{
		{"valid", "apiVersion: v1\nkind: Service\nspec:\n  internalTrafficPolicy: Local\n", true},
		{"misspelt field", "apiVersion: v1\nkind: Service\nspec:\n  internalTraficPolicy: Local\n", false},
		{"field in the wrong case", "apiVersion: v1\nkind: Service\nspec:\n  internalTrafficpolicy: Local\n", false},
		{"field of another kind", "apiVersion: v1\nkind: Service\nspec:\n  template: {}\n", false},
		{"duplicate key", "apiVersion: v1\nkind: Service\nkind: Service\n", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := decodeStrict([]byte(tc.doc), new(corev1.Service))
			if (err == nil) != tc.ok {
				t.Fatalf("decode: %v, want ok=%v", err, tc.ok)
			}
		})
	}
}

func TestManifestsDecodeStrictly(t *testing.T) {
	m := loadManifests(t)
	if m.kust.Namespace != m.namespace.Name {
		t.Errorf("kustomization puts resources in %q, namespace.yaml makes %q", m.kust.Namespace, m.namespace.Name)
	}
	if len(m.kust.Images) != 1 || m.kust.Images[0].Name != mpagedContainer(t, m.daemonSet).Image {
		t.Errorf("kustomization images %+v do not rename the container's image %q", m.kust.Images, mpagedContainer(t, m.daemonSet).Image)
	}
}

func mpagedContainer(t *testing.T, ds *appsv1.DaemonSet) corev1.Container {
	t.Helper()
	cs := ds.Spec.Template.Spec.Containers
	if len(cs) != 1 || cs[0].Name != "mpaged" {
		t.Fatalf("DaemonSet: want one container named mpaged, have %d", len(cs))
	}
	return cs[0]
}

// TestContainerArgsAreServeFlags: the container runs mpaged serve with
// flags serve lists in --help, and the listen port is the one the probes,
// the Service and the scrape annotation use.
func TestContainerArgsAreServeFlags(t *testing.T) {
	m := loadManifests(t)
	c := mpagedContainer(t, m.daemonSet)
	if len(c.Args) == 0 || c.Args[0] != "serve" {
		t.Fatalf("args %q: want serve first", c.Args)
	}
	flags := serveHelpFlags(t)
	args := map[string]string{}
	for _, a := range c.Args[1:] {
		name, value, ok := strings.Cut(strings.TrimPrefix(a, "--"), "=")
		if !strings.HasPrefix(a, "--") || !ok {
			t.Errorf("arg %q: want --flag=value", a)
			continue
		}
		if !flags[name] {
			t.Errorf("arg %q: mpaged serve has no --%s", a, name)
		}
		args[name] = value
	}
	_, port, _ := strings.Cut(args["listen"], ":")
	if len(c.Ports) != 1 || port == "" || c.Ports[0].ContainerPort != atoi(t, port) {
		t.Errorf("--listen=%s, container ports %+v", args["listen"], c.Ports)
	}
	if got := m.daemonSet.Spec.Template.Annotations["prometheus.io/port"]; got != port {
		t.Errorf("prometheus.io/port %q, daemon listens on %q", got, port)
	}
	for name, p := range map[string]*corev1.Probe{"startup": c.StartupProbe, "liveness": c.LivenessProbe, "readiness": c.ReadinessProbe} {
		if p == nil || p.HTTPGet == nil || p.HTTPGet.Port != intstr.FromString(c.Ports[0].Name) {
			t.Errorf("%s probe %+v: want an HTTP GET on port %q", name, p, c.Ports[0].Name)
		}
	}
	if c.LivenessProbe.HTTPGet.Path != "/healthz" || c.ReadinessProbe.HTTPGet.Path != "/readyz" {
		t.Errorf("liveness %s, readiness %s: want /healthz and /readyz", c.LivenessProbe.HTTPGet.Path, c.ReadinessProbe.HTTPGet.Path)
	}
	checkShutdownFits(t, m.daemonSet, args["shutdown-timeout"])
	checkMemoryCoversCache(t, c, args["cache"])
}

// checkShutdownFits: the grace period covers preStop and the requests'
// drain with room left for the write-back.
func checkShutdownFits(t *testing.T, ds *appsv1.DaemonSet, shutdownTimeout string) {
	t.Helper()
	grace := ds.Spec.Template.Spec.TerminationGracePeriodSeconds
	var preStop int64
	if l := mpagedContainer(t, ds).Lifecycle; l != nil && l.PreStop != nil && l.PreStop.Sleep != nil {
		preStop = l.PreStop.Sleep.Seconds
	}
	drain := atoi(t, strings.TrimSuffix(shutdownTimeout, "s"))
	if grace == nil || *grace < preStop+int64(drain)+30 {
		t.Errorf("terminationGracePeriodSeconds %v: want at least preStop %ds + --shutdown-timeout %ds + 30s of write-back", grace, preStop, drain)
	}
}

// checkMemoryCoversCache: the memory limit holds the cache and more
// (frames are the cache plus at least a quarter; see the comment in
// daemonset.yaml), and requests equal limits.
func checkMemoryCoversCache(t *testing.T, c corev1.Container, cache string) {
	t.Helper()
	cacheQ, err := resource.ParseQuantity(strings.Replace(cache, "iB", "i", 1))
	if err != nil {
		t.Fatalf("--cache=%s: %v", cache, err)
	}
	limit := c.Resources.Limits.Memory()
	if limit.Value() < cacheQ.Value()*5/4+64<<20 {
		t.Errorf("memory limit %s for --cache=%s: want at least the cache, a quarter more and 64 MiB", limit, cache)
	}
	if req := c.Resources.Requests.Memory(); req.Cmp(*limit) != 0 {
		t.Errorf("memory request %s, limit %s: want them equal", req, limit)
	}
}

// TestPrivilegeIsNarrow: not privileged, every capability dropped but
// IPC_LOCK, no escalation, a seccomp profile.
func TestPrivilegeIsNarrow(t *testing.T) {
	m := loadManifests(t)
	sc := mpagedContainer(t, m.daemonSet).SecurityContext
	if sc == nil || sc.Capabilities == nil {
		t.Fatal("no securityContext with capabilities")
	}
	if sc.Privileged == nil || *sc.Privileged || sc.AllowPrivilegeEscalation == nil || *sc.AllowPrivilegeEscalation {
		t.Errorf("privileged %v, allowPrivilegeEscalation %v: want both false", sc.Privileged, sc.AllowPrivilegeEscalation)
	}
	if !slices.Equal(sc.Capabilities.Drop, []corev1.Capability{"ALL"}) || !slices.Equal(sc.Capabilities.Add, []corev1.Capability{"IPC_LOCK"}) {
		t.Errorf("capabilities drop %v add %v: want ALL, IPC_LOCK", sc.Capabilities.Drop, sc.Capabilities.Add)
	}
	pod := m.daemonSet.Spec.Template.Spec
	if pod.SecurityContext == nil || pod.SecurityContext.SeccompProfile == nil {
		t.Error("no pod seccompProfile")
	}
	if pod.HostNetwork || pod.HostPID || pod.HostIPC {
		t.Error("host namespaces shared")
	}
}

// TestSelectorsMatch: the DaemonSet selects its own pods and the Service
// reaches them on a port the container has.
func TestSelectorsMatch(t *testing.T) {
	m := loadManifests(t)
	podLabels := m.daemonSet.Spec.Template.Labels
	for k, v := range m.daemonSet.Spec.Selector.MatchLabels {
		if podLabels[k] != v {
			t.Errorf("DaemonSet selector %s=%s does not match its pods %v", k, v, podLabels)
		}
	}
	for k, v := range m.service.Spec.Selector {
		if podLabels[k] != v {
			t.Errorf("Service selector %s=%s does not match the pods %v", k, v, podLabels)
		}
	}
	c := mpagedContainer(t, m.daemonSet)
	for _, p := range m.service.Spec.Ports {
		if p.TargetPort != intstr.FromString(c.Ports[0].Name) {
			t.Errorf("Service port %s targets %s, the container's port is %q", p.Name, p.TargetPort.String(), c.Ports[0].Name)
		}
	}
}

// serveHelpFlags lists the flags `mpaged serve --help` prints, from
// $MPAGED_BIN (make deploy-check passes bin/mpaged) or a binary built from
// the main module for the test.
func serveHelpFlags(t *testing.T) map[string]bool {
	t.Helper()
	bin := os.Getenv("MPAGED_BIN")
	if bin == "" {
		bin = filepath.Join(t.TempDir(), "mpaged")
		build := exec.Command("go", "build", "-o", bin, "./cmd/mpaged")
		build.Dir = filepath.Join("..", "..")
		if out, err := build.CombinedOutput(); err != nil {
			t.Fatalf("go build ./cmd/mpaged: %v\n%s", err, out)
		}
	}
	out, err := exec.Command(bin, "serve", "--help").Output()
	if err != nil {
		t.Fatalf("%s serve --help: %v", bin, err)
	}
	flags := map[string]bool{}
	for _, m := range regexp.MustCompile(`(?m)^\s+-(\S+)`).FindAllStringSubmatch(string(out), -1) {
		flags[m[1]] = true
	}
	if !flags["listen"] {
		t.Fatalf("%s serve --help lists no --listen:\n%s", bin, out)
	}
	return flags
}

func atoi(t *testing.T, s string) int32 {
	t.Helper()
	q, err := resource.ParseQuantity(s)
	if err != nil {
		t.Fatalf("%q: %v", s, err)
	}
	return int32(q.Value())
}
