package auditlog

import (
	"bytes"
	"crypto"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"strconv"
	"strings"

	"golang.org/x/mod/sumdb/note"
	"golang.org/x/mod/sumdb/tlog"
)

// Sentinel errors. Typed errors below unwrap to them.
var (
	// ErrVerify is returned when the log, a proof or a checkpoint fails
	// verification.
	ErrVerify = errors.New("auditlog: verification failed")
	// ErrFork is returned when the store's tree is not a continuation of
	// the checkpoints this node has signed.
	ErrFork = errors.New("auditlog: audit log fork")
	// ErrGap is returned when the store is missing an audit event.
	ErrGap = errors.New("auditlog: audit event missing")
	// ErrNoCheckpoint is returned when no checkpoint has been signed yet or
	// the latest does not cover a requested index.
	ErrNoCheckpoint = errors.New("auditlog: no checkpoint covers the request")
)

// Checkpoint is a parsed C2SP tlog-checkpoint body.
type Checkpoint struct {
	Origin string
	Size   int64
	Hash   tlog.Hash
	// Note is the full signed note (body, blank line, signatures) when the
	// checkpoint was opened from one.
	Note []byte
}

// Text is the checkpoint body: origin, size and base64 root hash lines.
func (c Checkpoint) Text() string {
	return fmt.Sprintf("%s\n%d\n%s\n", c.Origin, c.Size, base64.StdEncoding.EncodeToString(c.Hash[:]))
}

// ParseCheckpoint parses a checkpoint body (the note text, without
// signatures). Extension lines after the root hash are allowed and ignored.
func ParseCheckpoint(text string) (Checkpoint, error) {
	lines := strings.SplitAfter(text, "\n")
	if len(lines) < 4 || !strings.HasSuffix(text, "\n") {
		return Checkpoint{}, fmt.Errorf("%w: checkpoint body has fewer than 3 lines", ErrVerify)
	}
	origin := strings.TrimSuffix(lines[0], "\n")
	if origin == "" {
		return Checkpoint{}, fmt.Errorf("%w: checkpoint origin line is empty", ErrVerify)
	}
	sizeStr := strings.TrimSuffix(lines[1], "\n")
	size, err := strconv.ParseInt(sizeStr, 10, 64)
	if err != nil || size < 0 || strconv.FormatInt(size, 10) != sizeStr {
		return Checkpoint{}, fmt.Errorf("%w: checkpoint size %q is not a canonical decimal", ErrVerify, sizeStr)
	}
	raw, err := base64.StdEncoding.DecodeString(strings.TrimSuffix(lines[2], "\n"))
	if err != nil || len(raw) != tlog.HashSize {
		return Checkpoint{}, fmt.Errorf("%w: checkpoint root hash %q is not 32 bytes of base64", ErrVerify, strings.TrimSpace(lines[2]))
	}
	c := Checkpoint{Origin: origin, Size: size}
	copy(c.Hash[:], raw)
	return c, nil
}

// OpenCheckpoint verifies a signed checkpoint note with the log's verifier
// key (note format "<name>+<hash>+<key>") and parses it. The origin line
// must equal the key name.
func OpenCheckpoint(msg []byte, verifierKey string) (Checkpoint, error) {
	v, err := note.NewVerifier(strings.TrimSpace(verifierKey))
	if err != nil {
		return Checkpoint{}, fmt.Errorf("auditlog: log verifier key: %w", err)
	}
	n, err := note.Open(msg, note.VerifierList(v))
	if err != nil {
		return Checkpoint{}, fmt.Errorf("%w: checkpoint signature: %w", ErrVerify, err)
	}
	c, err := ParseCheckpoint(n.Text)
	if err != nil {
		return Checkpoint{}, err
	}
	if c.Origin != v.Name() {
		return Checkpoint{}, fmt.Errorf("%w: checkpoint origin %q is not the log key's name %q", ErrVerify, c.Origin, v.Name())
	}
	c.Note = bytes.Clone(msg)
	return c, nil
}

// parseUnverified parses a signed note's body without checking signatures
// (used for the node's own history, which it wrote itself).
func parseUnverified(msg []byte) (Checkpoint, error) {
	text, _, ok := bytes.Cut(msg, []byte("\n\n"))
	if !ok {
		return Checkpoint{}, fmt.Errorf("%w: note has no signature block", ErrVerify)
	}
	c, err := ParseCheckpoint(string(text) + "\n")
	if err != nil {
		return Checkpoint{}, err
	}
	c.Note = bytes.Clone(msg)
	return c, nil
}

// signCheckpoint signs c's body with s.
func signCheckpoint(c Checkpoint, s note.Signer) ([]byte, error) {
	msg, err := note.Sign(&note.Note{Text: c.Text()}, s)
	if err != nil {
		return nil, fmt.Errorf("auditlog: sign checkpoint %d: %w", c.Size, err)
	}
	return msg, nil
}

// noteSigner is a note.Signer backed by a crypto.Signer holding an Ed25519
// key, so the log key can live in any key provider (soft file, HSM).
type noteSigner struct {
	name string
	hash uint32
	s    crypto.Signer
}

func (n *noteSigner) Name() string    { return n.name }
func (n *noteSigner) KeyHash() uint32 { return n.hash }
func (n *noteSigner) Sign(msg []byte) ([]byte, error) {
	sig, err := n.s.Sign(rand.Reader, msg, crypto.Hash(0))
	if err != nil {
		return nil, fmt.Errorf("auditlog: log key sign: %w", err)
	}
	return sig, nil
}

// NewNoteSigner returns a signed-note signer named origin for s, which must
// hold an Ed25519 key. origin is the checkpoint origin line, e.g.
// "countersign.dev/<installation-id>". The log key must be distinct from
// every document-signing key.
func NewNoteSigner(origin string, s crypto.Signer) (note.Signer, error) {
	pub, ok := s.Public().(ed25519.PublicKey)
	if !ok {
		return nil, fmt.Errorf("auditlog: log key must be Ed25519, got %T", s.Public())
	}
	vkey, err := VerifierKey(origin, pub)
	if err != nil {
		return nil, err
	}
	v, err := note.NewVerifier(vkey)
	if err != nil {
		return nil, fmt.Errorf("auditlog: log key: %w", err)
	}
	return &noteSigner{name: origin, hash: v.KeyHash(), s: s}, nil
}

// VerifierKey encodes pub as a signed-note verifier key
// ("<origin>+<hash>+<base64 key>") that `countersign audit verify --vkey`
// and any C2SP checkpoint client accept.
func VerifierKey(origin string, pub ed25519.PublicKey) (string, error) {
	k, err := note.NewEd25519VerifierKey(origin, pub)
	if err != nil {
		return "", fmt.Errorf("auditlog: verifier key for %q: %w", origin, err)
	}
	return k, nil
}
