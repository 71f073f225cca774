package keys

import (
	"context"
	"crypto"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"regexp"
	"strconv"
	"time"

	"github.com/countersign/countersign/internal/auditlog"
	"github.com/countersign/countersign/internal/pki"
	"github.com/countersign/countersign/internal/store"
)

// Audit event types written by the Manager.
const (
	EventKeyCreated         = "key.created"
	EventKeyRotated         = "key.rotated"
	EventKeyImported        = "key.imported"
	EventKeyStateChanged    = "key.state_changed"
	EventKeyMaterialDeleted = "key.material_destroyed"
	EventKeysFrozen         = "keys.frozen"
	EventKeysUnfrozen       = "keys.unfrozen"
	SettingFrozen           = "keys.frozen" // store setting: "true" while frozen
	DefaultCertValidity     = 2 * 365 * 24 * time.Hour
	compromiseDetail        = "compromise_incident"
)

var (
	// ErrFrozen is returned for a key operation attempted while keys are
	// frozen (an incident is open) without a declared compromise.
	ErrFrozen = errors.New("keys: key operations are frozen")
	// ErrNoCA is returned by Create and Rotate on a Manager without a CA.
	ErrNoCA = errors.New("keys: no certificate authority configured")
	// ErrNotEnabled is returned by SignerFor for a disabled or destroyed version.
	ErrNotEnabled = errors.New("keys: key version is not enabled")
	// ErrMismatch is returned when key material, certificate and record disagree.
	ErrMismatch = errors.New("keys: key material mismatch")
	// ErrInvalidName is returned for a tenant or key name outside [A-Za-z0-9._-]{1,64}.
	ErrInvalidName = errors.New("keys: invalid name")
)

// Store is what the Manager needs from a store.Store.
type Store interface {
	PutKeyVersion(ctx context.Context, kv store.KeyVersion, ev store.AuditEvent) error
	SetKeyState(ctx context.Context, tenantID, name string, version int, state string, ev store.AuditEvent) error
	KeyVersions(ctx context.Context, tenantID, name string) ([]store.KeyVersion, error)
	Setting(ctx context.Context, name string) (string, error)
	SetSetting(ctx context.Context, name, value string, ev store.AuditEvent) error
	AppendEvents(ctx context.Context, evs []store.AuditEvent) ([]int64, error)
}

// CA is the internal certificate authority: its certificate and a signer
// for its key (held by a key provider).
type CA struct {
	Cert   *x509.Certificate
	Signer crypto.Signer
}

// ManagerConfig configures a Manager. Store and Registry are required.
type ManagerConfig struct {
	Store    Store
	Registry *Registry
	// CA issues document-signing certificates for created and rotated keys.
	// Without it Create and Rotate fail with ErrNoCA; Import, state changes
	// and the freeze still work.
	CA *CA
	// CertValidity of issued leaves (default DefaultCertValidity, never past
	// the CA's own expiry).
	CertValidity time.Duration
	// Release and Instance are stamped on audit events.
	Release, Instance string
	// Now is the clock (default time.Now).
	Now func() time.Time
	// Logger (default slog.Default()).
	Logger *slog.Logger
}

// Manager is the key lifecycle service: it creates, rotates, imports,
// disables and destroys key versions, and freezes all of that during an
// incident. Every change is committed with its audit event.
type Manager struct {
	cfg ManagerConfig
	log *slog.Logger
}

// NewManager validates cfg and returns a Manager.
func NewManager(cfg ManagerConfig) (*Manager, error) {
	if cfg.Store == nil || cfg.Registry == nil {
		return nil, errors.New("keys: manager needs a store and a registry")
	}
	if cfg.CA != nil && (cfg.CA.Cert == nil || cfg.CA.Signer == nil || !samePublicKey(cfg.CA.Cert.PublicKey, cfg.CA.Signer.Public())) {
		return nil, fmt.Errorf("%w: CA signer does not hold the CA certificate's key", ErrMismatch)
	}
	if cfg.CertValidity <= 0 {
		cfg.CertValidity = DefaultCertValidity
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	return &Manager{cfg: cfg, log: cfg.Logger}, nil
}

type compromiseKey struct{}

// WithCompromise declares a key compromise under an incident: operations
// run with the returned context proceed while keys are frozen, and their
// audit events name the incident.
func WithCompromise(ctx context.Context, incidentID string) context.Context {
	return context.WithValue(ctx, compromiseKey{}, incidentID)
}

// CompromiseFrom returns the incident declared with WithCompromise.
func CompromiseFrom(ctx context.Context) (incidentID string, ok bool) {
	id, _ := ctx.Value(compromiseKey{}).(string)
	return id, id != ""
}

// Subject is the audit subject of a key version.
func Subject(tenantID, name string, version int) string {
	return "key:" + tenantID + "/" + name + "@v" + strconv.Itoa(version)
}

var namePattern = regexp.MustCompile(`^[A-Za-z0-9._-]{1,64}$`)

func checkNames(tenantID, name string) error {
	if !namePattern.MatchString(tenantID) || !namePattern.MatchString(name) {
		return fmt.Errorf("%w: tenant %q, key %q (want [A-Za-z0-9._-]{1,64})", ErrInvalidName, tenantID, name)
	}
	return nil
}

// Create makes version 1 of a new key: generates it in the provider for
// scheme, issues its certificate from the CA and stores it enabled.
func (m *Manager) Create(ctx context.Context, tenantID, name string, alg Algorithm, scheme string, actor string) (store.KeyVersion, error) {
	if err := checkNames(tenantID, name); err != nil {
		return store.KeyVersion{}, err
	}
	if _, err := ParseAlgorithm(string(alg)); err != nil {
		return store.KeyVersion{}, err
	}
	subject := Subject(tenantID, name, 1)
	if err := m.checkFrozen(ctx, "create", subject); err != nil {
		return store.KeyVersion{}, err
	}
	switch _, err := m.cfg.Store.KeyVersions(ctx, tenantID, name); {
	case err == nil:
		return store.KeyVersion{}, fmt.Errorf("keys: create %s: key exists, rotate it instead: %w", subject, store.ErrExists)
	case !errors.Is(err, store.ErrNotFound):
		return store.KeyVersion{}, fmt.Errorf("keys: create %s: %w", subject, err)
	}
	return m.newVersion(ctx, tenantID, name, 1, alg, scheme, actor, EventKeyCreated, nil)
}

// Rotate adds the next version of a key with the algorithm and provider
// scheme of its latest version. Earlier versions keep their state: they
// still verify, and an operator disables them when ready.
func (m *Manager) Rotate(ctx context.Context, tenantID, name string, actor string) (store.KeyVersion, error) {
	return m.RotateTo(ctx, tenantID, name, "", "", actor)
}

// RotateTo is Rotate with a new algorithm and/or scheme ("" keeps the
// latest version's).
func (m *Manager) RotateTo(ctx context.Context, tenantID, name string, alg Algorithm, scheme string, actor string) (store.KeyVersion, error) {
	if err := checkNames(tenantID, name); err != nil {
		return store.KeyVersion{}, err
	}
	latest, err := m.latest(ctx, tenantID, name)
	if err != nil {
		return store.KeyVersion{}, err
	}
	next := latest.Version + 1
	if err := m.checkFrozen(ctx, "rotate", Subject(tenantID, name, next)); err != nil {
		return store.KeyVersion{}, err
	}
	if alg == "" {
		alg = Algorithm(latest.Algorithm)
	}
	if _, err := ParseAlgorithm(string(alg)); err != nil {
		return store.KeyVersion{}, err
	}
	if scheme == "" {
		if scheme, err = Scheme(latest.ProviderURI); err != nil {
			return store.KeyVersion{}, err
		}
	}
	return m.newVersion(ctx, tenantID, name, next, alg, scheme, actor, EventKeyRotated,
		map[string]any{"previous_version": latest.Version})
}

func (m *Manager) newVersion(ctx context.Context, tenantID, name string, version int, alg Algorithm, scheme, actor, evType string, extra map[string]any) (store.KeyVersion, error) {
	subject := Subject(tenantID, name, version)
	if m.cfg.CA == nil {
		return store.KeyVersion{}, fmt.Errorf("keys: %s %s: %w", evType, subject, ErrNoCA)
	}
	label := fmt.Sprintf("%s/%s/v%d", tenantID, name, version)
	uri, pub, err := m.cfg.Registry.Generate(ctx, scheme, alg, label)
	if err != nil {
		return store.KeyVersion{}, fmt.Errorf("keys: %s %s: generate: %w", evType, subject, err)
	}
	now := m.cfg.Now()
	leaf, err := pki.IssueSigningCert(m.cfg.CA.Cert, m.cfg.CA.Signer, pub,
		fmt.Sprintf("%s/%s v%d", tenantID, name, version), now, m.cfg.CertValidity)
	if err != nil {
		m.discard(ctx, uri)
		return store.KeyVersion{}, fmt.Errorf("keys: %s %s: %w", evType, subject, err)
	}
	pubPEM, err := pki.PublicKeyPEM(pub)
	if err != nil {
		m.discard(ctx, uri)
		return store.KeyVersion{}, err
	}
	kv := store.KeyVersion{TenantID: tenantID, Name: name, Version: version, Algorithm: string(alg),
		ProviderURI: uri, PublicKeyPEM: pubPEM, CertChainPEM: pki.EncodeChainPEM([]*x509.Certificate{leaf, m.cfg.CA.Cert}),
		State: store.KeyEnabled, CreatedAt: now.UTC().Truncate(time.Microsecond)}
	details := m.keyDetails(ctx, kv, pub)
	details["certificate_serial"] = leaf.SerialNumber.Text(16)
	for k, v := range extra {
		details[k] = v
	}
	ev, err := m.event(ctx, evType, actor, tenantID, subject, details)
	if err != nil {
		m.discard(ctx, uri)
		return store.KeyVersion{}, err
	}
	if err := m.cfg.Store.PutKeyVersion(ctx, kv, ev); err != nil {
		if errors.Is(err, store.ErrExists) || errors.Is(err, store.ErrKeyVersion) {
			// A concurrent create/rotate won; our key was never recorded.
			m.discard(ctx, uri)
		}
		return store.KeyVersion{}, fmt.Errorf("keys: %s %s: %w", evType, subject, err)
	}
	m.log.InfoContext(ctx, "key version stored", "event", evType, "subject", subject, "algorithm", alg,
		"provider", scheme, "public_key_sha256", details["public_key_sha256"], "actor", actor)
	return kv, nil
}

// discard deletes key material that was generated but never recorded.
func (m *Manager) discard(ctx context.Context, uri string) {
	if err := m.cfg.Registry.Destroy(ctx, uri); err != nil {
		m.log.WarnContext(ctx, "could not delete unrecorded key material", "uri", uri, "err", err)
	}
}

// Import records an externally issued certificate chain (leaf first) for a
// key that already exists in a provider, as the next version of name (1 for
// a new key). The leaf's public key must be the provider key's.
func (m *Manager) Import(ctx context.Context, tenantID, name string, alg Algorithm, providerURI, chainPEM string, actor string) (store.KeyVersion, error) {
	if err := checkNames(tenantID, name); err != nil {
		return store.KeyVersion{}, err
	}
	if _, err := ParseAlgorithm(string(alg)); err != nil {
		return store.KeyVersion{}, err
	}
	version := 1
	switch vs, err := m.cfg.Store.KeyVersions(ctx, tenantID, name); {
	case err == nil:
		version = vs[len(vs)-1].Version + 1
	case !errors.Is(err, store.ErrNotFound):
		return store.KeyVersion{}, fmt.Errorf("keys: import %s/%s: %w", tenantID, name, err)
	}
	subject := Subject(tenantID, name, version)
	if err := m.checkFrozen(ctx, "import", subject); err != nil {
		return store.KeyVersion{}, err
	}
	chain, err := pki.ParseChainPEM(chainPEM)
	if err != nil {
		return store.KeyVersion{}, fmt.Errorf("keys: import %s: %w", subject, err)
	}
	if err := pki.VerifyChainOrder(chain); err != nil {
		return store.KeyVersion{}, fmt.Errorf("keys: import %s: %w", subject, err)
	}
	leaf := chain[0]
	now := m.cfg.Now()
	if leaf.IsCA || now.After(leaf.NotAfter) || now.Before(leaf.NotBefore) {
		return store.KeyVersion{}, fmt.Errorf("keys: import %s: leaf %q is a CA or not valid now (%s .. %s)",
			subject, leaf.Subject.CommonName, leaf.NotBefore.Format(time.RFC3339), leaf.NotAfter.Format(time.RFC3339))
	}
	signer, err := m.cfg.Registry.Signer(ctx, providerURI)
	if err != nil {
		return store.KeyVersion{}, fmt.Errorf("keys: import %s: open provider key: %w", subject, err)
	}
	pub := signer.Public()
	if !samePublicKey(pub, leaf.PublicKey) {
		return store.KeyVersion{}, fmt.Errorf("%w: import %s: leaf certificate key %s is not provider key %s",
			ErrMismatch, subject, pki.Fingerprint(leaf.PublicKey), pki.Fingerprint(pub))
	}
	if !KeyMatches(alg, pub) {
		return store.KeyVersion{}, fmt.Errorf("%w: import %s: provider key %T is not a %s key", ErrMismatch, subject, pub, alg)
	}
	pubPEM, err := pki.PublicKeyPEM(pub)
	if err != nil {
		return store.KeyVersion{}, err
	}
	kv := store.KeyVersion{TenantID: tenantID, Name: name, Version: version, Algorithm: string(alg),
		ProviderURI: providerURI, PublicKeyPEM: pubPEM, CertChainPEM: pki.EncodeChainPEM(chain),
		State: store.KeyEnabled, CreatedAt: now.UTC().Truncate(time.Microsecond)}
	details := m.keyDetails(ctx, kv, pub)
	details["certificate_serial"] = leaf.SerialNumber.Text(16)
	details["certificate_issuer"] = leaf.Issuer.String()
	ev, err := m.event(ctx, EventKeyImported, actor, tenantID, subject, details)
	if err != nil {
		return store.KeyVersion{}, err
	}
	if err := m.cfg.Store.PutKeyVersion(ctx, kv, ev); err != nil {
		return store.KeyVersion{}, fmt.Errorf("keys: import %s: %w", subject, err)
	}
	m.log.InfoContext(ctx, "key version imported", "subject", subject, "algorithm", alg, "actor", actor)
	return kv, nil
}

// SetState enables, disables or destroys a key version. Destroying also
// deletes the key material when the provider is a Destroyer (the state is
// recorded first, so a failed deletion can be retried by destroying again).
func (m *Manager) SetState(ctx context.Context, tenantID, name string, version int, state string, actor string) (store.KeyVersion, error) {
	if err := checkNames(tenantID, name); err != nil {
		return store.KeyVersion{}, err
	}
	if err := store.CheckKeyState(state); err != nil {
		return store.KeyVersion{}, err
	}
	subject := Subject(tenantID, name, version)
	if err := m.checkFrozen(ctx, "set state of", subject); err != nil {
		return store.KeyVersion{}, err
	}
	kv, err := m.Version(ctx, tenantID, name, version)
	if err != nil {
		return store.KeyVersion{}, err
	}
	if err := store.CheckKeyTransition(name, version, kv.State, state); err != nil {
		return store.KeyVersion{}, fmt.Errorf("keys: %s: %w", subject, err)
	}
	if kv.State != state {
		pub, err := pki.ParsePublicKeyPEM(kv.PublicKeyPEM)
		if err != nil {
			return store.KeyVersion{}, fmt.Errorf("keys: %s: %w", subject, err)
		}
		details := m.keyDetails(ctx, kv, pub)
		details["from"], details["to"] = kv.State, state
		ev, err := m.event(ctx, EventKeyStateChanged, actor, tenantID, subject, details)
		if err != nil {
			return store.KeyVersion{}, err
		}
		if err := m.cfg.Store.SetKeyState(ctx, tenantID, name, version, state, ev); err != nil {
			return store.KeyVersion{}, fmt.Errorf("keys: %s: %w", subject, err)
		}
		m.log.InfoContext(ctx, "key state changed", "subject", subject, "from", kv.State, "to", state, "actor", actor)
		kv.State = state
	}
	if state == store.KeyDestroyed {
		m.cfg.Registry.Forget(kv.ProviderURI)
		if err := m.destroyMaterial(ctx, kv, actor); err != nil {
			return kv, err
		}
	}
	return kv, nil
}

func (m *Manager) destroyMaterial(ctx context.Context, kv store.KeyVersion, actor string) error {
	subject := Subject(kv.TenantID, kv.Name, kv.Version)
	err := m.cfg.Registry.Destroy(ctx, kv.ProviderURI)
	if errors.Is(err, ErrUnsupported) {
		m.log.WarnContext(ctx, "key provider cannot delete key material; the version is destroyed in the store only",
			"subject", subject, "err", err)
		return nil
	}
	if err != nil {
		return fmt.Errorf("keys: %s is destroyed but its key material was not deleted (destroy again to retry): %w", subject, err)
	}
	pub, err := pki.ParsePublicKeyPEM(kv.PublicKeyPEM)
	if err != nil {
		return fmt.Errorf("keys: %s: %w", subject, err)
	}
	ev, err := m.event(ctx, EventKeyMaterialDeleted, actor, kv.TenantID, subject, m.keyDetails(ctx, kv, pub))
	if err != nil {
		return err
	}
	if _, err := m.cfg.Store.AppendEvents(ctx, []store.AuditEvent{ev}); err != nil {
		return fmt.Errorf("keys: %s: key material deleted, audit event not recorded: %w", subject, err)
	}
	return nil
}

// Version returns one key version.
func (m *Manager) Version(ctx context.Context, tenantID, name string, version int) (store.KeyVersion, error) {
	vs, err := m.cfg.Store.KeyVersions(ctx, tenantID, name)
	if err != nil {
		return store.KeyVersion{}, fmt.Errorf("keys: key %s/%s: %w", tenantID, name, err)
	}
	for _, kv := range vs {
		if kv.Version == version {
			return kv, nil
		}
	}
	return store.KeyVersion{}, fmt.Errorf("keys: %s: %w", Subject(tenantID, name, version), store.ErrNotFound)
}

// Active returns the newest enabled version of a key: the one to sign with.
func (m *Manager) Active(ctx context.Context, tenantID, name string) (store.KeyVersion, error) {
	vs, err := m.cfg.Store.KeyVersions(ctx, tenantID, name)
	if err != nil {
		return store.KeyVersion{}, fmt.Errorf("keys: key %s/%s: %w", tenantID, name, err)
	}
	for i := len(vs) - 1; i >= 0; i-- {
		if vs[i].State == store.KeyEnabled {
			return vs[i], nil
		}
	}
	return store.KeyVersion{}, fmt.Errorf("keys: key %s/%s has no enabled version: %w", tenantID, name, ErrNotEnabled)
}

func (m *Manager) latest(ctx context.Context, tenantID, name string) (store.KeyVersion, error) {
	vs, err := m.cfg.Store.KeyVersions(ctx, tenantID, name)
	if err != nil {
		return store.KeyVersion{}, fmt.Errorf("keys: key %s/%s: %w", tenantID, name, err)
	}
	return vs[len(vs)-1], nil
}

// SignerFor opens the signer of an enabled key version and checks that the
// provider's key is the recorded one.
func (m *Manager) SignerFor(ctx context.Context, kv store.KeyVersion) (crypto.Signer, error) {
	subject := Subject(kv.TenantID, kv.Name, kv.Version)
	if kv.State != store.KeyEnabled {
		return nil, fmt.Errorf("keys: %s is %s: %w", subject, kv.State, ErrNotEnabled)
	}
	want, err := pki.ParsePublicKeyPEM(kv.PublicKeyPEM)
	if err != nil {
		return nil, fmt.Errorf("keys: %s: %w", subject, err)
	}
	s, err := m.cfg.Registry.Signer(ctx, kv.ProviderURI)
	if err != nil {
		return nil, fmt.Errorf("keys: %s: %w", subject, err)
	}
	if !samePublicKey(want, s.Public()) {
		return nil, fmt.Errorf("%w: %s: provider key %s is not the recorded key %s",
			ErrMismatch, subject, pki.Fingerprint(s.Public()), pki.Fingerprint(want))
	}
	return s, nil
}

// VerifyMaterial parses a version's public key and certificate chain (nil
// when none is stored). It needs no private key and works for every state.
func VerifyMaterial(kv store.KeyVersion) (crypto.PublicKey, []*x509.Certificate, error) {
	subject := Subject(kv.TenantID, kv.Name, kv.Version)
	pub, err := pki.ParsePublicKeyPEM(kv.PublicKeyPEM)
	if err != nil {
		return nil, nil, fmt.Errorf("keys: %s: %w", subject, err)
	}
	if kv.CertChainPEM == "" {
		return pub, nil, nil
	}
	chain, err := pki.ParseChainPEM(kv.CertChainPEM)
	if err != nil {
		return nil, nil, fmt.Errorf("keys: %s: %w", subject, err)
	}
	if !samePublicKey(pub, chain[0].PublicKey) {
		return nil, nil, fmt.Errorf("%w: %s: certificate key is not the recorded public key", ErrMismatch, subject)
	}
	return pub, chain, nil
}

// VerifyMaterial is the method form of the package function.
func (m *Manager) VerifyMaterial(kv store.KeyVersion) (crypto.PublicKey, []*x509.Certificate, error) {
	return VerifyMaterial(kv)
}

func (m *Manager) keyDetails(ctx context.Context, kv store.KeyVersion, pub crypto.PublicKey) map[string]any {
	scheme, _ := Scheme(kv.ProviderURI)
	d := map[string]any{
		"algorithm":         kv.Algorithm,
		"provider":          scheme,
		"provider_uri":      kv.ProviderURI,
		"version":           kv.Version,
		"public_key_sha256": pki.Fingerprint(pub),
	}
	if id, ok := CompromiseFrom(ctx); ok {
		d[compromiseDetail] = id
	}
	return d
}

func (m *Manager) event(ctx context.Context, typ, actor, tenantID, subject string, details map[string]any) (store.AuditEvent, error) {
	if actor == "" {
		return store.AuditEvent{}, fmt.Errorf("keys: %s %s: an actor is required", typ, subject)
	}
	return auditlog.Event{Type: typ, Time: m.cfg.Now(), Actor: actor, TenantID: tenantID,
		Release: m.cfg.Release, Instance: m.cfg.Instance, Subject: subject, Details: details}.Record()
}
