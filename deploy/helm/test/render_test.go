// Package test renders the geminidb-patch-bot chart with Helm (the version
// this module pins, built from source by the test) and decodes every
// manifest strictly into the Kubernetes API types: a field Kubernetes does
// not know, a wrong type or a duplicate key fails the test, as the API
// server would refuse it. It lives in a module of its own so the bot's
// go.mod does not carry Helm and the Kubernetes API.
package test

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	monitoringv1 "github.com/prometheus-operator/prometheus-operator/pkg/apis/monitoring/v1"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	policyv1 "k8s.io/api/policy/v1"
	"sigs.k8s.io/yaml"
)

const (
	chartDir  = "../geminidb-patch-bot"
	release   = "gpb"
	namespace = "bots"
)

// helmBin is the helm binary TestMain builds.
var helmBin string

// TestMain builds helm from the version in go.mod (a tool of this module),
// so the test needs neither a helm on the PATH nor the network; HELM_BIN
// names one built already (.ci/run builds it first: that takes minutes).
func TestMain(m *testing.M) {
	if bin := os.Getenv("HELM_BIN"); bin != "" {
		helmBin = bin
		os.Exit(m.Run())
	}
	dir, err := os.MkdirTemp("", "helm-test-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	helmBin = filepath.Join(dir, "helm")
	start := time.Now()
	if out, err := exec.Command("go", "build", "-o", helmBin, "helm.sh/helm/v4/cmd/helm").CombinedOutput(); err != nil {
		fmt.Fprintf(os.Stderr, "go build helm: %v\n%s", err, out)
		os.Exit(1)
	}
	fmt.Fprintf(os.Stderr, "built helm in %v\n", time.Since(start).Round(time.Second))
	code := m.Run()
	_ = os.RemoveAll(dir)
	os.Exit(code)
}

// helm runs the helm binary with an empty home of its own.
func helm(t *testing.T, args ...string) (string, error) {
	t.Helper()
	cmd := exec.Command(helmBin, args...)
	home := t.TempDir()
	cmd.Env = append(os.Environ(), "HELM_CACHE_HOME="+home+"/cache", "HELM_CONFIG_HOME="+home+"/config", "HELM_DATA_HOME="+home+"/data")
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	if err != nil {
		return stdout.String(), fmt.Errorf("helm %s: %v: %s", strings.Join(args, " "), err, stderr.String())
	}
	return stdout.String(), nil
}

// rendered is the chart's output, decoded.
type rendered struct {
	deployment     *appsv1.Deployment
	service        *corev1.Service
	serviceAccount *corev1.ServiceAccount
	pvcs           []*corev1.PersistentVolumeClaim
	configMaps     []*corev1.ConfigMap
	pdb            *policyv1.PodDisruptionBudget
	serviceMonitor *monitoringv1.ServiceMonitor
	networkPolicy  *networkingv1.NetworkPolicy
	kinds          []string
}

// render runs helm template with args (values files, --set) and decodes
// every manifest strictly.
func render(t *testing.T, args ...string) *rendered {
	t.Helper()
	out, err := helm(t, append([]string{"template", release, chartDir, "--namespace", namespace}, args...)...)
	if err != nil {
		t.Fatal(err)
	}
	return decodeAll(t, out)
}

// decodeAll decodes a multi-document manifest strictly into the API types.
func decodeAll(t *testing.T, out string) *rendered {
	t.Helper()
	r, err := decode(out)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// decode is decodeAll, returning the first problem.
func decode(out string) (*rendered, error) {
	r := &rendered{}
	for i, doc := range regexp.MustCompile(`(?m)^---\s*$`).Split(out, -1) {
		if strings.TrimSpace(stripComments(doc)) == "" {
			continue
		}
		var meta struct {
			APIVersion string `json:"apiVersion"`
			Kind       string `json:"kind"`
		}
		if err := yaml.Unmarshal([]byte(doc), &meta); err != nil {
			return nil, fmt.Errorf("document %d is not YAML: %v\n%s", i, err, doc)
		}
		var obj any
		switch meta.APIVersion + " " + meta.Kind {
		case "apps/v1 Deployment":
			r.deployment = &appsv1.Deployment{}
			obj = r.deployment
		case "v1 Service":
			r.service = &corev1.Service{}
			obj = r.service
		case "v1 ServiceAccount":
			r.serviceAccount = &corev1.ServiceAccount{}
			obj = r.serviceAccount
		case "v1 PersistentVolumeClaim":
			pvc := &corev1.PersistentVolumeClaim{}
			r.pvcs = append(r.pvcs, pvc)
			obj = pvc
		case "v1 ConfigMap":
			cm := &corev1.ConfigMap{}
			r.configMaps = append(r.configMaps, cm)
			obj = cm
		case "policy/v1 PodDisruptionBudget":
			r.pdb = &policyv1.PodDisruptionBudget{}
			obj = r.pdb
		case "monitoring.coreos.com/v1 ServiceMonitor":
			r.serviceMonitor = &monitoringv1.ServiceMonitor{}
			obj = r.serviceMonitor
		case "networking.k8s.io/v1 NetworkPolicy":
			r.networkPolicy = &networkingv1.NetworkPolicy{}
			obj = r.networkPolicy
		default:
			return nil, fmt.Errorf("document %d: no API type for %s %s (add it to the test)\n%s", i, meta.APIVersion, meta.Kind, doc)
		}
		// Unknown fields, wrong types and duplicate keys are errors.
		if err := yaml.UnmarshalStrict([]byte(doc), obj); err != nil {
			return nil, fmt.Errorf("%s %s does not decode strictly: %v\n%s", meta.APIVersion, meta.Kind, err, doc)
		}
		r.kinds = append(r.kinds, meta.Kind)
	}
	if r.deployment == nil {
		return nil, fmt.Errorf("no Deployment rendered:\n%s", out)
	}
	return r, nil
}

// stripComments drops the "# Source: …" lines helm puts in each document.
func stripComments(doc string) string {
	var keep []string
	for _, l := range strings.Split(doc, "\n") {
		if !strings.HasPrefix(strings.TrimSpace(l), "#") {
			keep = append(keep, l)
		}
	}
	return strings.Join(keep, "\n")
}

// env returns the bot container's environment variable name, or nil.
func env(c corev1.Container, name string) *corev1.EnvVar {
	for i := range c.Env {
		if c.Env[i].Name == name {
			return &c.Env[i]
		}
	}
	return nil
}

// checkCommon checks what both deployments promise.
func checkCommon(t *testing.T, r *rendered) corev1.Container {
	t.Helper()
	pod := r.deployment.Spec.Template.Spec
	if len(pod.Containers) != 1 {
		t.Fatalf("got %d containers, want 1", len(pod.Containers))
	}
	c := pod.Containers[0]

	// Tokens and cloud credentials from an existing Secret, never values.
	if len(c.EnvFrom) != 1 || c.EnvFrom[0].SecretRef == nil || c.EnvFrom[0].SecretRef.Name != "geminidb-patch-bot" {
		t.Errorf("envFrom = %+v, want the existing Secret geminidb-patch-bot", c.EnvFrom)
	}
	for _, e := range c.Env {
		if regexp.MustCompile(`TOKEN|SECRET|PASSWORD`).MatchString(e.Name) && e.Value != "" {
			t.Errorf("env %s has a literal value; secrets come from the Secret", e.Name)
		}
	}

	// Probes.
	if p := c.LivenessProbe; p == nil || p.HTTPGet == nil || p.HTTPGet.Path != "/healthz" || p.HTTPGet.Port.String() != "http" {
		t.Errorf("livenessProbe = %+v, want GET /healthz on port http", p)
	}
	if p := c.ReadinessProbe; p == nil || p.HTTPGet == nil || p.HTTPGet.Path != "/readyz" || p.HTTPGet.Port.String() != "http" {
		t.Errorf("readinessProbe = %+v, want GET /readyz on port http", p)
	}
	if len(c.Ports) != 1 || c.Ports[0].Name != "http" || c.Ports[0].ContainerPort != 8080 {
		t.Errorf("ports = %+v, want http 8080", c.Ports)
	}
	if e := env(c, "BOT_HTTP_ADDR"); e == nil || e.Value != ":8080" {
		t.Errorf("BOT_HTTP_ADDR = %+v, want :8080 (the container port)", e)
	}

	// The grace period outlasts the bot's own shutdown timeout.
	e := env(c, "BOT_SHUTDOWN_TIMEOUT")
	if e == nil {
		t.Fatal("no BOT_SHUTDOWN_TIMEOUT")
	}
	shutdown, err := time.ParseDuration(e.Value)
	if err != nil {
		t.Fatalf("BOT_SHUTDOWN_TIMEOUT %q: %v", e.Value, err)
	}
	if g := pod.TerminationGracePeriodSeconds; g == nil || time.Duration(*g)*time.Second <= shutdown {
		t.Errorf("terminationGracePeriodSeconds = %v, want more than BOT_SHUTDOWN_TIMEOUT %v", g, shutdown)
	}

	// Nonroot, read-only, nothing extra.
	sc := c.SecurityContext
	if sc == nil || sc.ReadOnlyRootFilesystem == nil || !*sc.ReadOnlyRootFilesystem ||
		sc.RunAsNonRoot == nil || !*sc.RunAsNonRoot || sc.RunAsUser == nil || *sc.RunAsUser != 65532 ||
		sc.AllowPrivilegeEscalation == nil || *sc.AllowPrivilegeEscalation ||
		sc.Capabilities == nil || len(sc.Capabilities.Drop) != 1 || sc.Capabilities.Drop[0] != "ALL" {
		t.Errorf("container securityContext = %+v, want read-only root, nonroot 65532, no privilege escalation, drop ALL", sc)
	}
	psc := pod.SecurityContext
	if psc == nil || psc.FSGroup == nil || *psc.FSGroup != 65532 || psc.SeccompProfile == nil || psc.SeccompProfile.Type != corev1.SeccompProfileTypeRuntimeDefault {
		t.Errorf("pod securityContext = %+v, want fsGroup 65532 (the volume writable by the bot) and seccomp RuntimeDefault", psc)
	}
	if pod.AutomountServiceAccountToken == nil || *pod.AutomountServiceAccountToken {
		t.Error("the pod mounts a service account token; the bot does not use the Kubernetes API")
	}
	mounts := map[string]bool{}
	for _, m := range c.VolumeMounts {
		mounts[m.MountPath] = true
	}
	if !mounts["/data"] || !mounts["/tmp"] {
		t.Errorf("volume mounts %+v, want writable /data and /tmp beside the read-only root", c.VolumeMounts)
	}

	// The Service and the selector find the pods.
	labels := r.deployment.Spec.Template.Labels
	for k, v := range r.deployment.Spec.Selector.MatchLabels {
		if labels[k] != v {
			t.Errorf("the Deployment's selector %s=%s does not match its pods' labels %v", k, v, labels)
		}
	}
	if r.service == nil {
		t.Fatal("no Service")
	}
	for k, v := range r.service.Spec.Selector {
		if labels[k] != v {
			t.Errorf("the Service's selector %s=%s does not match the pods' labels", k, v)
		}
	}
	return c
}

// The defaults: bbolt, one replica, Recreate, the store on a PVC.
func TestDefaultValues(t *testing.T) {
	r := render(t)
	c := checkCommon(t, r)
	d := r.deployment
	if d.Spec.Replicas == nil || *d.Spec.Replicas != 1 {
		t.Errorf("replicas = %v, want 1", d.Spec.Replicas)
	}
	if d.Spec.Strategy.Type != appsv1.RecreateDeploymentStrategyType {
		t.Errorf("strategy = %q, want Recreate (one process holds the bbolt file)", d.Spec.Strategy.Type)
	}
	if e := env(c, "BOT_STORE"); e == nil || e.Value != "/data/geminidb-patch.db" {
		t.Errorf("BOT_STORE = %+v, want /data/geminidb-patch.db", e)
	}
	if len(r.pvcs) != 1 {
		t.Fatalf("got %d PVCs, want 1", len(r.pvcs))
	}
	var claim string
	for _, v := range d.Spec.Template.Spec.Volumes {
		if v.Name == "data" && v.PersistentVolumeClaim != nil {
			claim = v.PersistentVolumeClaim.ClaimName
		}
	}
	if claim != r.pvcs[0].Name {
		t.Errorf("the data volume uses claim %q, want the chart's PVC %q", claim, r.pvcs[0].Name)
	}
	if r.pvcs[0].Annotations["helm.sh/resource-policy"] != "keep" {
		t.Error("the store's PVC is deleted on uninstall; want helm.sh/resource-policy: keep")
	}
	if r.pdb != nil || r.serviceMonitor != nil || r.networkPolicy != nil {
		t.Errorf("got kinds %v, want no PDB, ServiceMonitor or NetworkPolicy by default", r.kinds)
	}
}

// ci/redis-values.yaml: Redis (Sentinel) from a Secret, two replicas,
// RollingUpdate with maxUnavailable 0, a PodDisruptionBudget, and the
// optional ServiceMonitor and NetworkPolicy.
func TestRedisValues(t *testing.T) {
	r := render(t, "-f", chartDir+"/ci/redis-values.yaml")
	c := checkCommon(t, r)
	d := r.deployment
	if d.Spec.Replicas == nil || *d.Spec.Replicas < 2 {
		t.Errorf("replicas = %v, want 2 or more", d.Spec.Replicas)
	}
	s := d.Spec.Strategy
	if s.Type != appsv1.RollingUpdateDeploymentStrategyType || s.RollingUpdate == nil ||
		s.RollingUpdate.MaxUnavailable == nil || s.RollingUpdate.MaxUnavailable.IntValue() != 0 {
		t.Errorf("strategy = %+v, want RollingUpdate with maxUnavailable 0", s)
	}
	e := env(c, "BOT_STORE")
	if e == nil || e.Value != "" || e.ValueFrom == nil || e.ValueFrom.SecretKeyRef == nil ||
		e.ValueFrom.SecretKeyRef.Name != "geminidb-patch-bot-redis" || e.ValueFrom.SecretKeyRef.Key != "BOT_STORE" {
		t.Errorf("BOT_STORE = %+v, want it from the Secret geminidb-patch-bot-redis, key BOT_STORE", e)
	}
	if len(r.pvcs) != 0 {
		t.Errorf("got %d PVCs, want none on Redis", len(r.pvcs))
	}
	if r.pdb == nil {
		t.Fatal("no PodDisruptionBudget")
	}
	if r.pdb.Spec.MinAvailable == nil || r.pdb.Spec.MinAvailable.IntValue() < 1 {
		t.Errorf("PDB minAvailable = %v, want at least 1", r.pdb.Spec.MinAvailable)
	}
	for k, v := range r.pdb.Spec.Selector.MatchLabels {
		if d.Spec.Template.Labels[k] != v {
			t.Errorf("the PDB's selector %s=%s does not match the pods", k, v)
		}
	}
	if r.serviceMonitor == nil || len(r.serviceMonitor.Spec.Endpoints) != 1 || r.serviceMonitor.Spec.Endpoints[0].Path != "/metrics" || r.serviceMonitor.Spec.Endpoints[0].Port != "http" {
		t.Errorf("ServiceMonitor = %+v, want one endpoint: port http, /metrics", r.serviceMonitor)
	}
	np := r.networkPolicy
	if np == nil {
		t.Fatal("no NetworkPolicy")
	}
	egressPorts := map[int]bool{}
	for _, rule := range np.Spec.Egress {
		for _, p := range rule.Ports {
			egressPorts[p.Port.IntValue()] = true
		}
	}
	for _, p := range []int{53, 443, 6379, 26379} {
		if !egressPorts[p] {
			t.Errorf("the NetworkPolicy allows egress to ports %v, want %d too", egressPorts, p)
		}
	}
}

// Every values file in ci/ renders and decodes, and helm lint --strict
// passes with the defaults and with each of them.
func TestLint(t *testing.T) {
	if _, err := helm(t, "lint", "--strict", chartDir); err != nil {
		t.Error(err)
	}
	files, err := filepath.Glob(chartDir + "/ci/*-values.yaml")
	if err != nil || len(files) == 0 {
		t.Fatalf("no ci/*-values.yaml: %v", err)
	}
	for _, f := range files {
		render(t, "-f", f)
		if _, err := helm(t, "lint", "--strict", chartDir, "-f", f); err != nil {
			t.Error(err)
		}
	}
}

// A targets file becomes a ConfigMap mounted read-only, and
// BOT_TARGETS_FILE names it.
func TestTargetsFile(t *testing.T) {
	r := render(t, "--set-string", "targets=targets: []\n")
	if len(r.configMaps) != 1 || r.configMaps[0].Data["targets.yaml"] == "" {
		t.Fatalf("ConfigMaps %+v, want one with targets.yaml", r.configMaps)
	}
	c := r.deployment.Spec.Template.Spec.Containers[0]
	if e := env(c, "BOT_TARGETS_FILE"); e == nil || e.Value != "/etc/geminidb-patch-bot/targets.yaml" {
		t.Errorf("BOT_TARGETS_FILE = %+v", e)
	}
}

// Values that would run but break something are refused, saying why.
func TestRefusedValues(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"--set", "replicaCount=2"}, "needs store.type redis"},
		{[]string{"--set", "terminationGracePeriodSeconds=30"}, "must be longer than shutdownTimeoutSeconds"},
		{[]string{"--set", "podDisruptionBudget.enabled=true"}, "needs replicaCount >= 2"},
		{[]string{"--set", "store.type=mongo"}, "store.type"},
		{[]string{"--set", "config.SLACK_BOT_TOKEN=xoxb-1"}, "config"},
		{[]string{"--set", "securityContext.readOnlyRootFilesystem=false"}, "readOnlyRootFilesystem"},
		{[]string{"--set", "replicas=2"}, "replicas"},
	} {
		_, err := helm(t, append([]string{"template", release, chartDir}, tc.args...)...)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("helm template %v: got %v, want an error naming %q", tc.args, err, tc.want)
		}
	}
}

// The strict decoding refuses what the API server would: a field the type
// does not have, a value of the wrong type.
func TestStrictDecodingRefuses(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"--set", "livenessProbe.bogusField=1"}, "bogusField"},
		{[]string{"--set", "readinessProbe.periodSeconds=often"}, "periodSeconds"},
		{[]string{"--set", "podSecurityContext.runAsUser=nobody"}, "runAsUser"},
	} {
		out, err := helm(t, append([]string{"template", release, chartDir}, tc.args...)...)
		if err != nil {
			t.Errorf("helm template %v: %v", tc.args, err)
			continue
		}
		if _, err := decode(out); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("decoding the chart rendered with %v: got %v, want an error naming %s", tc.args, err, tc.want)
		}
	}
}
