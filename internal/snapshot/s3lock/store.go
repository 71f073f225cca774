package s3lock

import (
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"io"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/minio/minio-go/v7"

	"github.com/countersign/countersign/internal/snapshot"
)

// Store is a snapshot.ImmutableStore in an S3 bucket with Object Lock.
// Create it with Open or New; it is safe for concurrent use.
type Store struct {
	cfg    Config
	client *minio.Client
	core   minio.Core
	prefix string // "" or "PREFIX/"

	// versioned is set by Check from the bucket's versioning status: it
	// decides between version listings and plain ones.
	versioned atomic.Bool

	mu     sync.Mutex
	report Report // the last Check's
}

var _ snapshot.ImmutableStore = (*Store)(nil)

// Open parses rawURL (see ParseURL) and calls New with credentials from
// the environment (EnvCredentials) and slog.Default() as the logger.
func Open(ctx context.Context, rawURL string) (*Store, error) {
	cfg, err := ParseURL(rawURL)
	if err != nil {
		return nil, err
	}
	return New(ctx, cfg)
}

// New connects to the bucket and runs Check. If Check proves that the
// server does not enforce Object Lock, New fails with the *UnenforcedError
// unless cfg.AllowUnenforced is set, in which case Check's warning is
// logged and the store is returned. Any other Check failure (unreachable
// server, missing bucket, refused canary write) is returned as is.
func New(ctx context.Context, cfg Config) (*Store, error) {
	s, err := newStore(cfg)
	if err != nil {
		return nil, err
	}
	if _, err := s.Check(ctx); err != nil {
		if !errors.Is(err, ErrUnenforced) || !s.cfg.AllowUnenforced {
			return nil, err
		}
		s.cfg.Logger.WarnContext(ctx, "s3lock: continuing because allow_unenforced is set: snapshots in this bucket can be deleted or replaced",
			"bucket", s.cfg.Bucket, "endpoint", s.cfg.Endpoint)
	}
	return s, nil
}

// newStore builds the client without touching the network.
func newStore(cfg Config) (*Store, error) {
	cfg, err := cfg.withDefaults()
	if err != nil {
		return nil, err
	}
	if cfg.Credentials == nil {
		cfg.Credentials = EnvCredentials()
	}
	if err := checkCredentials(cfg.Credentials); err != nil {
		return nil, err
	}
	lookup := minio.BucketLookupAuto
	if cfg.PathStyle {
		lookup = minio.BucketLookupPath
	}
	client, err := minio.New(cfg.Endpoint, &minio.Options{
		Creds:        cfg.Credentials,
		Secure:       !cfg.Insecure,
		Transport:    cfg.Transport,
		Region:       cfg.Region,
		BucketLookup: lookup,
	})
	if err != nil {
		return nil, fmt.Errorf("s3lock: endpoint %s: %w", cfg.Endpoint, err)
	}
	if cfg.Insecure && !isLoopback(cfg.Endpoint) {
		cfg.Logger.Warn("s3lock: plain HTTP to a non-loopback endpoint: snapshot contents travel unencrypted",
			"endpoint", cfg.Endpoint)
	}
	s := &Store{cfg: cfg, client: client, core: minio.Core{Client: client}}
	if cfg.Prefix != "" {
		s.prefix = cfg.Prefix + "/"
	}
	return s, nil
}

// Config is the store's configuration with defaults applied.
func (s *Store) Config() Config { return s.cfg }

// Enforcement is the report of the last Check (New runs one).
func (s *Store) Enforcement() Report {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.report
}

func (s *Store) key(name string) (string, error) {
	if err := snapshot.CheckName(name); err != nil {
		return "", err
	}
	return s.prefix + name, nil
}

// version identifies one stored version of a key. id is "" on servers
// without versioning.
type version struct {
	id       string
	modified time.Time
}

// owner returns the version that owns key: its oldest version that is not
// a delete marker. Object Lock protects versions, not names, so a later
// PUT to the same key (a writer that lost a race on a server without
// conditional writes, or anyone else holding write access) only adds a
// version; reading the oldest one keeps the first-written, locked bytes
// authoritative, and a delete marker cannot hide them. In an unversioned
// bucket a key has one object, which the lock keeps from being replaced.
func (s *Store) owner(ctx context.Context, key string) (version, bool, error) {
	if !s.versioned.Load() {
		info, err := s.client.StatObject(ctx, s.cfg.Bucket, key, minio.StatObjectOptions{})
		if isNotFound(err) {
			return version{}, false, nil
		}
		if err != nil {
			return version{}, false, fmt.Errorf("stat %s: %w", key, err)
		}
		return version{id: info.VersionID, modified: info.LastModified}, true, nil
	}
	var (
		best  version
		found bool
	)
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	for o := range s.client.ListObjectsIter(ctx, s.cfg.Bucket, minio.ListObjectsOptions{
		WithVersions: true, Prefix: key, Recursive: true,
	}) {
		if o.Err != nil {
			return version{}, false, fmt.Errorf("list versions of %s: %w", key, o.Err)
		}
		if o.Key != key || o.IsDeleteMarker {
			continue
		}
		// Listings give a key's versions newest first, so a later entry
		// with the same or an earlier time is older.
		if !found || !o.LastModified.After(best.modified) {
			best, found = version{id: o.VersionID, modified: o.LastModified}, true
		}
	}
	if err := ctx.Err(); err != nil {
		return version{}, false, err
	}
	return best, found, nil
}

// list calls fn for every object (every version in a versioned bucket)
// under prefix, stopping at the first error.
func (s *Store) list(ctx context.Context, prefix string, fn func(minio.ObjectInfo)) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	for o := range s.client.ListObjectsIter(ctx, s.cfg.Bucket, minio.ListObjectsOptions{
		WithVersions: s.versioned.Load(), Prefix: prefix, Recursive: true,
	}) {
		if o.Err != nil {
			return o.Err
		}
		fn(o)
	}
	return ctx.Err()
}

// Get implements snapshot.ImmutableStore. It reads the name's owning
// version (see the package doc) and, at EOF, fails with an error instead
// of io.EOF if the bytes do not match the SHA-256 stored with them.
func (s *Store) Get(ctx context.Context, name string) (io.ReadCloser, error) {
	key, err := s.key(name)
	if err != nil {
		return nil, err
	}
	v, ok, err := s.owner(ctx, key)
	if err != nil {
		return nil, fmt.Errorf("s3lock: get %s: %w", name, err)
	}
	if !ok {
		return nil, fmt.Errorf("%w: %s", snapshot.ErrNotFound, name)
	}
	obj, info, err := s.open(ctx, key, v)
	if err != nil {
		return nil, fmt.Errorf("s3lock: get %s: %w", name, err)
	}
	return &verifyingReader{name: name, r: obj, c: obj, h: sha256.New(), size: info.Size,
		want: userMeta(info, metaSHA256)}, nil
}

// open starts reading one version.
func (s *Store) open(ctx context.Context, key string, v version) (*minio.Object, minio.ObjectInfo, error) {
	obj, err := s.client.GetObject(ctx, s.cfg.Bucket, key, minio.GetObjectOptions{VersionID: v.id})
	if err != nil {
		return nil, minio.ObjectInfo{}, err
	}
	info, err := obj.Stat()
	if err != nil {
		obj.Close()
		if isNotFound(err) {
			return nil, minio.ObjectInfo{}, fmt.Errorf("%w: version %q vanished after listing: %v", snapshot.ErrNotFound, v.id, err)
		}
		return nil, minio.ObjectInfo{}, err
	}
	return obj, info, nil
}

// Stat implements snapshot.ImmutableStore. The SHA-256 is the server's
// full-object checksum when it keeps one (single-PUT objects on servers
// with x-amz-checksum-sha256 support); otherwise Stat reads the version
// and hashes it. Either way it must match the digest Put stored as
// metadata.
func (s *Store) Stat(ctx context.Context, name string) (snapshot.Object, error) {
	key, err := s.key(name)
	if err != nil {
		return snapshot.Object{}, err
	}
	v, ok, err := s.owner(ctx, key)
	if err != nil {
		return snapshot.Object{}, fmt.Errorf("s3lock: stat %s: %w", name, err)
	}
	if !ok {
		return snapshot.Object{}, fmt.Errorf("%w: %s", snapshot.ErrNotFound, name)
	}
	info, err := s.head(ctx, key, v.id)
	if err != nil {
		return snapshot.Object{}, fmt.Errorf("s3lock: stat %s: %w", name, err)
	}
	meta := userMeta(info, metaSHA256)
	if sum, ok := fullObjectSHA256(info); ok {
		if meta != "" && meta != sum {
			return snapshot.Object{}, fmt.Errorf("s3lock: stat %s: server checksum %s differs from the stored SHA-256 %s", name, sum, meta)
		}
		return snapshot.Object{Name: name, Size: info.Size, SHA256: sum}, nil
	}
	obj, _, err := s.open(ctx, key, v)
	if err != nil {
		return snapshot.Object{}, fmt.Errorf("s3lock: stat %s: %w", name, err)
	}
	defer obj.Close()
	h := sha256.New()
	n, err := io.Copy(h, obj)
	if err != nil {
		return snapshot.Object{}, fmt.Errorf("s3lock: stat %s: %w", name, err)
	}
	sum := hex.EncodeToString(h.Sum(nil))
	if meta != "" && meta != sum {
		return snapshot.Object{}, fmt.Errorf("s3lock: stat %s: content SHA-256 %s differs from the stored SHA-256 %s", name, sum, meta)
	}
	return snapshot.Object{Name: name, Size: n, SHA256: sum}, nil
}

// head stats one version, asking for its checksums.
func (s *Store) head(ctx context.Context, key, versionID string) (minio.ObjectInfo, error) {
	info, err := s.client.StatObject(ctx, s.cfg.Bucket, key, minio.StatObjectOptions{VersionID: versionID, Checksum: true})
	if err != nil && isNotFound(err) {
		return info, fmt.Errorf("%w: %s version %q: %v", snapshot.ErrNotFound, key, versionID, err)
	}
	return info, err
}

// List implements snapshot.ImmutableStore. It lists names with at least
// one version that is not a delete marker, and leaves out keys that are not
// valid object names (Check's canaries live under a dot-segment).
func (s *Store) List(ctx context.Context, prefix string) ([]string, error) {
	seen := map[string]bool{}
	err := s.list(ctx, s.prefix+prefix, func(o minio.ObjectInfo) {
		if o.IsDeleteMarker {
			return
		}
		if name, ok := strings.CutPrefix(o.Key, s.prefix); ok && snapshot.CheckName(name) == nil {
			seen[name] = true
		}
	})
	if err != nil {
		return nil, fmt.Errorf("s3lock: list %q: %w", prefix, err)
	}
	names := make([]string, 0, len(seen))
	for n := range seen {
		names = append(names, n)
	}
	slices.Sort(names)
	return names, nil
}

// verifyingReader hashes what it reads and turns io.EOF into an error when
// the size or the digest differs from what Put stored.
type verifyingReader struct {
	name string
	r    io.Reader
	c    io.Closer
	h    hash.Hash
	n    int64
	size int64
	want string // lower-case hex; "" when the object has none
}

func (v *verifyingReader) Read(p []byte) (int, error) {
	n, err := v.r.Read(p)
	v.h.Write(p[:n])
	v.n += int64(n)
	if err == io.EOF {
		if v.n != v.size {
			return n, fmt.Errorf("s3lock: get %s: read %d bytes, object has %d", v.name, v.n, v.size)
		}
		if got := hex.EncodeToString(v.h.Sum(nil)); v.want != "" && got != v.want {
			return n, fmt.Errorf("s3lock: get %s: content SHA-256 %s differs from the stored SHA-256 %s", v.name, got, v.want)
		}
	}
	return n, err
}

func (v *verifyingReader) Close() error { return v.c.Close() }

// userMeta returns x-amz-meta-<name> of an object.
func userMeta(info minio.ObjectInfo, name string) string {
	for k, v := range info.UserMetadata {
		if strings.EqualFold(k, name) {
			return v
		}
	}
	return ""
}

// fullObjectSHA256 returns the server's SHA-256 of the whole object in
// hex, if it reported one. Multipart objects carry a checksum of the part
// checksums ("...-N", type COMPOSITE), which is not the content's.
func fullObjectSHA256(info minio.ObjectInfo) (string, bool) {
	v := info.ChecksumSHA256
	if v == "" || strings.Contains(v, "-") || strings.EqualFold(info.ChecksumMode, "COMPOSITE") {
		return "", false
	}
	b, err := base64.StdEncoding.DecodeString(v)
	if err != nil || len(b) != sha256.Size {
		return "", false
	}
	return hex.EncodeToString(b), true
}

func isNotFound(err error) bool {
	switch minio.ToErrorResponse(err).Code {
	case "NoSuchKey", "NoSuchVersion":
		return true
	}
	return false
}

// String names the bucket and prefix (never credentials), e.g. in a
// playbook plan: "s3://bucket/prefix/ (compliance, 720h0m0s)".
func (s *Store) String() string {
	return fmt.Sprintf("s3://%s/%s (%s, %s)", s.cfg.Bucket, s.prefix, s.cfg.Mode, s.cfg.Retention)
}
