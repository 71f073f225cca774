package s3lock

import (
	"context"
	"crypto/md5"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"io"
	"os"
	"strings"
	"time"

	"github.com/minio/minio-go/v7"

	"github.com/countersign/countersign/internal/snapshot"
)

// Object metadata Put stores with every version (x-amz-meta-*).
const (
	// metaSHA256 is the content's SHA-256 in lower-case hex.
	metaSHA256 = "sha256"
	// metaPutID is a random id per Put call: it tells a Put whether the
	// version that owns the name is its own, also when a retried request
	// reports a conflict with the attempt that had already succeeded.
	metaPutID = "countersign-put-id"
)

// Put implements snapshot.ImmutableStore.
//
// It spools r to a temporary file in SpoolDir (unlinked at once), hashing
// it as it streams, so that nothing is uploaded if r fails and so that the
// digests can travel in the request: Content-MD5, a SigV4-signed payload
// and x-amz-checksum-sha256 on a single PUT (the server refuses bytes that
// do not match), Content-MD5 and a signed payload per part for multipart
// uploads. The version is written with If-None-Match: *, the configured
// retention (and legal hold), and the SHA-256 as x-amz-meta-sha256. Put then checks that the
// name's owning version is its own (else ErrExists) and reads its metadata
// back: size, digest and, for the lock, mode and retain-until. A server
// that dropped the lock makes Put fail with ErrUnenforced unless
// AllowUnenforced is set, in which case it only warns.
func (s *Store) Put(ctx context.Context, name string, r io.Reader) (snapshot.Object, error) {
	key, err := s.key(name)
	if err != nil {
		return snapshot.Object{}, err
	}
	// Fast refusal before consuming r; the conditional write and the
	// owner check below are the real ones.
	if _, ok, err := s.owner(ctx, key); err != nil {
		return snapshot.Object{}, fmt.Errorf("s3lock: put %s: %w", name, err)
	} else if ok {
		return snapshot.Object{}, fmt.Errorf("%w: %s", snapshot.ErrExists, name)
	}
	sp, err := spool(ctx, s.cfg.SpoolDir, s.cfg.PartSize, r)
	if err != nil {
		return snapshot.Object{}, fmt.Errorf("s3lock: put %s: %w", name, err)
	}
	defer sp.f.Close()
	obj := snapshot.Object{Name: name, Size: sp.size, SHA256: hex.EncodeToString(sp.sha)}
	putID := randomHex(16)
	retainUntil := s.cfg.Now().Add(s.cfg.Retention).UTC().Truncate(time.Second)
	opts := s.lockOptions(retainUntil, s.cfg.LegalHold)
	opts.UserMetadata = map[string]string{metaSHA256: obj.SHA256, metaPutID: putID}

	var info minio.UploadInfo
	var upErr error
	if sp.size <= s.cfg.PartSize {
		info, upErr = s.putSingle(ctx, key, sp, opts)
	} else {
		info, upErr = s.putMultipart(ctx, key, sp, opts)
	}

	v, ok, err := s.owner(ctx, key)
	if err != nil {
		return snapshot.Object{}, fmt.Errorf("s3lock: put %s: after upload: %w", name, errors.Join(err, upErr))
	}
	if !ok {
		if upErr != nil {
			return snapshot.Object{}, fmt.Errorf("s3lock: put %s: %w", name, upErr)
		}
		return snapshot.Object{}, fmt.Errorf("s3lock: put %s: the server accepted version %q but does not list it", name, info.VersionID)
	}
	got, err := s.head(ctx, key, v.id)
	if err != nil {
		return snapshot.Object{}, fmt.Errorf("s3lock: put %s: %w", name, errors.Join(err, upErr))
	}
	if userMeta(got, metaPutID) != putID {
		if upErr == nil {
			// Only without conditional writes: our version landed after
			// the owner's and stays, locked, until its retain-until.
			s.cfg.Logger.WarnContext(ctx, "s3lock: lost a race for an object name; the extra version stays locked and is ignored",
				"name", name, "version", info.VersionID, "owner_version", v.id)
		}
		return snapshot.Object{}, fmt.Errorf("%w: %s", snapshot.ErrExists, name)
	}
	// Ours. An upload error here came from a retried request whose first
	// attempt had already succeeded.
	if err := s.verifyStored(ctx, got, obj, retainUntil); err != nil {
		return snapshot.Object{}, err
	}
	return obj, nil
}

// lockOptions are the Object Lock headers of a write.
func (s *Store) lockOptions(retainUntil time.Time, legalHold bool) minio.PutObjectOptions {
	opts := minio.PutObjectOptions{
		ContentType:     "application/octet-stream",
		Mode:            minio.RetentionMode(s.cfg.Mode),
		RetainUntilDate: retainUntil,
	}
	if legalHold {
		opts.LegalHold = minio.LegalHoldEnabled
	}
	return opts
}

// putSingle uploads a spooled object in one conditional PUT.
func (s *Store) putSingle(ctx context.Context, key string, sp *spooled, opts minio.PutObjectOptions) (minio.UploadInfo, error) {
	opts.UserMetadata["x-amz-checksum-sha256"] = base64.StdEncoding.EncodeToString(sp.sha)
	opts.SetMatchETagExcept("*")
	return s.core.PutObject(ctx, s.cfg.Bucket, key, io.NewSectionReader(sp.f, 0, sp.size), sp.size,
		base64.StdEncoding.EncodeToString(sp.md5), hex.EncodeToString(sp.sha), opts)
}

// putMultipart uploads a spooled object in parts and completes it with
// If-None-Match: *. On failure the upload is aborted, so no parts linger.
func (s *Store) putMultipart(ctx context.Context, key string, sp *spooled, opts minio.PutObjectOptions) (info minio.UploadInfo, err error) {
	uploadID, err := s.core.NewMultipartUpload(ctx, s.cfg.Bucket, key, opts)
	if err != nil {
		return info, fmt.Errorf("create multipart upload: %w", err)
	}
	defer func() {
		if err != nil {
			// Also when ctx is what failed.
			actx, cancel := context.WithTimeout(context.WithoutCancel(ctx), time.Minute)
			defer cancel()
			if aerr := s.core.AbortMultipartUpload(actx, s.cfg.Bucket, key, uploadID); aerr != nil {
				err = errors.Join(err, fmt.Errorf("abort multipart upload: %w", aerr))
			}
		}
	}()
	parts := make([]minio.CompletePart, len(sp.parts))
	for i, p := range sp.parts {
		op, err := s.core.PutObjectPart(ctx, s.cfg.Bucket, key, uploadID, i+1,
			io.NewSectionReader(sp.f, p.off, p.size), p.size,
			minio.PutObjectPartOptions{Md5Base64: base64.StdEncoding.EncodeToString(p.md5), Sha256Hex: hex.EncodeToString(p.sha)})
		if err != nil {
			return info, fmt.Errorf("upload part %d: %w", i+1, err)
		}
		parts[i] = minio.CompletePart{PartNumber: i + 1, ETag: op.ETag}
	}
	var copts minio.PutObjectOptions
	copts.SetMatchETagExcept("*")
	info, err = s.core.CompleteMultipartUpload(ctx, s.cfg.Bucket, key, uploadID, parts, copts)
	if err != nil {
		return info, fmt.Errorf("complete multipart upload: %w", err)
	}
	return info, nil
}

// verifyStored compares a version's metadata with what Put wrote.
func (s *Store) verifyStored(ctx context.Context, got minio.ObjectInfo, want snapshot.Object, retainUntil time.Time) error {
	if got.Size != want.Size {
		return fmt.Errorf("s3lock: put %s: stored %d bytes, sent %d", want.Name, got.Size, want.Size)
	}
	if m := userMeta(got, metaSHA256); m != want.SHA256 {
		return fmt.Errorf("s3lock: put %s: stored SHA-256 metadata %q, sent %s", want.Name, m, want.SHA256)
	}
	if sum, ok := fullObjectSHA256(got); ok && sum != want.SHA256 {
		return fmt.Errorf("s3lock: put %s: server checksum %s, sent %s", want.Name, sum, want.SHA256)
	}
	problem := lockProblem(got, s.cfg.Mode, retainUntil)
	if problem == "" && s.cfg.LegalHold && !strings.EqualFold(got.Headers.Get(hdrLegalHold), "ON") {
		problem = fmt.Sprintf("legal hold is %q, want ON", got.Headers.Get(hdrLegalHold))
	}
	if problem == "" {
		return nil
	}
	if s.cfg.AllowUnenforced {
		s.cfg.Logger.WarnContext(ctx, "s3lock: stored without Object Lock (allow_unenforced is set)",
			"name", want.Name, "version", got.VersionID, "problem", problem)
		return nil
	}
	return fmt.Errorf("s3lock: put %s: stored as version %q but %s: %w", want.Name, got.VersionID, problem, ErrUnenforced)
}

// Object Lock response headers.
const (
	hdrLockMode    = "X-Amz-Object-Lock-Mode"
	hdrRetainUntil = "X-Amz-Object-Lock-Retain-Until-Date"
	hdrLegalHold   = "X-Amz-Object-Lock-Legal-Hold"
)

// lockProblem describes how a version's reported lock falls short of mode
// until retainUntil, or returns "".
func lockProblem(info minio.ObjectInfo, mode Mode, retainUntil time.Time) string {
	gotMode := info.Headers.Get(hdrLockMode)
	gotUntil := info.Headers.Get(hdrRetainUntil)
	if gotMode == "" && gotUntil == "" {
		return "the server reports no retention for it"
	}
	if !strings.EqualFold(gotMode, string(mode)) {
		return fmt.Sprintf("the server reports retention mode %q, want %s", gotMode, mode)
	}
	until, err := time.Parse(time.RFC3339, gotUntil)
	if err != nil {
		return fmt.Sprintf("the server reports an unreadable retain-until %q", gotUntil)
	}
	if until.Before(retainUntil) {
		return fmt.Sprintf("the server reports retain-until %s, want %s or later", until.UTC().Format(time.RFC3339), retainUntil.Format(time.RFC3339))
	}
	return ""
}

// spooled is an object buffered in an unlinked temporary file, with its
// digests and those of its parts.
type spooled struct {
	f        *os.File
	size     int64
	sha, md5 []byte
	parts    []partSum
}

type partSum struct {
	off, size int64
	sha, md5  []byte
}

// spool copies r into an unlinked temporary file in dir, hashing the
// whole and every partSize-long part in the same pass.
func spool(ctx context.Context, dir string, partSize int64, r io.Reader) (sp *spooled, err error) {
	f, err := os.CreateTemp(dir, "s3lock-put-*")
	if err != nil {
		return nil, fmt.Errorf("spool: %w", err)
	}
	// Unlinked at once: the space is freed when f is closed, even if the
	// process dies first.
	if err := os.Remove(f.Name()); err != nil {
		f.Close()
		return nil, fmt.Errorf("spool: %w", err)
	}
	defer func() {
		if err != nil {
			f.Close()
		}
	}()
	ph := &partHasher{partSize: partSize, sha: sha256.New(), md5: md5.New()}
	n, err := io.Copy(io.MultiWriter(f, ph), ctxReader{ctx, r})
	if err != nil {
		return nil, fmt.Errorf("read: %w", err)
	}
	if n > partSize*maxParts {
		return nil, fmt.Errorf("object of %d bytes exceeds %d parts of %d bytes; raise the part size", n, maxParts, partSize)
	}
	ph.finish()
	return &spooled{f: f, size: n, sha: ph.sha.Sum(nil), md5: ph.md5.Sum(nil), parts: ph.parts}, nil
}

// partHasher hashes everything written to it, and also each consecutive
// partSize-long part (the last one may be shorter).
type partHasher struct {
	partSize int64
	sha, md5 hash.Hash // whole object
	parts    []partSum
	off, cur int64 // start and length of the open part
	psha     hash.Hash
	pmd5     hash.Hash
}

func (p *partHasher) Write(b []byte) (int, error) {
	p.sha.Write(b)
	p.md5.Write(b)
	n := len(b)
	for len(b) > 0 {
		if p.psha == nil {
			p.psha, p.pmd5 = sha256.New(), md5.New()
		}
		k := min(int64(len(b)), p.partSize-p.cur)
		p.psha.Write(b[:k])
		p.pmd5.Write(b[:k])
		p.cur += k
		b = b[k:]
		if p.cur == p.partSize {
			p.close()
		}
	}
	return n, nil
}

func (p *partHasher) close() {
	p.parts = append(p.parts, partSum{off: p.off, size: p.cur, sha: p.psha.Sum(nil), md5: p.pmd5.Sum(nil)})
	p.off += p.cur
	p.cur, p.psha, p.pmd5 = 0, nil, nil
}

// finish closes the last, short part.
func (p *partHasher) finish() {
	if p.cur > 0 {
		p.close()
	}
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

func randomHex(n int) string {
	b := make([]byte, n)
	rand.Read(b) // never fails (crypto/rand since Go 1.24)
	return hex.EncodeToString(b)
}
