package flags

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"os"
	"slices"
	"sync"
	"time"

	"github.com/open-feature/go-sdk/openfeature"
	"github.com/open-feature/go-sdk/openfeature/isolated"
)

// Names of the flags Countersign reads. The default file defines all of them.
const (
	// CMSDigest is the digest algorithm of CMS signatures: "sha256",
	// "sha384" or "sha512". Changing it changes signature metadata, which
	// drift detection watches.
	CMSDigest = "signing.cms.digest"
	// NewSigningPath (bool) routes signing through the refactored code path;
	// the playbook's isolate step turns it off.
	NewSigningPath = "signing.new-path"
	// KeysDefaultAlgorithm is the algorithm of newly created keys, one of
	// keys.Algorithms.
	KeysDefaultAlgorithm = "keys.default-algorithm"
)

// Attributes of the evaluation context that targeting rules can read with
// {"var": "<name>"}. "targetingKey" is set too (see EvalContext).
const (
	AttrTenant   = "tenant"
	AttrRelease  = "release"
	AttrInstance = "instance"
)

// DefaultPollInterval is how often Watch looks at the file by default.
const DefaultPollInterval = time.Second

// EvalContext is who a flag is evaluated for.
type EvalContext struct {
	Tenant   string
	Release  string
	Instance string
	// TargetingKey buckets fractional rollouts. Empty means Tenant, or
	// Instance when there is no tenant, so a tenant stays in one bucket
	// across instances and releases.
	TargetingKey string
}

func (e EvalContext) openfeature() openfeature.EvaluationContext {
	key := e.TargetingKey
	if key == "" {
		key = e.Tenant
	}
	if key == "" {
		key = e.Instance
	}
	return openfeature.NewEvaluationContext(key, map[string]any{
		AttrTenant: e.Tenant, AttrRelease: e.Release, AttrInstance: e.Instance,
	})
}

// Config configures a Set.
type Config struct {
	// Path is the flagd-format flag file. Required.
	Path string
	// PollInterval is how often Watch reads the file (default
	// DefaultPollInterval). The file is small; comparing its bytes catches
	// every change, including rename-based replacement.
	PollInterval time.Duration
	// Ticker makes Watch's ticks; it returns the tick channel and a stop
	// function. Default: time.NewTicker. Tests inject a channel they drive.
	Ticker func(time.Duration) (<-chan time.Time, func())
	// Now is the clock for audit events (default time.Now).
	Now func() time.Time
	// Logger (default slog.Default()).
	Logger *slog.Logger
}

// ReloadError reports a flag file that was refused; the definitions that
// were in force stay in force.
type ReloadError struct {
	Path   string
	SHA256 string // of the refused bytes; empty when the file could not be read
	Err    error
}

func (e *ReloadError) Error() string {
	if e.SHA256 == "" {
		return fmt.Sprintf("flags: reload %s: %v", e.Path, e.Err)
	}
	return fmt.Sprintf("flags: reload %s (sha256 %s): %v", e.Path, e.SHA256, e.Err)
}

func (e *ReloadError) Unwrap() error { return e.Err }

// Set is the flag file in force, evaluated through an OpenFeature client of
// its own (an isolated API, so Sets never share global SDK state).
type Set struct {
	cfg      Config
	log      *slog.Logger
	provider *Provider
	api      *openfeature.EvaluationAPI
	client   *openfeature.Client

	mu      sync.Mutex // serializes reloads; guards err and errKey
	err     *ReloadError
	errKey  string // what the current err was about, so a repeat is not re-reported
	writeMu sync.Mutex
}

// Open loads the flag file at path with default configuration.
func Open(ctx context.Context, path string) (*Set, error) {
	return New(ctx, Config{Path: path})
}

// New loads cfg.Path and returns its Set. A file that cannot be loaded is an
// error here: there are no last good definitions yet to fall back on.
func New(ctx context.Context, cfg Config) (*Set, error) {
	if cfg.Path == "" {
		return nil, errors.New("flags: Config.Path is required")
	}
	if cfg.PollInterval <= 0 {
		cfg.PollInterval = DefaultPollInterval
	}
	if cfg.Ticker == nil {
		cfg.Ticker = func(d time.Duration) (<-chan time.Time, func()) {
			t := time.NewTicker(d)
			return t.C, t.Stop
		}
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	raw, err := os.ReadFile(cfg.Path)
	if err != nil {
		return nil, fmt.Errorf("flags: %w", err)
	}
	d, err := compile(raw)
	if err != nil {
		return nil, fmt.Errorf("flags: load %s: %w", cfg.Path, err)
	}
	s := &Set{cfg: cfg, log: cfg.Logger.With("component", "flags", "path", cfg.Path), provider: newProvider(d), api: isolated.NewAPI()}
	if err := s.api.SetProviderAndWait(ctx, s.provider); err != nil {
		return nil, fmt.Errorf("flags: register provider: %w", err)
	}
	s.client = s.api.NewClient()
	s.log.InfoContext(ctx, "flags loaded", "sha256", d.SHA256(), "flags", len(d.flags))
	return s, nil
}

// Close shuts the Set's OpenFeature API down.
func (s *Set) Close(ctx context.Context) error { return s.api.Shutdown(ctx) }

// Path is the flag file this Set reads.
func (s *Set) Path() string { return s.cfg.Path }

// Client is the Set's OpenFeature client, for callers that want SDK
// features (hooks, event handlers, evaluation details).
func (s *Set) Client() *openfeature.Client { return s.client }

// Provider is the Set's OpenFeature provider.
func (s *Set) Provider() *Provider { return s.provider }

// Snapshot returns the exact bytes of the definitions in force and their
// hex SHA-256. After a refused reload these are the last good bytes, not
// what is on disk.
func (s *Set) Snapshot() (raw []byte, sha256Hex string) {
	d := s.provider.cur.Load()
	return bytes.Clone(d.raw), d.SHA256()
}

// Names lists the flags defined in force, sorted.
func (s *Set) Names() []string {
	return slices.Sorted(maps.Keys(s.provider.cur.Load().flags))
}

// Err is the error of the last reload, or nil when the file on disk is the
// one in force.
func (s *Set) Err() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.err == nil {
		return nil
	}
	return s.err
}

// Reload reads the file and, if it changed, puts it in force. A refused
// file leaves the definitions in force untouched, emits PROVIDER_STALE and
// is logged once; the same bytes are not re-reported on every poll. The
// returned error is a *ReloadError.
func (s *Set) Reload(ctx context.Context) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	raw, err := os.ReadFile(s.cfg.Path)
	if err != nil {
		return s.refuseLocked(ctx, &ReloadError{Path: s.cfg.Path, Err: err}, "read:"+err.Error())
	}
	cur := s.provider.cur.Load()
	if bytes.Equal(raw, cur.raw) {
		s.recoverLocked(ctx)
		return nil
	}
	sum := sha256.Sum256(raw)
	key := "sha256:" + hex.EncodeToString(sum[:])
	if s.err != nil && s.errKey == key {
		return s.err
	}
	d, err := compile(raw)
	if err != nil {
		return s.refuseLocked(ctx, &ReloadError{Path: s.cfg.Path, SHA256: hex.EncodeToString(sum[:]), Err: err}, key)
	}
	changed := d.changed(cur)
	s.provider.cur.Store(d)
	s.recoverLocked(ctx)
	s.log.InfoContext(ctx, "flags reloaded", "sha256", d.SHA256(), "previous_sha256", cur.SHA256(), "changed", changed)
	s.provider.emit(openfeature.ProviderConfigChange, openfeature.ProviderEventDetails{
		Message: "flag file reloaded", FlagChanges: changed,
		EventMetadata: map[string]any{"sha256": d.SHA256(), "previous_sha256": cur.SHA256()},
	})
	return nil
}

// refuseLocked records and reports a refused reload. s.mu must be held.
func (s *Set) refuseLocked(ctx context.Context, e *ReloadError, key string) error {
	if s.err != nil && s.errKey == key {
		return s.err
	}
	s.err, s.errKey = e, key
	s.log.ErrorContext(ctx, "flag file refused; last good flags stay in force",
		"err", e.Err, "refused_sha256", e.SHA256, "in_force_sha256", s.provider.cur.Load().SHA256())
	s.provider.emit(openfeature.ProviderStale, openfeature.ProviderEventDetails{
		Message: e.Error(), ErrorCode: openfeature.ParseErrorCode,
		EventMetadata: map[string]any{"refused_sha256": e.SHA256},
	})
	return e
}

// recoverLocked clears a reported error once the file on disk is in force
// again. s.mu must be held.
func (s *Set) recoverLocked(ctx context.Context) {
	if s.err == nil {
		return
	}
	s.err, s.errKey = nil, ""
	s.log.InfoContext(ctx, "flag file in force again")
	s.provider.emit(openfeature.ProviderReady, openfeature.ProviderEventDetails{Message: "flag file in force"})
}

// Watch reloads the file every poll interval until ctx is done, then
// returns nil. Reload errors are reported as Reload describes; Watch goes
// on polling, so fixing the file is enough to recover.
func (s *Set) Watch(ctx context.Context) error {
	tick, stop := s.cfg.Ticker(s.cfg.PollInterval)
	defer stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-tick:
			_ = s.Reload(ctx) // reported by Reload
		}
	}
}
