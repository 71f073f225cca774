package kube

import (
	"encoding/json"
	"fmt"
	"strconv"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"

	"github.com/countersign/countersign/internal/fleet"
)

// Names of the contract (the manifests, the gateway and the control plane
// agree on them).
const (
	labelPool     = "countersign.dev/pool"
	containerName = "node"

	// Pod template: which release a ReplicaSet runs.
	annRelease     = "countersign.dev/release"
	annSchemaMin   = "countersign.dev/schema-min"
	annSchemaMax   = "countersign.dev/schema-max"
	annArtifact    = "countersign.dev/artifact-sha256"
	annFlagsCM     = "countersign.dev/flags-configmap"
	annFlagsSHA    = "countersign.dev/flags-sha256" // digest of the ConfigMap's data the template was made with
	annReleaseSpec = "countersign.dev/release-spec" // JSON releaseSpec: what the pod spec cannot give back
	annRevision    = "countersign.dev/revision"     // the revision number this template was applied as
	annRollbackOf  = "countersign.dev/rollback-of"

	// ReplicaSet metadata.
	annKnownGood      = "countersign.dev/known-good"
	annKnownGoodCause = "countersign.dev/known-good-cause"
	annFailed         = "countersign.dev/failed"
	annFailedReason   = "countersign.dev/failed-reason"

	// Metadata of every object written: why.
	annIncident    = "countersign.dev/incident"
	annRunID       = "countersign.dev/run-id"
	annStep        = "countersign.dev/step"
	annActor       = "countersign.dev/actor"
	annChangeCause = "kubernetes.io/change-cause"

	// Kept by the deployment controller.
	annK8sRevision = "deployment.kubernetes.io/revision"
	labelHash      = "pod-template-hash"
)

// causeKeys are the metadata annotations a write replaces as a whole: a
// cause field that is empty now is removed, not left from an earlier cause.
var causeKeys = []string{annIncident, annRunID, annStep, annActor, annChangeCause}

// causeAnnotations returns the metadata annotations recording why a change
// is made: the non-empty fields of c and a kubernetes.io/change-cause that
// says what and why in one line.
func causeAnnotations(c fleet.Cause, what string) map[string]string {
	out := map[string]string{annChangeCause: changeCause(c, what)}
	for k, v := range map[string]string{annIncident: c.Incident, annRunID: c.RunID, annStep: c.Step, annActor: c.Actor} {
		if v != "" {
			out[k] = v
		}
	}
	return out
}

// changeCause renders "countersign: <what> (incident I, run R, step S, by A)".
func changeCause(c fleet.Cause, what string) string {
	var parts []string
	for _, p := range [][2]string{{"incident ", c.Incident}, {"run ", c.RunID}, {"step ", c.Step}, {"by ", c.Actor}} {
		if p[1] != "" {
			parts = append(parts, p[0]+p[1])
		}
	}
	s := "countersign: " + what
	if len(parts) > 0 {
		s += " (" + strings.Join(parts, ", ") + ")"
	}
	return s
}

// causeJSON is the value of countersign.dev/known-good-cause.
func causeJSON(c fleet.Cause) string {
	b, _ := json.Marshal(c) // a struct of strings always encodes
	return string(b)
}

// releaseSpec holds the parts of a release the pod spec cannot give back
// exactly: argument templates before rendering, the release's own
// environment (apart from the variables this package adds), the flags file
// path on the control machine, and labels.
type releaseSpec struct {
	Args      []string          `json:"args,omitempty"`
	Env       []string          `json:"env,omitempty"`
	FlagsFile string            `json:"flags_file,omitempty"`
	Labels    map[string]string `json:"labels,omitempty"`
}

// releaseAnnotations are the pod template annotations naming rel.
func releaseAnnotations(rel fleet.Release, flags *flagsConfigMap) map[string]string {
	spec, _ := json.Marshal(releaseSpec{Args: rel.Args, Env: rel.Env, FlagsFile: rel.FlagsFile, Labels: rel.Labels})
	a := map[string]string{
		annRelease:     rel.ID,
		annSchemaMin:   strconv.Itoa(rel.SchemaMin),
		annSchemaMax:   strconv.Itoa(rel.SchemaMax),
		annArtifact:    rel.SHA256,
		annReleaseSpec: string(spec),
	}
	if flags != nil {
		a[annFlagsCM] = flags.name
		a[annFlagsSHA] = flags.sha256
	}
	return a
}

// releaseFromTemplate decodes the release a pod template runs. A template
// this package did not write (the manifests' first revision) gives what it
// can: the image, its digest if pinned, the container's arguments and
// literal environment.
func releaseFromTemplate(t *corev1.PodTemplateSpec) fleet.Release {
	a := t.Annotations
	rel := fleet.Release{ID: a[annRelease], SHA256: a[annArtifact]}
	rel.SchemaMin, _ = strconv.Atoi(a[annSchemaMin])
	rel.SchemaMax, _ = strconv.Atoi(a[annSchemaMax])
	c := nodeContainer(&t.Spec)
	if c != nil {
		rel.Artifact = c.Image
	}
	if rel.SHA256 == "" {
		if _, hex, ok := splitDigest(rel.Artifact); ok {
			rel.SHA256 = hex
		}
	}
	var spec releaseSpec
	if s, ok := a[annReleaseSpec]; ok && json.Unmarshal([]byte(s), &spec) == nil {
		rel.Args, rel.Env, rel.FlagsFile, rel.Labels = spec.Args, spec.Env, spec.FlagsFile, spec.Labels
		return rel
	}
	if c != nil {
		rel.Args = append([]string(nil), c.Args...)
		for _, e := range c.Env {
			if e.ValueFrom == nil {
				rel.Env = append(rel.Env, e.Name+"="+e.Value)
			}
		}
	}
	return rel
}

func nodeContainer(s *corev1.PodSpec) *corev1.Container {
	for i := range s.Containers {
		if s.Containers[i].Name == containerName {
			return &s.Containers[i]
		}
	}
	return nil
}

// intAnnotation returns the integer value of an annotation, 0 if absent or
// malformed.
func intAnnotation(a map[string]string, key string) int {
	n, err := strconv.Atoi(a[key])
	if err != nil {
		return 0
	}
	return n
}

// timeAnnotation parses an RFC 3339 annotation; ok is whether it is set.
func timeAnnotation(a map[string]string, key string) (t time.Time, ok bool) {
	v, ok := a[key]
	if !ok {
		return time.Time{}, false
	}
	t, _ = time.Parse(time.RFC3339Nano, v) // a hand-written mark still counts; its time is then zero
	return t, true
}

// mergePatchAnnotations is a JSON merge patch setting annotations on the
// object with that UID only (the UID is a precondition).
func mergePatchAnnotations(uid string, ann map[string]string) []byte {
	b, err := json.Marshal(map[string]any{"metadata": map[string]any{"uid": uid, "annotations": ann}})
	if err != nil {
		panic(fmt.Sprintf("fleet/kube: encode patch: %v", err)) // maps of strings always encode
	}
	return b
}
