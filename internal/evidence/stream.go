package evidence

import (
	"archive/tar"
	"bufio"
	"bytes"
	"crypto/sha256"
	"errors"
	"fmt"
	"hash"
	"io"
	"strings"
)

// maxHeld bounds the bytes Verify keeps in memory: every file but the
// snapshot parts, which are only hashed as they stream past.
const maxHeld = 256 << 20

// entry is one archive entry as Verify read it: its SHA-256 always, its
// bytes only when a later check reads them (every file but snapshot parts).
type entry struct {
	File
	Size int64
	Sum  [sha256.Size]byte
}

// recorder passes reads through and, while on, keeps a copy of what was
// read: the tar headers, padding and end blocks, never file data.
type recorder struct {
	r   io.Reader
	on  bool
	buf []byte
}

func (c *recorder) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	if c.on {
		c.buf = append(c.buf, p[:n]...)
	}
	return n, err
}

// bundleReader reads a bundle in one pass: it hashes each file as it
// streams, keeps the files later checks need, and compares every byte
// outside the files (headers, padding, end of archive) with the canonical
// encoding, remembering the first difference.
type bundleReader struct {
	rec     *recorder
	tr      *tar.Reader
	h       hash.Hash
	buf     []byte
	held    int64
	entries []entry
	// canon is the first difference from the canonical encoding, if any.
	canon *FileError
}

func newBundleReader(r io.Reader) *bundleReader {
	rec := &recorder{r: bufio.NewReaderSize(r, 1<<20)}
	return &bundleReader{rec: rec, tr: tar.NewReader(rec), h: sha256.New(), buf: make([]byte, 1<<20)}
}

// read reads the whole archive. Errors are *FileError for a corrupt or
// unacceptable archive, and plain errors for failures of r.
func (br *bundleReader) read() error {
	seen := map[string]bool{}
	for {
		br.rec.on, br.rec.buf = true, br.rec.buf[:0]
		h, err := br.tr.Next()
		br.rec.on = false
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			where := "the first entry"
			if n := len(br.entries); n > 0 {
				where = "the entry after " + br.entries[n-1].Name
			}
			return &FileError{Reason: "archive is corrupt at " + where + ": " + err.Error()}
		}
		if h.Typeflag != tar.TypeReg {
			return &FileError{File: h.Name, Reason: fmt.Sprintf("is not a regular file (type %q)", h.Typeflag)}
		}
		if seen[h.Name] {
			return &FileError{File: h.Name, Reason: "appears twice in the archive"}
		}
		seen[h.Name] = true
		br.compare(h.Name, append(br.padding(), headerBytes(h.Name, h.Size)...),
			"tar header or padding differs from the canonical encoding")
		if err := br.readData(h); err != nil {
			return err
		}
	}
	if len(br.entries) == 0 {
		return &FileError{Reason: "the archive is empty"}
	}
	br.compare("", append(br.padding(), make([]byte, 2*512)...), "the end of archive differs from the canonical one (trailing or changed data)")
	if n, _ := io.ReadFull(br.rec, make([]byte, 1)); n > 0 && br.canon == nil {
		br.canon = &FileError{Reason: "bytes after the canonical end of archive (trailing data)"}
	}
	return nil
}

// readData hashes the current entry's bytes and keeps them if needed.
func (br *bundleReader) readData(h *tar.Header) error {
	br.h.Reset()
	var w io.Writer = br.h
	var kept *bytes.Buffer
	if !strings.HasPrefix(h.Name, dirSnapshots) {
		if br.held += h.Size; br.held > maxHeld {
			return &FileError{File: h.Name, Reason: fmt.Sprintf("the bundle's files other than snapshot parts exceed %d bytes", maxHeld)}
		}
		kept = bytes.NewBuffer(make([]byte, 0, h.Size))
		w = io.MultiWriter(br.h, kept)
	}
	n, err := io.CopyBuffer(w, br.tr, br.buf)
	if err != nil {
		return &FileError{File: h.Name, Reason: "cannot be read: " + err.Error()}
	}
	e := entry{File: File{Name: h.Name}, Size: n}
	if kept != nil {
		e.Data = kept.Bytes()
	}
	br.h.Sum(e.Sum[:0])
	br.entries = append(br.entries, e)
	return nil
}

// padding is the canonical padding after the previous entry's data.
func (br *bundleReader) padding() []byte {
	if len(br.entries) == 0 {
		return nil
	}
	return make([]byte, (512-br.entries[len(br.entries)-1].Size%512)%512)
}

// compare checks what the tar reader read outside file data against want.
func (br *bundleReader) compare(file string, want []byte, reason string) {
	if br.canon != nil || bytes.Equal(br.rec.buf, want) {
		return
	}
	br.canon = &FileError{File: file, Reason: reason}
}

// headerBytes is the canonical encoding of a file's tar header.
func headerBytes(name string, size int64) []byte {
	var b bytes.Buffer
	tw := tar.NewWriter(&b)
	_ = tw.WriteHeader(header(name, int(size))) // a bytes.Buffer does not fail
	return b.Bytes()
}
