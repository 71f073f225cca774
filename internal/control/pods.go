package control

import (
	"fmt"
	"regexp"
)

// DefaultPodDataDir is where the manifests mount the installation (the
// data directory made by `countersign init`, as a Secret) in node pods.
const DefaultPodDataDir = "/var/lib/countersign"

// PodSpec says how releases run as pods (fleet/kube): which image and
// where the installation is mounted. Pods reach the queue through
// $COUNTERSIGN_NATS_URL (or, with the manifests' kafka component,
// $COUNTERSIGN_QUEUE_URL) from the manifests' Secret.
type PodSpec struct {
	// Image is the countersign image pinned by digest,
	// "registry/countersign@sha256:<64 hex>"; every release runs it (a
	// release is the image plus its arguments, flags and schema range).
	Image string
	// DataDir is the installation's mount path in the pod.
	DataDir string
}

var imageDigestRE = regexp.MustCompile(`^[^@\s]+@sha256:([0-9a-f]{64})$`)

func (p *PodSpec) validate() error {
	if !imageDigestRE.MatchString(p.Image) {
		return fmt.Errorf("control: image %q is not pinned by digest (want repo@sha256:<64 hex>): a tag can move under a release", p.Image)
	}
	if p.DataDir == "" {
		p.DataDir = DefaultPodDataDir
	}
	return nil
}

// digest is the image's SHA-256, the release's artifact digest.
func (p *PodSpec) digest() string { return imageDigestRE.FindStringSubmatch(p.Image)[1] }
