package notify

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
)

// FileConfig configures the file channel, for air-gapped sites: each
// delivery is written once, as <Dir>/<incident>/<delivery-id>.json (the
// WebhookPayload), and a person carries it on.
type FileConfig struct {
	Name string
	Dir  string
}

type fileChannel struct{ cfg FileConfig }

// NewFile returns the file channel.
func NewFile(cfg FileConfig) (Channel, error) {
	if cfg.Name == "" || cfg.Dir == "" {
		return nil, fmt.Errorf("%w: file channel needs a name and a dir", ErrConfig)
	}
	return &fileChannel{cfg: cfg}, nil
}

func (f *fileChannel) Name() string { return f.cfg.Name }
func (f *fileChannel) Kind() string { return "file" }

var safeName = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$`)

// Deliver writes the notice once. The file appears whole or not at all
// (written to a temporary file, synced, then hard-linked into place, which
// fails if the name exists); a repeat of the same delivery with the same
// digest is a Duplicate, with a different digest ErrDeliveryConflict.
func (f *fileChannel) Deliver(ctx context.Context, d Delivery) (Receipt, error) {
	n := d.Notice
	if !safeName.MatchString(n.Incident) || !safeName.MatchString(d.ID) {
		return Receipt{}, &PermanentError{Err: fmt.Errorf("file %s: incident %q or delivery id %q is not a safe file name", f.cfg.Name, n.Incident, d.ID)}
	}
	dir := filepath.Join(f.cfg.Dir, n.Incident)
	if err := os.MkdirAll(dir, 0o750); err != nil {
		return Receipt{}, fmt.Errorf("file %s: %w", f.cfg.Name, err)
	}
	final := filepath.Join(dir, d.ID+".json")
	if r, done, err := f.existing(final, n); done {
		return r, err
	}
	body, err := json.MarshalIndent(WebhookPayload{Type: "countersign.notice", DeliveryID: d.ID, Incident: n.Incident,
		Phase: n.Phase, PhaseName: n.Phase.Name(), Tenant: n.Tenant, Revision: n.Revision, Subject: n.Subject,
		Body: n.Body, Digest: n.Digest, NextUpdateAt: n.NextUpdateAt, SentAt: d.SentAt.UTC()}, "", "  ")
	if err != nil {
		return Receipt{}, err
	}
	tmp, err := os.CreateTemp(dir, ".tmp-*")
	if err != nil {
		return Receipt{}, fmt.Errorf("file %s: %w", f.cfg.Name, err)
	}
	defer os.Remove(tmp.Name())
	_, err = tmp.Write(append(body, '\n'))
	if err == nil {
		err = tmp.Sync()
	}
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Chmod(tmp.Name(), 0o440)
	}
	if err != nil {
		return Receipt{}, fmt.Errorf("file %s: %w", f.cfg.Name, err)
	}
	if err := os.Link(tmp.Name(), final); err != nil {
		if errors.Is(err, fs.ErrExist) { // a concurrent delivery won
			if r, done, err := f.existing(final, n); done {
				return r, err
			}
		}
		return Receipt{}, fmt.Errorf("file %s: %w", f.cfg.Name, err)
	}
	if d, err := os.Open(dir); err == nil {
		d.Sync()
		d.Close()
	}
	return Receipt{Attempts: 1, Detail: final}, nil
}

// existing checks a delivery already on disk; done is false when there is none.
func (f *fileChannel) existing(path string, n Notice) (Receipt, bool, error) {
	b, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return Receipt{}, false, nil
	}
	if err != nil {
		return Receipt{}, true, fmt.Errorf("file %s: %w", f.cfg.Name, err)
	}
	var prev WebhookPayload
	if err := json.NewDecoder(bytes.NewReader(b)).Decode(&prev); err != nil {
		return Receipt{}, true, fmt.Errorf("file %s: %s: %w", f.cfg.Name, path, err)
	}
	if prev.Digest != n.Digest {
		return Receipt{}, true, &PermanentError{Err: fmt.Errorf("file %s: %w: %s holds %s, notice is %s",
			f.cfg.Name, ErrDeliveryConflict, path, prev.Digest, n.Digest)}
	}
	return Receipt{Attempts: 1, Duplicate: true, Detail: path}, true, nil
}
