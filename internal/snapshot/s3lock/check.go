package s3lock

import (
	"bytes"
	"context"
	"crypto/md5"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/xml"
	"errors"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/minio/minio-go/v7"

	"github.com/countersign/countersign/internal/snapshot"
)

// ErrUnenforced is wrapped by the errors of Check, New and Put that show
// the server does not enforce Object Lock.
var ErrUnenforced = errors.New("server accepts Object Lock settings but does not enforce them")

// UnenforcedError is Check's error when a probe failed; it wraps
// ErrUnenforced and carries the whole report.
type UnenforcedError struct {
	Report Report
}

func (e *UnenforcedError) Error() string {
	return fmt.Sprintf("s3lock: bucket %s at %s: %v: %s", e.Report.Bucket, e.Report.Endpoint, ErrUnenforced,
		strings.Join(e.Report.Problems, "; "))
}

func (e *UnenforcedError) Unwrap() error { return ErrUnenforced }

// Report is what Check found. Problems are proofs that the lock is not
// enforced; Warnings are weaker findings that leave it proven.
type Report struct {
	Bucket   string
	Endpoint string
	Mode     Mode
	Time     time.Time
	// LockEnabled: the bucket's Object Lock configuration says Enabled.
	LockEnabled bool
	// Versioning is the bucket's versioning status: "Enabled",
	// "Suspended" or "" (never enabled, or not reported).
	Versioning string
	// Canary is the probe object's key and CanaryVersion its version.
	Canary, CanaryVersion string
	// RetentionApplied: reading the canary back showed Mode and a
	// retain-until no earlier than requested.
	RetentionApplied bool
	// ConditionalWrite: If-None-Match: * on the existing canary failed
	// with PreconditionFailed.
	ConditionalWrite bool
	// OverwriteRefused: after a plain PUT over the canary, its locked
	// version still held the original bytes (the PUT was refused, or
	// added a new version).
	OverwriteRefused bool
	// DeleteRefused: deleting the canary's locked version failed and the
	// version is still there.
	DeleteRefused bool
	Problems      []string
	Warnings      []string
}

// Enforced reports whether every probe showed Object Lock at work.
func (r Report) Enforced() bool { return len(r.Problems) == 0 }

// Canaries live under a dot-segment, which snapshot.CheckName rules out
// for object names, so they never collide with objects and List skips them.
const (
	canaryDir        = ".countersign-canary/"
	canaryTimeLayout = "20060102T150405Z"
)

// Check verifies that the bucket has Object Lock enabled and proves that
// the server enforces it: it writes a canary object with the configured
// mode and CanaryRetention, reads its retention back, tries a conditional
// and a plain overwrite and then deleting the locked version. Earlier
// canaries whose retention has expired are deleted first.
//
// Proofs that the lock is not enforced make Check log a warning ("server
// accepts Object Lock settings but does not enforce them") and return the
// report with an *UnenforcedError; the caller decides whether that is
// fatal (New: unless AllowUnenforced). Other errors (unreachable server,
// missing bucket, missing permission, canary write refused) mean Check
// could not run its probes.
func (s *Store) Check(ctx context.Context) (Report, error) {
	rep, err := s.check(ctx)
	if err != nil {
		return rep, err
	}
	s.mu.Lock()
	s.report = rep
	s.mu.Unlock()
	log := s.cfg.Logger
	for _, w := range rep.Warnings {
		log.WarnContext(ctx, "s3lock: Object Lock check", "bucket", rep.Bucket, "endpoint", rep.Endpoint, "warning", w)
	}
	if !rep.Enforced() {
		log.WarnContext(ctx, "s3lock: server accepts Object Lock settings but does not enforce them",
			"bucket", rep.Bucket, "endpoint", rep.Endpoint, "problems", strings.Join(rep.Problems, "; "))
		return rep, &UnenforcedError{Report: rep}
	}
	log.InfoContext(ctx, "s3lock: Object Lock enforcement proven", "bucket", rep.Bucket, "endpoint", rep.Endpoint,
		"mode", rep.Mode, "versioning", rep.Versioning, "conditional_writes", rep.ConditionalWrite)
	return rep, nil
}

func (s *Store) check(ctx context.Context) (Report, error) {
	b := s.cfg.Bucket
	rep := Report{Bucket: b, Endpoint: s.cfg.Endpoint, Mode: s.cfg.Mode, Time: s.cfg.Now()}
	exists, err := s.client.BucketExists(ctx, b)
	if err != nil {
		return rep, fmt.Errorf("s3lock: check bucket %s at %s: %w", b, s.cfg.Endpoint, err)
	}
	if !exists {
		return rep, fmt.Errorf("s3lock: bucket %s does not exist at %s", b, s.cfg.Endpoint)
	}
	if err := s.checkBucketLock(ctx, &rep); err != nil {
		return rep, err
	}
	if vc, err := s.client.GetBucketVersioning(ctx, b); err == nil {
		rep.Versioning = vc.Status
	} else {
		rep.Warnings = append(rep.Warnings, "reading the bucket's versioning status failed ("+describe(err)+
			"); treating the bucket as unversioned, so Get reads the latest version of a name instead of its first")
	}
	// Suspended versioning still keeps the versions made before.
	s.versioned.Store(rep.Versioning == "Enabled" || rep.Versioning == "Suspended")
	s.removeExpiredCanaries(ctx)
	if err := s.probe(ctx, &rep); err != nil {
		return rep, err
	}
	return rep, nil
}

// checkBucketLock reads the bucket's Object Lock configuration. A server
// that has none or does not implement the call is a problem, not an error:
// the probes still run and show what it does with lock headers.
func (s *Store) checkBucketLock(ctx context.Context, rep *Report) error {
	enabled, _, _, _, err := s.client.GetObjectLockConfig(ctx, s.cfg.Bucket)
	if err == nil {
		if enabled == "Enabled" {
			rep.LockEnabled = true
		} else {
			rep.Problems = append(rep.Problems, fmt.Sprintf("the bucket's Object Lock configuration says ObjectLockEnabled=%q", enabled))
		}
		return nil
	}
	er := minio.ToErrorResponse(err)
	var syntax *xml.SyntaxError
	var unmarshal xml.UnmarshalError
	switch {
	case er.Code == "ObjectLockConfigurationNotFoundError":
		rep.Problems = append(rep.Problems, "the bucket has no Object Lock configuration")
	case er.StatusCode == 403:
		return fmt.Errorf("s3lock: reading the Object Lock configuration of bucket %s (needs s3:GetBucketObjectLockConfiguration): %w", s.cfg.Bucket, err)
	case er.Code != "":
		rep.Problems = append(rep.Problems, "reading the bucket's Object Lock configuration failed: "+describe(err))
	case errors.As(err, &syntax), errors.As(err, &unmarshal), errors.Is(err, io.EOF):
		rep.Problems = append(rep.Problems, fmt.Sprintf("the server answered GetObjectLockConfiguration with something else (%v): it does not implement Object Lock", err))
	default:
		return fmt.Errorf("s3lock: reading the Object Lock configuration of bucket %s: %w", s.cfg.Bucket, err)
	}
	return nil
}

// probe writes the canary and attacks it.
func (s *Store) probe(ctx context.Context, rep *Report) error {
	retainUntil := s.cfg.Now().Add(s.cfg.CanaryRetention).UTC().Truncate(time.Second)
	key := s.prefix + canaryDir + retainUntil.Format(canaryTimeLayout) + "-" + randomHex(8)
	body := []byte("countersign Object Lock canary " + key + "\n")
	opts := s.lockOptions(retainUntil, false)
	opts.SetMatchETagExcept("*")
	info, err := s.putBytes(ctx, key, body, opts)
	if err != nil {
		hint := ""
		if !rep.LockEnabled {
			hint = " (the bucket has no Object Lock configuration: it must be created with Object Lock enabled)"
		}
		return fmt.Errorf("s3lock: check: writing a canary with %s retention to bucket %s failed%s: %w", s.cfg.Mode, s.cfg.Bucket, hint, err)
	}
	rep.Canary, rep.CanaryVersion = key, info.VersionID
	vid := info.VersionID

	got, err := s.head(ctx, key, vid)
	if err != nil {
		return fmt.Errorf("s3lock: check: reading the canary back: %w", err)
	}
	if p := lockProblem(got, s.cfg.Mode, retainUntil); p != "" {
		rep.Problems = append(rep.Problems, "canary: "+p)
	} else {
		rep.RetentionApplied = true
	}

	s.probeConditional(ctx, rep, key+"-cond")

	// A plain PUT may add a version (versioned bucket) or be refused, but
	// must leave the locked version's bytes alone.
	_, putErr := s.putBytes(ctx, key, []byte("overwrite probe\n"), minio.PutObjectOptions{})
	content, err := s.readVersion(ctx, key, vid)
	switch {
	case err == nil && bytes.Equal(content, body):
		rep.OverwriteRefused = true
	case err == nil:
		rep.Problems = append(rep.Problems, "a plain PUT over the locked canary replaced its content"+versionNote(vid))
	case errors.Is(err, snapshot.ErrNotFound):
		rep.Problems = append(rep.Problems, "after a plain PUT over the locked canary, it is gone"+versionNote(vid))
	default:
		return fmt.Errorf("s3lock: check: reading the canary after a plain PUT (%v): %w", putErr, err)
	}

	// Deleting the locked version must fail, and it must still be there.
	delErr := s.client.RemoveObject(ctx, s.cfg.Bucket, key, minio.RemoveObjectOptions{VersionID: vid})
	_, err = s.head(ctx, key, vid)
	switch {
	case err == nil && delErr == nil:
		rep.DeleteRefused = true
		rep.Warnings = append(rep.Warnings, "deleting the locked canary reported success, yet it is still there"+versionNote(vid))
	case err == nil:
		rep.DeleteRefused = true
		if !isLockRefusal(delErr) {
			rep.Warnings = append(rep.Warnings, "deleting the locked canary was refused with "+describe(delErr)+
				", which does not name Object Lock: an IAM policy may have refused it, which does not prove the lock")
		}
	case errors.Is(err, snapshot.ErrNotFound):
		rep.Problems = append(rep.Problems, "deleting the locked canary succeeded"+versionNote(vid))
	default:
		return fmt.Errorf("s3lock: check: reading the canary after the delete probe: %w", err)
	}
	return nil
}

// probeConditional checks If-None-Match: * on an unlocked object of its
// own: on a server without versioning a locked canary would refuse any
// overwrite through the lock, which says nothing about conditional writes.
// The probe object is deleted at once if the server allows it (a bucket
// default retention may keep it until removeExpiredCanaries does).
func (s *Store) probeConditional(ctx context.Context, rep *Report, key string) {
	var opts minio.PutObjectOptions
	opts.SetMatchETagExcept("*")
	info, err := s.putBytes(ctx, key, []byte("conditional write probe\n"), opts)
	if err != nil {
		rep.Warnings = append(rep.Warnings, "writing the conditional-write probe failed ("+describe(err)+"), so conditional writes are unproven")
		return
	}
	_, err = s.putBytes(ctx, key, []byte("conditional overwrite probe\n"), opts)
	switch {
	case err == nil:
		rep.Warnings = append(rep.Warnings, "the server ignores If-None-Match: * on an existing name; Put then relies on the owning-version rule, and a writer that loses a race leaves an orphan locked version")
	case minio.ToErrorResponse(err).Code == "PreconditionFailed":
		rep.ConditionalWrite = true
	default:
		rep.Warnings = append(rep.Warnings, "If-None-Match: * on an existing name failed with "+describe(err)+" rather than PreconditionFailed, so conditional writes are unproven")
	}
	if err := s.client.RemoveObject(ctx, s.cfg.Bucket, key, minio.RemoveObjectOptions{VersionID: info.VersionID}); err != nil {
		s.cfg.Logger.DebugContext(ctx, "s3lock: removing the conditional-write probe failed; a later check removes it", "key", key, "err", describe(err))
	}
}

// versionNote names a version in a message, if the server has versions.
func versionNote(id string) string {
	if id == "" {
		return ""
	}
	return fmt.Sprintf(" (version %s)", id)
}

// putBytes writes a small object in one PUT with its digests.
func (s *Store) putBytes(ctx context.Context, key string, body []byte, opts minio.PutObjectOptions) (minio.UploadInfo, error) {
	sha := sha256.Sum256(body)
	sum := md5.Sum(body)
	if opts.ContentType == "" {
		opts.ContentType = "application/octet-stream"
	}
	opts.UserMetadata = map[string]string{"x-amz-checksum-sha256": base64.StdEncoding.EncodeToString(sha[:])}
	return s.core.PutObject(ctx, s.cfg.Bucket, key, bytes.NewReader(body), int64(len(body)),
		base64.StdEncoding.EncodeToString(sum[:]), hex.EncodeToString(sha[:]), opts)
}

// readVersion reads one version whole; ErrNotFound if it is gone.
func (s *Store) readVersion(ctx context.Context, key, versionID string) ([]byte, error) {
	obj, _, err := s.open(ctx, key, version{id: versionID})
	if err != nil {
		return nil, err
	}
	defer obj.Close()
	return io.ReadAll(obj)
}

// removeExpiredCanaries deletes every version under the canary directory
// whose retain-until (encoded in its key) passed more than a minute ago.
// Failures (such as a credential without s3:DeleteObjectVersion) are only
// logged at debug level: a leftover canary is a few bytes.
func (s *Store) removeExpiredCanaries(ctx context.Context) {
	prefix := s.prefix + canaryDir
	now := s.cfg.Now()
	type ver struct{ key, id string }
	var expired []ver
	err := s.list(ctx, prefix, func(o minio.ObjectInfo) {
		stamp, _, _ := strings.Cut(strings.TrimPrefix(o.Key, prefix), "-")
		until, err := time.Parse(canaryTimeLayout, stamp)
		if err == nil && now.After(until.Add(time.Minute)) {
			expired = append(expired, ver{o.Key, o.VersionID})
		}
	})
	if err != nil {
		s.cfg.Logger.DebugContext(ctx, "s3lock: listing old canaries failed", "err", describe(err))
		return
	}
	removed := 0
	for _, v := range expired {
		err := s.client.RemoveObject(ctx, s.cfg.Bucket, v.key, minio.RemoveObjectOptions{VersionID: v.id})
		if err != nil {
			s.cfg.Logger.DebugContext(ctx, "s3lock: removing an expired canary failed", "key", v.key, "version", v.id, "err", describe(err))
			continue
		}
		removed++
	}
	if len(expired) > 0 {
		s.cfg.Logger.DebugContext(ctx, "s3lock: removed expired canaries", "removed", removed, "expired", len(expired))
	}
}

// isLockRefusal reports whether an error names Object Lock as the reason.
func isLockRefusal(err error) bool {
	er := minio.ToErrorResponse(err)
	if er.Code == "ObjectLocked" {
		return true
	}
	msg := strings.ToLower(er.Message)
	for _, w := range []string{"object lock", "worm", "retention", "legal hold", "locked"} {
		if strings.Contains(msg, w) {
			return true
		}
	}
	return false
}

// describe renders an S3 error as "Code: message", other errors as is.
func describe(err error) string {
	if er := minio.ToErrorResponse(err); er.Code != "" {
		return er.Code + ": " + er.Message
	}
	return err.Error()
}
