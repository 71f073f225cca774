package snapshot

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
)

// Sentinel errors of immutable stores.
var (
	// ErrExists is returned by Put for a name that is already taken; the
	// existing object is left untouched.
	ErrExists = errors.New("snapshot: object already exists")
	// ErrNotFound is returned for a name with no object.
	ErrNotFound = errors.New("snapshot: object not found")
	// ErrInvalidName is returned for a malformed object name.
	ErrInvalidName = errors.New("snapshot: invalid object name")
)

// Object describes a stored object. SHA256 is lower-case hex.
type Object struct {
	Name   string `json:"name"`
	Size   int64  `json:"size"`
	SHA256 string `json:"sha256"`
}

// ImmutableStore is write-once object storage. The local default is
// WriteOnceDir; an S3 Object Lock backend (compliance mode, conditional
// writes with If-None-Match: *) fits the same interface.
type ImmutableStore interface {
	// Put stores r's bytes under name and returns the object's size and
	// SHA-256. It refuses an existing name with an error wrapping ErrExists
	// and never overwrites or truncates it. If r fails, nothing is stored.
	Put(ctx context.Context, name string, r io.Reader) (Object, error)
	// Get opens an object; ErrNotFound if there is none.
	Get(ctx context.Context, name string) (io.ReadCloser, error)
	// Stat reports an object's size and SHA-256 (computed by reading it
	// where the backend does not keep a digest); ErrNotFound if none.
	Stat(ctx context.Context, name string) (Object, error)
	// List returns the names of the objects whose name starts with
	// prefix, sorted.
	List(ctx context.Context, prefix string) ([]string, error)
}

// CheckName validates an object name: slash-separated segments of
// [A-Za-z0-9._-], none empty, none starting with a dot (which rules out
// "." and ".." and leaves dot-names to backends for temporary files), at
// most 512 bytes.
func CheckName(name string) error {
	if name == "" || len(name) > 512 {
		return fmt.Errorf("%w: %q", ErrInvalidName, name)
	}
	for seg := range strings.SplitSeq(name, "/") {
		if seg == "" || seg[0] == '.' {
			return fmt.Errorf("%w: %q", ErrInvalidName, name)
		}
		for _, c := range seg {
			ok := c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '.' || c == '_' || c == '-'
			if !ok {
				return fmt.Errorf("%w: %q (character %q)", ErrInvalidName, name, c)
			}
		}
	}
	return nil
}

// ctxReader fails reads once ctx is done, so a long Put can be cancelled.
type ctxReader struct {
	ctx context.Context
	r   io.Reader
}

func (c ctxReader) Read(p []byte) (int, error) {
	if err := c.ctx.Err(); err != nil {
		return 0, err
	}
	return c.r.Read(p)
}
