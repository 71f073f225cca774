package snapshot

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"strings"
)

// ErrVerify is wrapped by every verification failure.
var ErrVerify = errors.New("snapshot: verification failed")

// PartError is a part whose object is missing or differs from the manifest.
type PartError struct {
	Manifest string
	Part     string // the part's name
	Object   string // its object name
	Problem  string
	Err      error // the store's error for a missing object, if any
}

func (e *PartError) Error() string {
	return fmt.Sprintf("snapshot: %s: part %s (%s): %s", e.Manifest, e.Part, e.Object, e.Problem)
}

// Unwrap returns ErrVerify and the underlying store error.
func (e *PartError) Unwrap() []error {
	if e.Err != nil {
		return []error{ErrVerify, e.Err}
	}
	return []error{ErrVerify}
}

// ChainError is a broken link between a manifest and its predecessor.
type ChainError struct {
	Manifest string
	Prev     string // the predecessor's object name, as recorded or expected
	Problem  string
	Err      error
}

func (e *ChainError) Error() string {
	return fmt.Sprintf("snapshot: %s: chain link to %s: %s", e.Manifest, e.Prev, e.Problem)
}

// Unwrap returns ErrVerify and the underlying store error.
func (e *ChainError) Unwrap() []error {
	if e.Err != nil {
		return []error{ErrVerify, e.Err}
	}
	return []error{ErrVerify}
}

// PartCheck is the outcome of re-hashing one part.
type PartCheck struct {
	Name   string `json:"name"`
	Object string `json:"object"`
	Size   int64  `json:"size"`   // as read; -1 if unreadable
	SHA256 string `json:"sha256"` // as read
	OK     bool   `json:"ok"`
}

// Report is what Verify found.
type Report struct {
	Manifest       string      `json:"manifest"`
	ManifestSHA256 string      `json:"manifest_sha256"`
	SnapshotID     string      `json:"snapshot_id"`
	Seq            int64       `json:"seq"`
	Parts          []PartCheck `json:"parts"`
	// PrevOK is true when the link to the previous manifest holds (or
	// Seq is 1 and there is none).
	PrevOK bool `json:"prev_ok"`
}

// OK reports whether every check passed.
func (r Report) OK() bool {
	if !r.PrevOK {
		return false
	}
	for _, p := range r.Parts {
		if !p.OK {
			return false
		}
	}
	return true
}

// Verify re-reads the manifest named manifestName and every part it names,
// re-hashing each and checking its size, and checks the link to the
// previous manifest: that it exists, hashes to the recorded SHA-256 and is
// the manifest with the previous sequence number. Every problem is
// reported; the error joins a *PartError or *ChainError per problem, each
// wrapping ErrVerify.
func Verify(ctx context.Context, st ImmutableStore, manifestName string) (Report, error) {
	rep := Report{Manifest: manifestName}
	m, sum, err := ReadManifest(ctx, st, manifestName)
	rep.ManifestSHA256 = sum
	if err != nil {
		return rep, fmt.Errorf("snapshot: verify %s: %w", manifestName, err)
	}
	rep.SnapshotID, rep.Seq = m.SnapshotID, m.Seq
	var errs []error
	if m.ObjectName() != manifestName {
		errs = append(errs, fmt.Errorf("%w: manifest %s records sequence number %d", ErrVerify, manifestName, m.Seq))
	}
	prefix := partsPrefix + m.SnapshotID + "/"
	for _, p := range m.Parts {
		pc, err := checkPart(ctx, st, manifestName, prefix, p)
		rep.Parts = append(rep.Parts, pc)
		if err != nil {
			errs = append(errs, err)
		}
	}
	if err := checkPrev(ctx, st, manifestName, m); err != nil {
		errs = append(errs, err)
	} else {
		rep.PrevOK = true
	}
	return rep, errors.Join(errs...)
}

func checkPart(ctx context.Context, st ImmutableStore, manifest, prefix string, p PartRef) (PartCheck, error) {
	pc := PartCheck{Name: p.Name, Object: p.Object, Size: -1}
	fail := func(problem string, err error) (PartCheck, error) {
		return pc, &PartError{Manifest: manifest, Part: p.Name, Object: p.Object, Problem: problem, Err: err}
	}
	if p.Object != prefix+p.Name {
		return fail(fmt.Sprintf("object name is not %s", prefix+p.Name), nil)
	}
	rc, err := st.Get(ctx, p.Object)
	if err != nil {
		if errors.Is(err, ErrNotFound) {
			return fail("missing", err)
		}
		return fail("unreadable: "+err.Error(), err)
	}
	defer rc.Close()
	h := sha256.New()
	n, err := io.Copy(h, ctxReader{ctx, rc})
	if err != nil {
		return fail("unreadable: "+err.Error(), err)
	}
	pc.Size, pc.SHA256 = n, hex.EncodeToString(h.Sum(nil))
	var problems []string
	if n != p.Size {
		problems = append(problems, fmt.Sprintf("size %d, manifest says %d", n, p.Size))
	}
	if pc.SHA256 != p.SHA256 {
		problems = append(problems, fmt.Sprintf("sha256 %s, manifest says %s", pc.SHA256, p.SHA256))
	}
	if len(problems) > 0 {
		return fail(strings.Join(problems, "; "), nil)
	}
	pc.OK = true
	return pc, nil
}

func checkPrev(ctx context.Context, st ImmutableStore, manifest string, m Manifest) error {
	if m.Seq <= 1 {
		if m.Prev != nil {
			return &ChainError{Manifest: manifest, Prev: m.Prev.Manifest, Problem: "the first manifest must not link a predecessor"}
		}
		return nil
	}
	want := ManifestName(m.Seq - 1)
	if m.Prev == nil {
		return &ChainError{Manifest: manifest, Prev: want, Problem: "link missing"}
	}
	if m.Prev.Manifest != want {
		return &ChainError{Manifest: manifest, Prev: m.Prev.Manifest, Problem: "links " + m.Prev.Manifest + ", want " + want}
	}
	o, err := st.Stat(ctx, want)
	if err != nil {
		problem := "unreadable: " + err.Error()
		if errors.Is(err, ErrNotFound) {
			problem = "previous manifest deleted"
		}
		return &ChainError{Manifest: manifest, Prev: want, Problem: problem, Err: err}
	}
	if o.SHA256 != m.Prev.SHA256 {
		return &ChainError{Manifest: manifest, Prev: want,
			Problem: fmt.Sprintf("previous manifest replaced: sha256 %s, link says %s", o.SHA256, m.Prev.SHA256)}
	}
	return nil
}

// VerifyChain verifies every manifest in st and its parts, oldest first,
// and returns one report per manifest. It detects any deleted, replaced
// or altered snapshot except the loss of the newest, which only the audit
// event recording its manifest's SHA-256 can reveal.
func VerifyChain(ctx context.Context, st ImmutableStore) ([]Report, error) {
	names, err := Manifests(ctx, st)
	if err != nil {
		return nil, err
	}
	var (
		reps []Report
		errs []error
	)
	for _, n := range names {
		rep, err := Verify(ctx, st, n)
		reps = append(reps, rep)
		if err != nil {
			errs = append(errs, err)
		}
	}
	return reps, errors.Join(errs...)
}
