// Package store persists Countersign's state: tenants, API tokens, keys and
// their versions, signatures, and the append-only audit event table that the
// Merkle audit log is built on.
//
// Invariant: a signature record and its audit event are committed in the same
// transaction, and audit indexes are assigned gap-free in commit order, so the
// audit table is a total order that only grows. Backends (sqlite/, postgres/)
// share no base type; they share the conformance suite in storetest/.
package store

import (
	"context"
	"errors"
	"time"
)

// Sentinel errors. Backends wrap them with %w.
var (
	ErrNotFound = errors.New("store: not found")
	// ErrExists is returned when a unique name (tenant, key, token) is taken.
	ErrExists = errors.New("store: already exists")
	// ErrSchema is returned by Open when the database's schema version is
	// outside the range this binary can run against.
	ErrSchema = errors.New("store: schema version out of range")
)

// Key states.
const (
	KeyEnabled   = "enabled"
	KeyDisabled  = "disabled"
	KeyDestroyed = "destroyed"
)

// Tenant is an isolated customer namespace. Everything else hangs off one.
type Tenant struct {
	ID        string
	Name      string
	CreatedAt time.Time
}

// Token is an API bearer token. Only a SHA-256 of its secret is stored.
type Token struct {
	ID         string // public part, embedded in the token string
	TenantID   string
	SecretHash []byte // sha256(secret)
	CreatedAt  time.Time
	Revoked    bool
}

// KeyVersion is one version of a tenant's named signing key. The private
// key never enters the store: ProviderURI tells the key provider where it is.
type KeyVersion struct {
	TenantID     string
	Name         string
	Version      int
	Algorithm    string // keys.Algorithm value, e.g. "ecdsa-p256"
	ProviderURI  string // e.g. "soft:keys/dev/default-1.key", "pkcs11:token=cs;id=..."
	PublicKeyPEM string
	CertChainPEM string // leaf first; may be empty for raw/jws-only keys
	State        string // KeyEnabled | KeyDisabled | KeyDestroyed
	CreatedAt    time.Time
}

// Signature is a persisted signature artifact and everything needed to
// verify it later and to replay its response byte for byte.
type Signature struct {
	ID              string
	TenantID        string
	IdempotencyKey  string // unique per tenant
	RequestHash     []byte // sha256 of the canonical request; replays must match
	KeyName         string
	KeyVersion      int
	Format          string
	Algorithm       string
	AlgorithmOID    string
	DigestAlgorithm string
	DigestOID       string
	DocumentDigest  []byte
	DocumentID      string
	Signature       []byte // the artifact as returned (DER, compact JWS bytes, raw)
	Release         string
	Instance        string
	AuditIndex      int64 // set by the store on commit
	SignedAt        time.Time
}

// AuditEvent is one row of the append-only audit table, and one leaf of the
// Merkle log. Entry is the canonical JSON of the event (the leaf data); the
// other fields are indexed copies for queries.
type AuditEvent struct {
	Index    int64 // assigned by the store on commit, 0-based, gap-free
	Time     time.Time
	Type     string // e.g. "signature.created", "key.created", "keys.frozen"
	Actor    string
	TenantID string
	Release  string
	Instance string
	Subject  string
	Entry    []byte // canonical JSON; the Merkle leaf is sha256(0x00 || Entry)
}

// SignatureWrite is one signature and its audit event, committed together.
type SignatureWrite struct {
	Signature Signature
	Event     AuditEvent
}

// WriteResult is the outcome of one SignatureWrite.
type WriteResult struct {
	// AuditIndex is the index given to the event when the write committed.
	AuditIndex int64
	// Existing is set, and nothing was written, when the tenant already had a
	// signature under the same idempotency key. The caller compares
	// RequestHash to tell a replay from a conflicting reuse.
	Existing *Signature
}

// IndexedHash is a stored Merkle tree hash at a tlog storage index.
type IndexedHash struct {
	Index int64
	Hash  [32]byte
}

// Checkpoint is a signed tree head as stored: size and the signed note text.
type Checkpoint struct {
	Size      int64
	Note      []byte
	CreatedAt time.Time
}

// Store is the persistence interface every backend implements. All methods
// are safe for concurrent use. Methods that take a tenant never return
// another tenant's rows.
type Store interface {
	// SchemaVersion reports the version of the opened database.
	SchemaVersion(ctx context.Context) (int, error)
	Close() error
	// Ping checks the database is reachable (readiness).
	Ping(ctx context.Context) error

	CreateTenant(ctx context.Context, t Tenant, ev AuditEvent) error
	Tenant(ctx context.Context, id string) (Tenant, error)
	CreateToken(ctx context.Context, t Token, ev AuditEvent) error
	Token(ctx context.Context, id string) (Token, error)

	// PutKeyVersion inserts a new key version (Version must be the next one
	// for the name: 1 for a new key) together with its audit event.
	PutKeyVersion(ctx context.Context, kv KeyVersion, ev AuditEvent) error
	// SetKeyState changes a version's state together with its audit event.
	SetKeyState(ctx context.Context, tenantID, name string, version int, state string, ev AuditEvent) error
	KeyVersions(ctx context.Context, tenantID, name string) ([]KeyVersion, error) // ascending; ErrNotFound if none
	ListKeys(ctx context.Context, tenantID string) ([]KeyVersion, error)          // every version of every key
	// Settings is a small key/value table for installation-wide switches
	// (e.g. "keys.frozen"). SetSetting writes the value and its audit event.
	Setting(ctx context.Context, name string) (string, error) // "" and nil when unset
	SetSetting(ctx context.Context, name, value string, ev AuditEvent) error

	// CommitSignatures writes a batch in one transaction: for each item
	// either the signature and its event (result.AuditIndex) or, when the
	// idempotency key is taken, nothing (result.Existing). Audit indexes are
	// assigned in slice order, gap-free, serialised across processes.
	CommitSignatures(ctx context.Context, w []SignatureWrite) ([]WriteResult, error)
	SignatureByIdempotencyKey(ctx context.Context, tenantID, key string) (Signature, error)
	Signature(ctx context.Context, tenantID, id string) (Signature, error)
	// Signatures lists signatures with AuditIndex in [fromIndex, toIndex), all tenants, ascending.
	Signatures(ctx context.Context, fromIndex, toIndex int64, limit int) ([]Signature, error)

	// AppendEvents commits events that have no other row to go with.
	AppendEvents(ctx context.Context, evs []AuditEvent) ([]int64, error)
	// AuditSize is the number of committed events (the next index).
	AuditSize(ctx context.Context) (int64, error)
	// AuditEvents returns events with Index in [from, from+n), ascending.
	AuditEvents(ctx context.Context, from, n int64) ([]AuditEvent, error)

	// Merkle tree state (maintained by package auditlog).
	PutTreeHashes(ctx context.Context, treeSize int64, hashes []IndexedHash) error // records hashes and the new integrated size atomically
	TreeHashes(ctx context.Context, indexes []int64) ([][32]byte, error)           // in the order asked; ErrNotFound if any is missing
	TreeSize(ctx context.Context) (int64, error)                                   // integrated size
	PutCheckpoint(ctx context.Context, c Checkpoint) error
	LatestCheckpoint(ctx context.Context) (Checkpoint, error) // ErrNotFound if none
	// TreeHashRange returns the stored hashes at storage indexes [from, to),
	// ascending; ErrNotFound if any is missing.
	TreeHashRange(ctx context.Context, from, to int64) ([][32]byte, error)

	// Tenants lists every tenant, in creation order.
	Tenants(ctx context.Context) ([]Tenant, error)
	// SignatureByID returns a signature by its ID, whatever its tenant (IDs
	// are unique across tenants): for operators, reconciliation, evidence.
	SignatureByID(ctx context.Context, id string) (Signature, error)
	// SignaturesByRelease lists the signatures a release made with SignedAt
	// in [from, to), all tenants, ascending by ID and starting after the ID
	// after ("" for the first page); limit <= 0 means no limit.
	SignaturesByRelease(ctx context.Context, release string, from, to time.Time, limit int, after string) ([]Signature, error)

	JobStore
	JournalStore
	IncidentStore
}
