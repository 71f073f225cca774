// Package install creates and opens a Countersign installation: the data
// directory that holds its configuration, the SQLite store (or a pointer to
// PostgreSQL), the soft key files, the internal CA, the audit-log key and
// the checkpoint history kept outside the database.
//
// Invariant: no private key material and no secret is ever written to the
// configuration file; it holds provider URIs and paths only.
package install

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"time"

	"github.com/countersign/countersign/internal/auditlog"
	"github.com/countersign/countersign/internal/auth"
	"github.com/countersign/countersign/internal/keys"
	"github.com/countersign/countersign/internal/keys/pkcs11"
	"github.com/countersign/countersign/internal/keys/soft"
	"github.com/countersign/countersign/internal/pki"
	"github.com/countersign/countersign/internal/store"
	"github.com/countersign/countersign/internal/store/db"

	"golang.org/x/mod/sumdb/note"
)

// ConfigFile is the name of the installation file in the data directory.
const ConfigFile = "countersign.json"

// PassphraseEnv names the environment variable holding the soft-key
// passphrase.
const PassphraseEnv = "COUNTERSIGN_KEY_PASSPHRASE"

// Config is the installation file. Paths are relative to the data dir.
type Config struct {
	Version        int    `json:"version"`
	InstallationID string `json:"installation_id"`
	// Origin is the audit log's checkpoint origin line.
	Origin string `json:"origin"`
	// Store is the store URL (sqlite:countersign.db or postgres://...).
	Store string `json:"store"`
	// SoftKeyDir holds encrypted key files.
	SoftKeyDir string `json:"soft_key_dir"`
	// PassphraseFile, when set (init --dev only), holds the soft-key
	// passphrase; production installs take it from $COUNTERSIGN_KEY_PASSPHRASE
	// or --passphrase-file.
	PassphraseFile string `json:"passphrase_file,omitempty"`
	CAKey          string `json:"ca_key"`
	CACert         string `json:"ca_cert"`
	LogKey         string `json:"log_key"`
	LogVerifierKey string `json:"log_verifier_key"`
	// CheckpointHistory is the append-only file of every checkpoint signed
	// (fork protection).
	CheckpointHistory string        `json:"checkpoint_history"`
	PKCS11            *PKCS11Config `json:"pkcs11,omitempty"`
	Dev               bool          `json:"dev,omitempty"`
}

// PKCS11Config configures the pkcs11: provider. The PIN lives in PINFile.
type PKCS11Config struct {
	Module  string `json:"module"`
	Token   string `json:"token"`
	PINFile string `json:"pin_file"`
}

// Options are the choices of Init.
type Options struct {
	// Store URL; default sqlite:countersign.db inside the data dir.
	Store string
	// Dev creates tenant "dev" with a token in <data>/dev-token, a signing
	// key "default" (ecdsa-p256), and a random soft-key passphrase in
	// <data>/passphrase when none is given.
	Dev bool
	// Passphrase for soft keys; empty means from $COUNTERSIGN_KEY_PASSPHRASE
	// (or a generated one with Dev).
	Passphrase     soft.Passphrase
	PassphraseFile string
	PKCS11         *PKCS11Config
	// ScryptN overrides the soft-key KDF cost (tests use a small one).
	ScryptN int
	Now     func() time.Time
	Logger  *slog.Logger
}

// Made is what Init created, for printing.
type Made struct {
	Dir, Store, CACert, Origin, VerifierKey string
	Tenant, TokenFile, Key, Algorithm       string
	PassphraseFile                          string
}

var errExists = errors.New("install: data directory already initialised")

// Init creates a new installation in dir (created if missing; refused if it
// already holds one).
func Init(ctx context.Context, dir string, o Options) (*Made, error) {
	now := o.Now
	if now == nil {
		now = time.Now
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("install: %w", err)
	}
	if _, err := os.Stat(filepath.Join(dir, ConfigFile)); err == nil {
		return nil, fmt.Errorf("%w: %s", errExists, dir)
	}
	var idb [8]byte
	rand.Read(idb[:])
	cfg := Config{
		Version:           1,
		InstallationID:    hex.EncodeToString(idb[:]),
		Store:             o.Store,
		SoftKeyDir:        "keys",
		CACert:            "ca.pem",
		CheckpointHistory: filepath.Join("audit", "checkpoints.log"),
		PKCS11:            o.PKCS11,
		Dev:               o.Dev,
	}
	cfg.Origin = "countersign.dev/" + cfg.InstallationID
	if cfg.Store == "" {
		cfg.Store = "sqlite:countersign.db"
	}
	pass := o.Passphrase
	switch {
	case !pass.Empty():
	case o.PassphraseFile != "":
		p, err := soft.PassphraseFromFile(o.PassphraseFile)
		if err != nil {
			return nil, err
		}
		pass = p
	case os.Getenv(PassphraseEnv) != "":
		p, err := soft.PassphraseFromEnv(PassphraseEnv)
		if err != nil {
			return nil, err
		}
		pass = p
	case o.Dev:
		var b [24]byte
		rand.Read(b[:])
		secret := hex.EncodeToString(b[:])
		cfg.PassphraseFile = "passphrase"
		if err := os.WriteFile(filepath.Join(dir, cfg.PassphraseFile), []byte(secret+"\n"), 0o600); err != nil {
			return nil, fmt.Errorf("install: %w", err)
		}
		pass = soft.NewPassphrase([]byte(secret))
	default:
		return nil, fmt.Errorf("install: no soft-key passphrase: set $%s, give --passphrase-file, or use --dev", PassphraseEnv)
	}
	for _, sub := range []string{cfg.SoftKeyDir, "audit"} {
		if err := os.MkdirAll(filepath.Join(dir, sub), 0o700); err != nil {
			return nil, fmt.Errorf("install: %w", err)
		}
	}
	reg, err := registry(dir, &cfg, pass, o.ScryptN)
	if err != nil {
		return nil, err
	}
	defer reg.Close()

	caURI, ca, err := keys.CreateCA(ctx, reg, soft.Scheme, keys.ECDSAP384, "Countersign internal CA "+cfg.InstallationID, now(), 10*365*24*time.Hour)
	if err != nil {
		return nil, err
	}
	cfg.CAKey = caURI
	if err := os.WriteFile(filepath.Join(dir, cfg.CACert), []byte(pki.EncodeChainPEM([]*x509.Certificate{ca.Cert})), 0o644); err != nil {
		return nil, fmt.Errorf("install: %w", err)
	}
	logURI, logPub, err := reg.Generate(ctx, soft.Scheme, keys.Ed25519, "audit-log-key")
	if err != nil {
		return nil, fmt.Errorf("install: audit log key: %w", err)
	}
	cfg.LogKey = logURI
	if cfg.LogVerifierKey, err = auditlog.VerifierKey(cfg.Origin, logPub.(ed25519.PublicKey)); err != nil {
		return nil, err
	}
	if err := writeConfig(dir, &cfg); err != nil {
		return nil, err
	}
	if err := os.WriteFile(filepath.Join(dir, "log.vkey"), []byte(cfg.LogVerifierKey+"\n"), 0o644); err != nil {
		return nil, fmt.Errorf("install: %w", err)
	}

	made := &Made{Dir: dir, Store: cfg.Store, CACert: filepath.Join(dir, cfg.CACert), Origin: cfg.Origin, VerifierKey: cfg.LogVerifierKey}
	if cfg.PassphraseFile != "" {
		made.PassphraseFile = filepath.Join(dir, cfg.PassphraseFile)
	}
	inst, err := open(ctx, dir, &cfg, pass, OpenOptions{Migrate: true, ScryptN: o.ScryptN, Logger: o.Logger, Now: now})
	if err != nil {
		return nil, err
	}
	defer inst.Close()
	if o.Dev {
		tok, err := inst.CreateTenant(ctx, "dev", "init")
		if err != nil {
			return nil, err
		}
		made.Tenant = "dev"
		made.TokenFile = filepath.Join(dir, "dev-token")
		if err := os.WriteFile(made.TokenFile, []byte(string(tok)+"\n"), 0o600); err != nil {
			return nil, fmt.Errorf("install: %w", err)
		}
		kv, err := inst.Keys.Create(ctx, "dev", "default", keys.ECDSAP256, soft.Scheme, "init")
		if err != nil {
			return nil, err
		}
		made.Key, made.Algorithm = kv.Name, kv.Algorithm
	}
	return made, nil
}

func writeConfig(dir string, cfg *Config) error {
	b, err := json.MarshalIndent(cfg, "", "  ")
	if err != nil {
		return err
	}
	tmp := filepath.Join(dir, ConfigFile+".tmp")
	if err := os.WriteFile(tmp, append(b, '\n'), 0o600); err != nil {
		return fmt.Errorf("install: %w", err)
	}
	return os.Rename(tmp, filepath.Join(dir, ConfigFile))
}

// registry builds the key provider registry of an installation.
func registry(dir string, cfg *Config, pass soft.Passphrase, scryptN int) (*keys.Registry, error) {
	reg := keys.NewRegistry()
	var opts []soft.Option
	if scryptN > 0 {
		opts = append(opts, soft.WithScrypt(scryptN, 8, 1))
	}
	sp, err := soft.New(filepath.Join(dir, cfg.SoftKeyDir), pass, opts...)
	if err != nil {
		return nil, err
	}
	if err := reg.Register(soft.Scheme, sp); err != nil {
		return nil, err
	}
	if cfg.PKCS11 != nil {
		pinFile := cfg.PKCS11.PINFile
		if pinFile != "" && !filepath.IsAbs(pinFile) {
			pinFile = filepath.Join(dir, pinFile)
		}
		hp, err := pkcs11.New(pkcs11.Config{ModulePath: cfg.PKCS11.Module, TokenLabel: cfg.PKCS11.Token, PINFile: pinFile})
		if err != nil {
			reg.Close()
			return nil, err
		}
		if err := reg.Register("pkcs11", hp); err != nil {
			reg.Close()
			return nil, err
		}
	}
	return reg, nil
}

// OpenOptions tune Open.
type OpenOptions struct {
	// Migrate applies pending store migrations.
	Migrate bool
	// SchemaMin/SchemaMax override the binary's supported schema range
	// (a release declares its own).
	SchemaMin, SchemaMax int
	// ExtraMigrations follow the binary's own (drills only).
	ExtraMigrations []store.Migration
	// StoreURL overrides the configured store.
	StoreURL string
	// Passphrase overrides the passphrase source.
	Passphrase soft.Passphrase
	// Release and Instance stamp audit events written through this handle.
	Release, Instance string
	ScryptN           int
	Logger            *slog.Logger
	Now               func() time.Time
}

// Installation is an opened data directory.
type Installation struct {
	Dir      string
	Config   Config
	Store    store.Store
	Registry *keys.Registry
	Keys     *keys.Manager
	CA       *keys.CA
	now      func() time.Time
	release  string
	instance string
	storeURL string
}

// StoreURL is the URL the store was opened with (the configured one or
// OpenOptions.StoreURL; relative SQLite paths made absolute). It may hold
// a password: never log it as is.
func (in *Installation) StoreURL() string { return in.storeURL }

// OpenStore opens only the store of the installation in dir: no keys, no
// passphrase (migrations and read-only tools need nothing more).
func OpenStore(ctx context.Context, dir string, o OpenOptions) (store.Store, error) {
	b, err := os.ReadFile(filepath.Join(dir, ConfigFile))
	if errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("install: %s is not a Countersign data directory (run `countersign init --data %s` first)", dir, dir)
	}
	if err != nil {
		return nil, fmt.Errorf("install: %w", err)
	}
	var cfg Config
	if err := json.Unmarshal(b, &cfg); err != nil {
		return nil, fmt.Errorf("install: %s: %w", ConfigFile, err)
	}
	url := cfg.Store
	if o.StoreURL != "" {
		url = o.StoreURL
	}
	url = storePath(dir, url)
	if kind, path, err := db.Parse(url); err == nil && kind == db.KindSQLite && !o.Migrate {
		// Without migrations, opening a missing database could only fail the
		// schema check, after leaving an empty file behind.
		if _, err := os.Stat(path); err != nil {
			return nil, fmt.Errorf("install: open store: %w", err)
		}
	}
	return db.Open(ctx, url, store.Options{Migrate: o.Migrate, SchemaMin: o.SchemaMin, SchemaMax: o.SchemaMax, Extra: o.ExtraMigrations, Logger: o.Logger})
}

// Open opens the installation in dir.
func Open(ctx context.Context, dir string, o OpenOptions) (*Installation, error) {
	b, err := os.ReadFile(filepath.Join(dir, ConfigFile))
	if errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("install: %s is not a Countersign data directory (run `countersign init --data %s` first)", dir, dir)
	}
	if err != nil {
		return nil, fmt.Errorf("install: %w", err)
	}
	var cfg Config
	if err := json.Unmarshal(b, &cfg); err != nil {
		return nil, fmt.Errorf("install: %s: %w", ConfigFile, err)
	}
	pass := o.Passphrase
	if pass.Empty() {
		if pass, err = passphrase(dir, &cfg); err != nil {
			return nil, err
		}
	}
	return open(ctx, dir, &cfg, pass, o)
}

func passphrase(dir string, cfg *Config) (soft.Passphrase, error) {
	if os.Getenv(PassphraseEnv) != "" {
		return soft.PassphraseFromEnv(PassphraseEnv)
	}
	if cfg.PassphraseFile != "" {
		return soft.PassphraseFromFile(filepath.Join(dir, cfg.PassphraseFile))
	}
	return soft.Passphrase{}, fmt.Errorf("install: no soft-key passphrase: set $%s", PassphraseEnv)
}

func open(ctx context.Context, dir string, cfg *Config, pass soft.Passphrase, o OpenOptions) (*Installation, error) {
	now := o.Now
	if now == nil {
		now = time.Now
	}
	url := cfg.Store
	if o.StoreURL != "" {
		url = o.StoreURL
	}
	url = storePath(dir, url)
	st, err := db.Open(ctx, url, store.Options{Migrate: o.Migrate, SchemaMin: o.SchemaMin, SchemaMax: o.SchemaMax, Extra: o.ExtraMigrations, Logger: o.Logger})
	if err != nil {
		return nil, err
	}
	reg, err := registry(dir, cfg, pass, o.ScryptN)
	if err != nil {
		st.Close()
		return nil, err
	}
	caPEM, err := os.ReadFile(filepath.Join(dir, cfg.CACert))
	if err != nil {
		st.Close()
		reg.Close()
		return nil, fmt.Errorf("install: CA certificate: %w", err)
	}
	ca, err := keys.OpenCA(ctx, reg, cfg.CAKey, string(caPEM))
	if err != nil {
		st.Close()
		reg.Close()
		return nil, err
	}
	mgr, err := keys.NewManager(keys.ManagerConfig{Store: st, Registry: reg, CA: ca, Release: o.Release, Instance: o.Instance, Now: now, Logger: o.Logger})
	if err != nil {
		st.Close()
		reg.Close()
		return nil, err
	}
	return &Installation{Dir: dir, Config: *cfg, Store: st, Registry: reg, Keys: mgr, CA: ca, now: now, release: o.Release, instance: o.Instance, storeURL: url}, nil
}

// storePath makes a relative sqlite path relative to the data dir.
func storePath(dir, url string) string {
	kind, target, err := db.Parse(url)
	if err != nil || kind != db.KindSQLite || filepath.IsAbs(target) {
		return url
	}
	return "sqlite:" + filepath.Join(dir, target)
}

// NoteSigner opens the audit log key as a checkpoint signer.
func (in *Installation) NoteSigner(ctx context.Context) (note.Signer, error) {
	s, err := in.Registry.Signer(ctx, in.Config.LogKey)
	if err != nil {
		return nil, fmt.Errorf("install: audit log key: %w", err)
	}
	return auditlog.NewNoteSigner(in.Config.Origin, s)
}

// HistoryPath is the absolute path of the checkpoint history.
func (in *Installation) HistoryPath() string {
	return filepath.Join(in.Dir, in.Config.CheckpointHistory)
}

// CreateTenant creates a tenant with one API token and returns the token.
func (in *Installation) CreateTenant(ctx context.Context, id, actor string) (auth.Secret, error) {
	now := in.now().UTC()
	ev, err := auditlog.Event{Type: "tenant.created", Time: now, Actor: actor, TenantID: id, Release: in.release, Instance: in.instance, Subject: "tenant:" + id}.Record()
	if err != nil {
		return "", err
	}
	if err := in.Store.CreateTenant(ctx, store.Tenant{ID: id, Name: id, CreatedAt: now}, ev); err != nil {
		return "", fmt.Errorf("install: create tenant %q: %w", id, err)
	}
	return in.CreateToken(ctx, id, actor)
}

// CreateToken mints a new API token for a tenant.
func (in *Installation) CreateToken(ctx context.Context, tenant, actor string) (auth.Secret, error) {
	now := in.now().UTC()
	secret, row, err := auth.Mint(tenant, now)
	if err != nil {
		return "", err
	}
	ev, err := auditlog.Event{Type: "token.created", Time: now, Actor: actor, TenantID: tenant, Release: in.release, Instance: in.instance,
		Subject: "token:" + row.ID}.Record()
	if err != nil {
		return "", err
	}
	if err := in.Store.CreateToken(ctx, row, ev); err != nil {
		return "", fmt.Errorf("install: create token: %w", err)
	}
	return secret, nil
}

// Close releases the store and the key providers.
func (in *Installation) Close() error {
	return errors.Join(in.Store.Close(), in.Registry.Close())
}
