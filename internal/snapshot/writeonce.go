package snapshot

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
)

// WriteOnceDir is an ImmutableStore in a local directory, the embedded
// default.
//
// Put writes to a temporary file in the destination directory, fsyncs it,
// makes it read-only (0444) and then publishes it with link(2), which fails
// with EEXIST when the name is taken; it then fsyncs the directory. The
// refusal to overwrite therefore comes from this code path, not from file
// modes: root (and any process of the owner that chmods the file) ignores
// 0444, and nothing here ever opens a published name for writing,
// truncates it or renames over it. The 0444 mode only guards against other
// tools' accidents. A local directory cannot stop an operator with shell
// access from deleting files; the manifest chain (Verify) detects that, and
// an S3 Object Lock backend prevents it.
//
// The directory must be on a file system with hard links (any local POSIX
// one). Temporary files start with a dot; CheckName keeps every object name
// segment from doing so, and List skips them.
type WriteOnceDir struct {
	root string
}

var _ ImmutableStore = (*WriteOnceDir)(nil)

// NewWriteOnceDir opens (creating if needed) the directory root.
func NewWriteOnceDir(root string) (*WriteOnceDir, error) {
	abs, err := filepath.Abs(root)
	if err != nil {
		return nil, fmt.Errorf("snapshot: write-once dir %s: %w", root, err)
	}
	if err := os.MkdirAll(abs, 0o755); err != nil {
		return nil, fmt.Errorf("snapshot: write-once dir %s: %w", root, err)
	}
	return &WriteOnceDir{root: abs}, nil
}

// Root is the directory's absolute path.
func (d *WriteOnceDir) Root() string { return d.root }

func (d *WriteOnceDir) path(name string) (string, error) {
	if err := CheckName(name); err != nil {
		return "", err
	}
	return filepath.Join(d.root, filepath.FromSlash(name)), nil
}

// Put implements ImmutableStore.
func (d *WriteOnceDir) Put(ctx context.Context, name string, r io.Reader) (Object, error) {
	final, err := d.path(name)
	if err != nil {
		return Object{}, err
	}
	// Fast refusal before consuming r; link(2) below is the real check.
	if _, err := os.Lstat(final); err == nil {
		return Object{}, fmt.Errorf("%w: %s", ErrExists, name)
	} else if !errors.Is(err, fs.ErrNotExist) {
		return Object{}, fmt.Errorf("snapshot: put %s: %w", name, err)
	}
	dir := filepath.Dir(final)
	if err := d.mkdirs(dir); err != nil {
		return Object{}, fmt.Errorf("snapshot: put %s: %w", name, err)
	}
	tmp, err := os.CreateTemp(dir, ".put-*")
	if err != nil {
		return Object{}, fmt.Errorf("snapshot: put %s: %w", name, err)
	}
	tmpName := tmp.Name()
	defer os.Remove(tmpName) // after the link, only the temporary name goes
	obj, err := writeTemp(ctx, tmp, name, r)
	if cerr := tmp.Close(); err == nil && cerr != nil {
		err = fmt.Errorf("snapshot: put %s: %w", name, cerr)
	}
	if err != nil {
		return Object{}, err
	}
	if err := os.Link(tmpName, final); err != nil {
		if errors.Is(err, fs.ErrExist) {
			return Object{}, fmt.Errorf("%w: %s", ErrExists, name)
		}
		return Object{}, fmt.Errorf("snapshot: put %s: %w", name, err)
	}
	if err := os.Remove(tmpName); err != nil {
		return Object{}, fmt.Errorf("snapshot: put %s: remove temporary: %w", name, err)
	}
	if err := syncDir(dir); err != nil {
		return Object{}, fmt.Errorf("snapshot: put %s: %w", name, err)
	}
	return obj, nil
}

func writeTemp(ctx context.Context, f *os.File, name string, r io.Reader) (Object, error) {
	h := sha256.New()
	n, err := io.Copy(io.MultiWriter(f, h), ctxReader{ctx, r})
	if err != nil {
		return Object{}, fmt.Errorf("snapshot: put %s: %w", name, err)
	}
	if err := f.Chmod(0o444); err != nil {
		return Object{}, fmt.Errorf("snapshot: put %s: %w", name, err)
	}
	if err := f.Sync(); err != nil {
		return Object{}, fmt.Errorf("snapshot: put %s: %w", name, err)
	}
	return Object{Name: name, Size: n, SHA256: hex.EncodeToString(h.Sum(nil))}, nil
}

// mkdirs creates dir and its missing parents below the root, fsyncing the
// parent of each directory it creates so the new entries are durable.
func (d *WriteOnceDir) mkdirs(dir string) error {
	rel, err := filepath.Rel(d.root, dir)
	if err != nil || rel == "." {
		return err
	}
	cur := d.root
	for seg := range strings.SplitSeq(rel, string(filepath.Separator)) {
		next := filepath.Join(cur, seg)
		switch err := os.Mkdir(next, 0o755); {
		case err == nil:
			if err := syncDir(cur); err != nil {
				return err
			}
		case errors.Is(err, fs.ErrExist):
		default:
			return err
		}
		cur = next
	}
	return nil
}

func syncDir(dir string) error {
	f, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer f.Close()
	if err := f.Sync(); err != nil {
		return fmt.Errorf("fsync %s: %w", dir, err)
	}
	return nil
}

// open opens a published object, refusing anything but a regular file.
func (d *WriteOnceDir) open(name string) (*os.File, error) {
	p, err := d.path(name)
	if err != nil {
		return nil, err
	}
	fi, err := os.Lstat(p)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("%w: %s", ErrNotFound, name)
	}
	if err != nil {
		return nil, fmt.Errorf("snapshot: open %s: %w", name, err)
	}
	if !fi.Mode().IsRegular() {
		return nil, fmt.Errorf("snapshot: open %s: not a regular file (%s)", name, fi.Mode().Type())
	}
	f, err := os.Open(p)
	if err != nil {
		return nil, fmt.Errorf("snapshot: open %s: %w", name, err)
	}
	return f, nil
}

// Get implements ImmutableStore.
func (d *WriteOnceDir) Get(_ context.Context, name string) (io.ReadCloser, error) {
	return d.open(name)
}

// Stat implements ImmutableStore; it reads the object to hash it.
func (d *WriteOnceDir) Stat(ctx context.Context, name string) (Object, error) {
	f, err := d.open(name)
	if err != nil {
		return Object{}, err
	}
	defer f.Close()
	h := sha256.New()
	n, err := io.Copy(h, ctxReader{ctx, f})
	if err != nil {
		return Object{}, fmt.Errorf("snapshot: stat %s: %w", name, err)
	}
	return Object{Name: name, Size: n, SHA256: hex.EncodeToString(h.Sum(nil))}, nil
}

// List implements ImmutableStore.
func (d *WriteOnceDir) List(_ context.Context, prefix string) ([]string, error) {
	var names []string
	err := filepath.WalkDir(d.root, func(p string, e fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if p == d.root {
			return nil
		}
		if strings.HasPrefix(e.Name(), ".") {
			if e.IsDir() {
				return filepath.SkipDir
			}
			return nil
		}
		if e.IsDir() {
			return nil
		}
		rel, err := filepath.Rel(d.root, p)
		if err != nil {
			return err
		}
		if name := filepath.ToSlash(rel); strings.HasPrefix(name, prefix) {
			names = append(names, name)
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("snapshot: list %q: %w", prefix, err)
	}
	slices.Sort(names)
	return names, nil
}
