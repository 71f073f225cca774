package control

import (
	"errors"
	"fmt"
	"regexp"
)

// DefaultPodDataDir is where the manifests mount the installation (the
// data directory made by `countersign init`, as a Secret) in node pods.
const DefaultPodDataDir = "/var/lib/countersign"

// PodSpec says how releases run as pods (fleet/kube): which image, where
// the installation is mounted, and how pods reach the queue.
type PodSpec struct {
	// Image is the countersign image pinned by digest,
	// "registry/countersign@sha256:<64 hex>"; every release runs it (a
	// release is the image plus its arguments, flags and schema range).
	Image string
	// DataDir is the installation's mount path in the pod.
	DataDir string
	// QueueURL is the NATS JetStream URL as pods reach it (may differ from
	// the control plane's Config.QueueURL, e.g. a Service name).
	QueueURL string
}

var imageDigestRE = regexp.MustCompile(`^[^@\s]+@sha256:([0-9a-f]{64})$`)

func (p *PodSpec) validate() error {
	if !imageDigestRE.MatchString(p.Image) {
		return fmt.Errorf("control: image %q is not pinned by digest (want repo@sha256:<64 hex>): a tag can move under a release", p.Image)
	}
	if p.DataDir == "" {
		p.DataDir = DefaultPodDataDir
	}
	if p.QueueURL == "" {
		return errors.New("control: the pods' queue URL is required")
	}
	return nil
}

// digest is the image's SHA-256, the release's artifact digest.
func (p *PodSpec) digest() string { return imageDigestRE.FindStringSubmatch(p.Image)[1] }
