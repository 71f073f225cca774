package manifests

import (
	"regexp"
	"slices"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
)

// probePaths are the only health endpoints Countersign serves.
var probePaths = []string{"/readyz", "/healthz"}

func TestContainersAreHardened(t *testing.T) {
	for _, o := range overlays {
		t.Run(o.dir, func(t *testing.T) {
			r := render(t, o)
			if len(r.deployments) == 0 {
				t.Fatal("no Deployments")
			}
			for _, d := range r.deployments {
				spec := d.Spec.Template.Spec
				where := "Deployment " + d.Name
				checkPod(t, where, spec)
				for _, c := range spec.InitContainers {
					checkContainer(t, where+" init container "+c.Name, spec, c, false)
				}
				for _, c := range spec.Containers {
					checkContainer(t, where+" container "+c.Name, spec, c, true)
				}
			}
		})
	}
}

func checkPod(t *testing.T, where string, spec corev1.PodSpec) {
	t.Helper()
	if spec.HostNetwork || spec.HostPID || spec.HostIPC {
		t.Errorf("%s: shares a host namespace", where)
	}
	if spec.ServiceAccountName == "" || spec.ServiceAccountName == "default" {
		t.Errorf("%s: runs as ServiceAccount %q, want its component's own", where, spec.ServiceAccountName)
	}
	// Only the control plane talks to the Kubernetes API.
	wantToken := spec.ServiceAccountName == "countersign-control"
	if spec.AutomountServiceAccountToken == nil || *spec.AutomountServiceAccountToken != wantToken {
		t.Errorf("%s: automountServiceAccountToken must be set explicitly to %v", where, wantToken)
	}
	psc := spec.SecurityContext
	if psc == nil || psc.RunAsNonRoot == nil || !*psc.RunAsNonRoot || psc.RunAsUser == nil || *psc.RunAsUser == 0 {
		t.Errorf("%s: pod securityContext must set runAsNonRoot and a non-zero runAsUser", where)
	}
	if psc == nil || psc.SeccompProfile == nil || psc.SeccompProfile.Type != corev1.SeccompProfileTypeRuntimeDefault {
		t.Errorf("%s: pod seccompProfile must be RuntimeDefault", where)
	}
	for _, v := range spec.Volumes {
		if v.HostPath != nil {
			t.Errorf("%s: hostPath volume %s", where, v.Name)
		}
		if v.Secret != nil && (v.Secret.DefaultMode == nil || *v.Secret.DefaultMode&0o007 != 0) {
			t.Errorf("%s: Secret volume %s must set a defaultMode without world access", where, v.Name)
		}
		if v.Projected != nil && (v.Projected.DefaultMode == nil || *v.Projected.DefaultMode&0o007 != 0) {
			t.Errorf("%s: projected volume %s must set a defaultMode without world access", where, v.Name)
		}
	}
}

// secretishEnv matches names of values that must come from a Secret.
var secretishEnv = regexp.MustCompile(`PASSWORD|PASSPHRASE|TOKEN|SECRET|_PIN|NATS_URL|QUEUE_URL|ACCESS_KEY`)

func checkContainer(t *testing.T, where string, spec corev1.PodSpec, c corev1.Container, main bool) {
	t.Helper()
	if main {
		if c.ReadinessProbe == nil || c.LivenessProbe == nil {
			t.Errorf("%s: needs a readinessProbe and a livenessProbe", where)
		}
		for name, p := range map[string]*corev1.Probe{"readiness": c.ReadinessProbe, "liveness": c.LivenessProbe, "startup": c.StartupProbe} {
			if p == nil {
				continue
			}
			if p.HTTPGet == nil || !slices.Contains(probePaths, p.HTTPGet.Path) {
				t.Errorf("%s: %s probe must GET one of %v, got %s", where, name, probePaths, mustJSON(p.ProbeHandler))
				continue
			}
			if !hasPort(c, p.HTTPGet.Port) {
				t.Errorf("%s: %s probe port %s is not a port of the container", where, name, p.HTTPGet.Port.String())
			}
		}
	}
	for _, res := range []corev1.ResourceName{corev1.ResourceCPU, corev1.ResourceMemory} {
		req, okReq := c.Resources.Requests[res]
		lim, okLim := c.Resources.Limits[res]
		if !okReq || !okLim {
			t.Errorf("%s: needs both a request and a limit of %s", where, res)
			continue
		}
		if req.Cmp(lim) > 0 {
			t.Errorf("%s: %s request %s above its limit %s", where, res, req.String(), lim.String())
		}
	}
	sc := c.SecurityContext
	if sc == nil {
		t.Errorf("%s: no securityContext", where)
		return
	}
	for _, bad := range []struct {
		broken bool
		want   string
	}{
		{sc.RunAsNonRoot == nil || !*sc.RunAsNonRoot, "runAsNonRoot: true"},
		{sc.AllowPrivilegeEscalation == nil || *sc.AllowPrivilegeEscalation, "allowPrivilegeEscalation: false"},
		{sc.Privileged != nil && *sc.Privileged, "not privileged"},
		{sc.ReadOnlyRootFilesystem == nil || !*sc.ReadOnlyRootFilesystem, "readOnlyRootFilesystem: true"},
		{sc.Capabilities == nil || !slices.Equal(sc.Capabilities.Drop, []corev1.Capability{"ALL"}) || len(sc.Capabilities.Add) > 0,
			"capabilities: drop [ALL], add none"},
		{sc.SeccompProfile == nil || sc.SeccompProfile.Type != corev1.SeccompProfileTypeRuntimeDefault, "seccompProfile: RuntimeDefault"},
	} {
		if bad.broken {
			t.Errorf("%s: securityContext must have %s, got %s", where, bad.want, mustJSON(sc))
		}
	}
	for _, e := range c.Env {
		if secretishEnv.MatchString(e.Name) && (e.ValueFrom == nil || e.ValueFrom.SecretKeyRef == nil) {
			t.Errorf("%s: env %s must come from a Secret (secretKeyRef)", where, e.Name)
		}
	}
	// $(VAR) in a value expands only from variables defined before it.
	for i, e := range c.Env {
		for _, m := range varRefRE.FindAllStringSubmatch(e.Value, -1) {
			if !slices.ContainsFunc(c.Env[:i], func(p corev1.EnvVar) bool { return p.Name == m[1] }) {
				t.Errorf("%s: env %s=%q refers to $(%s), not defined before it", where, e.Name, e.Value, m[1])
			}
		}
	}
	for _, a := range append(slices.Clone(c.Command), c.Args...) {
		if l := strings.ToLower(a); strings.Contains(l, "passphrase") || strings.Contains(l, "password") || strings.Contains(l, "pin=") {
			t.Errorf("%s: argument %q carries a secret; secrets reach processes through the environment or files", where, a)
		}
	}
}

func hasPort(c corev1.Container, p intstr.IntOrString) bool {
	for _, cp := range c.Ports {
		if (p.Type == intstr.String && cp.Name == p.StrVal) || (p.Type == intstr.Int && cp.ContainerPort == p.IntVal) {
			return true
		}
	}
	return false
}
