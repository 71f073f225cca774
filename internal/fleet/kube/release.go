package kube

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"os"
	"regexp"
	"strconv"
	"strings"
	"unicode/utf8"

	corev1ac "k8s.io/client-go/applyconfigurations/core/v1"

	"github.com/countersign/countersign/internal/fleet"
)

// Where a release's flags are mounted in the pod.
const (
	flagsKey      = "flags.flagd.json"
	flagsVolume   = "countersign-flags"
	flagsMountDir = "/etc/countersign/flags"
	flagsPath     = flagsMountDir + "/" + flagsKey
	// maxFlagsBytes keeps a flags file within a ConfigMap (1 MiB in etcd,
	// with room for the metadata).
	maxFlagsBytes = 900 << 10
)

var hex64RE = regexp.MustCompile(`^[0-9a-f]{64}$`)

// splitDigest splits "repo@sha256:<hex>" into the repository and the hex.
func splitDigest(image string) (repo, hex string, ok bool) {
	i := strings.LastIndex(image, "@sha256:")
	if i <= 0 {
		return "", "", false
	}
	return image[:i], image[i+len("@sha256:"):], true
}

// verifyArtifact checks that rel is deployable and that its image is pinned
// to the digest the release names: the kube counterpart of fleet/local
// hashing the artifact, since the kubelet pulls by that digest.
func verifyArtifact(rel fleet.Release) error {
	if err := rel.Validate(); err != nil {
		return err
	}
	repo, got, ok := splitDigest(rel.Artifact)
	if !ok || repo == "" {
		return fmt.Errorf("%w release %s: image %q must be pinned by digest (repo@sha256:<hex>)", fleet.ErrInvalid, rel.ID, rel.Artifact)
	}
	if !hex64RE.MatchString(got) {
		return fmt.Errorf("%w release %s: image %q: digest must be 64 lowercase hex digits", fleet.ErrInvalid, rel.ID, rel.Artifact)
	}
	if got != rel.SHA256 {
		return &fleet.ChecksumError{Artifact: rel.Artifact, Want: rel.SHA256, Got: got}
	}
	return nil
}

// argData is what a release's argument templates may refer to. Unlike
// fleet/local there is no .Replica: a Deployment's pods are not numbered.
type argData struct {
	Listen    string // 0.0.0.0:7300
	Port      int
	Pool      string
	Instance  string // $(POD_NAME), expanded by the kubelet
	Release   string
	DataDir   string
	FlagsFile string // the mounted flags file, or empty
}

// releaseEnv is the container's environment: POD_NAME from the downward API
// (so $(POD_NAME) expands in later values and in arguments), the variables
// fleet/local sets, then rel.Env. A release variable of the same name
// replaces the package's in place: the list is keyed by name.
func releaseEnv(pool string, rel fleet.Release, flagsFile string) ([]*corev1ac.EnvVarApplyConfiguration, error) {
	env := []*corev1ac.EnvVarApplyConfiguration{
		corev1ac.EnvVar().WithName("POD_NAME").WithValueFrom(corev1ac.EnvVarSource().
			WithFieldRef(corev1ac.ObjectFieldSelector().WithFieldPath("metadata.name"))),
		corev1ac.EnvVar().WithName("COUNTERSIGN_RELEASE").WithValue(rel.ID),
		corev1ac.EnvVar().WithName("COUNTERSIGN_INSTANCE").WithValue("$(POD_NAME)"),
		corev1ac.EnvVar().WithName("COUNTERSIGN_POOL").WithValue(pool),
		corev1ac.EnvVar().WithName("COUNTERSIGN_LISTEN").WithValue(listenAddr()),
	}
	if flagsFile != "" {
		env = append(env, corev1ac.EnvVar().WithName("COUNTERSIGN_FLAGS_FILE").WithValue(flagsFile))
	}
	index := map[string]int{}
	for i, e := range env {
		index[*e.Name] = i
	}
	for _, kv := range rel.Env {
		k, v, ok := strings.Cut(kv, "=")
		if !ok || k == "" {
			return nil, fmt.Errorf("%w release %s: environment entry %q is not KEY=value", fleet.ErrInvalid, rel.ID, kv)
		}
		e := corev1ac.EnvVar().WithName(k).WithValue(v)
		if i, dup := index[k]; dup {
			env[i] = e
			continue
		}
		index[k] = len(env)
		env = append(env, e)
	}
	return env, nil
}

func listenAddr() string { return "0.0.0.0:" + strconv.Itoa(Port) }

// flagsConfigMap is a release's flags file as its ConfigMap.
type flagsConfigMap struct {
	name   string
	data   string
	sha256 string // hex of data
}

// flagsConfigMapName is "countersign-flags-<release id>", the id lowercased
// with every character outside [a-z0-9-] turned into "-".
func flagsConfigMapName(id string) string {
	var b strings.Builder
	for _, r := range strings.ToLower(id) {
		if r >= 'a' && r <= 'z' || r >= '0' && r <= '9' || r == '-' {
			b.WriteRune(r)
		} else {
			b.WriteByte('-')
		}
	}
	// A name must end in an alphanumeric and fit 253 characters.
	name := "countersign-flags-" + b.String()
	if len(name) > 253 {
		name = name[:253]
	}
	return strings.TrimRight(name, "-")
}

// readFlags reads rel.FlagsFile, or returns nil when the release has none.
func readFlags(rel fleet.Release) (*flagsConfigMap, error) {
	if rel.FlagsFile == "" {
		return nil, nil
	}
	fh, err := os.Open(rel.FlagsFile)
	if err != nil {
		return nil, fmt.Errorf("fleet/kube: flags of %s: %w", rel.ID, err)
	}
	defer fh.Close()
	b, err := io.ReadAll(io.LimitReader(fh, maxFlagsBytes+1))
	if err != nil {
		return nil, fmt.Errorf("fleet/kube: flags of %s: %w", rel.ID, err)
	}
	switch {
	case len(b) > maxFlagsBytes:
		return nil, fmt.Errorf("%w release %s: flags file %s is larger than %d bytes, too large for a ConfigMap", fleet.ErrInvalid, rel.ID, rel.FlagsFile, maxFlagsBytes)
	case !utf8.Valid(b):
		return nil, fmt.Errorf("%w release %s: flags file %s is not UTF-8", fleet.ErrInvalid, rel.ID, rel.FlagsFile)
	}
	return &flagsConfigMap{name: flagsConfigMapName(rel.ID), data: string(b), sha256: sha256Hex(b)}, nil
}

func sha256Hex(b []byte) string {
	h := sha256.Sum256(b)
	return hex.EncodeToString(h[:])
}

// releaseTemplate is the pod template, as fields this package owns, that
// runs rel in pool as revision number revision.
func (f *Fleet) releaseTemplate(pool string, rel fleet.Release, flags *flagsConfigMap, revision int) (*corev1ac.PodTemplateSpecApplyConfiguration, error) {
	mounted := ""
	if flags != nil {
		mounted = flagsPath
	}
	args, err := fleet.RenderArgs(rel.Args, f.cfg.ListenArgs, argData{
		Listen: listenAddr(), Port: Port, Pool: pool, Instance: "$(POD_NAME)", Release: rel.ID,
		DataDir: f.cfg.DataDir, FlagsFile: mounted,
	})
	if err != nil {
		return nil, err
	}
	env, err := releaseEnv(pool, rel, mounted)
	if err != nil {
		return nil, err
	}
	c := corev1ac.Container().WithName(containerName).WithImage(rel.Artifact).WithArgs(args...).WithEnv(env...)
	spec := corev1ac.PodSpec()
	if flags != nil {
		c.WithVolumeMounts(corev1ac.VolumeMount().WithName(flagsVolume).WithMountPath(flagsMountDir).WithReadOnly(true))
		spec.WithVolumes(corev1ac.Volume().WithName(flagsVolume).
			WithConfigMap(corev1ac.ConfigMapVolumeSource().WithName(flags.name)))
	}
	spec.WithContainers(c)
	ann := releaseAnnotations(rel, flags)
	ann[annRevision] = strconv.Itoa(revision)
	t := corev1ac.PodTemplateSpec().WithAnnotations(ann).WithSpec(spec)
	if f.cfg.Customize != nil {
		if err := f.cfg.Customize(pool, rel.Clone(), t); err != nil {
			return nil, fmt.Errorf("fleet/kube: customize the template of %s for %s: %w", rel.ID, pool, err)
		}
	}
	return t, nil
}
