package probe

import (
	"bytes"
	"crypto"
	"errors"
	"fmt"
	"io"
	"slices"

	"gopkg.in/yaml.v3"

	"github.com/countersign/countersign/internal/api"
	"github.com/countersign/countersign/internal/keys"
	"github.com/countersign/countersign/internal/sign"
)

// ErrPolicy marks an invalid policy document or a policy that does not
// cover what is being checked.
var ErrPolicy = errors.New("probe: policy")

// AllFormats are the formats probed when a KeyPolicy lists none.
var AllFormats = []api.Format{api.FormatCMS, api.FormatJWS, api.FormatRaw}

// KeyPolicy is what every signature of one key must look like.
type KeyPolicy struct {
	// Tenant owns the key; "" means the probe's own tenant.
	Tenant string `yaml:"tenant,omitempty" json:"tenant,omitempty"`
	// Key is the key name the probe signs with.
	Key string `yaml:"key" json:"key"`
	// Algorithm is the expected key algorithm, e.g. "ecdsa-p256".
	Algorithm keys.Algorithm `yaml:"algorithm" json:"algorithm"`
	// Digest is the expected digest algorithm ("sha256", "sha384",
	// "sha512"); "" means the algorithm's default.
	Digest string `yaml:"digest,omitempty" json:"digest,omitempty"`
	// MinVersion and MaxVersion bound the key version a signature may
	// carry; 0 leaves that side open.
	MinVersion int `yaml:"min_version,omitempty" json:"min_version,omitempty"`
	MaxVersion int `yaml:"max_version,omitempty" json:"max_version,omitempty"`
	// Formats are the formats the key may sign (and the probe exercises);
	// empty means AllFormats.
	Formats []api.Format `yaml:"formats,omitempty" json:"formats,omitempty"`
}

// Hash is the expected digest algorithm.
func (k KeyPolicy) Hash() crypto.Hash {
	if k.Digest == "" {
		return k.Algorithm.Hash()
	}
	h, err := sign.HashByName(k.Digest)
	if err != nil {
		return 0 // unreachable after Validate
	}
	return h
}

// FormatList is Formats with the default applied.
func (k KeyPolicy) FormatList() []api.Format {
	if len(k.Formats) == 0 {
		return AllFormats
	}
	return k.Formats
}

// AllowsVersion reports whether v is inside [MinVersion, MaxVersion].
func (k KeyPolicy) AllowsVersion(v int) bool {
	return v >= 1 && (k.MinVersion == 0 || v >= k.MinVersion) && (k.MaxVersion == 0 || v <= k.MaxVersion)
}

// Validate checks the entry on its own.
func (k KeyPolicy) Validate() error {
	if k.Key == "" {
		return fmt.Errorf("%w: key entry without a name", ErrPolicy)
	}
	if _, err := keys.ParseAlgorithm(string(k.Algorithm)); err != nil {
		return fmt.Errorf("%w: key %q: %v", ErrPolicy, k.Key, err)
	}
	if k.Digest != "" {
		if _, err := sign.HashByName(k.Digest); err != nil {
			return fmt.Errorf("%w: key %q: %v", ErrPolicy, k.Key, err)
		}
	}
	if _, err := ExpectedAlgorithmOID(k.Algorithm, k.Hash()); err != nil {
		return fmt.Errorf("%w: key %q: %v", ErrPolicy, k.Key, err)
	}
	if k.MinVersion < 0 || k.MaxVersion < 0 || (k.MaxVersion != 0 && k.MaxVersion < k.MinVersion) {
		return fmt.Errorf("%w: key %q: version range [%d,%d]", ErrPolicy, k.Key, k.MinVersion, k.MaxVersion)
	}
	for _, f := range k.Formats {
		if !slices.Contains(AllFormats, f) {
			return fmt.Errorf("%w: key %q: unknown format %q", ErrPolicy, k.Key, f)
		}
	}
	return nil
}

// Policy holds the expectations for every probed key.
type Policy struct {
	Keys []KeyPolicy `yaml:"keys" json:"keys"`
}

// Validate checks every entry and that no key is listed twice.
func (p *Policy) Validate() error {
	if p == nil || len(p.Keys) == 0 {
		return fmt.Errorf("%w: no keys", ErrPolicy)
	}
	seen := map[[2]string]bool{}
	for _, k := range p.Keys {
		if err := k.Validate(); err != nil {
			return err
		}
		id := [2]string{k.Tenant, k.Key}
		if seen[id] {
			return fmt.Errorf("%w: key %q of tenant %q listed twice", ErrPolicy, k.Key, k.Tenant)
		}
		seen[id] = true
	}
	return nil
}

// For returns the entry of tenant's key name.
func (p *Policy) For(tenant, name string) (KeyPolicy, bool) {
	if p == nil {
		return KeyPolicy{}, false
	}
	for _, k := range p.Keys {
		if k.Tenant == tenant && k.Key == name {
			return k, true
		}
	}
	return KeyPolicy{}, false
}

// LoadPolicy reads a policy document in YAML or JSON (JSON is YAML) and
// validates it. Unknown fields are errors, so a typo cannot silently turn a
// check off.
func LoadPolicy(r io.Reader) (*Policy, error) {
	b, err := io.ReadAll(io.LimitReader(r, 1<<20))
	if err != nil {
		return nil, fmt.Errorf("probe: read policy: %w", err)
	}
	dec := yaml.NewDecoder(bytes.NewReader(b))
	dec.KnownFields(true)
	var p Policy
	if err := dec.Decode(&p); err != nil {
		return nil, fmt.Errorf("%w: parse: %v", ErrPolicy, err)
	}
	if err := p.Validate(); err != nil {
		return nil, err
	}
	return &p, nil
}

// Object identifiers stamped on signatures (RFC 5754, RFC 4055, RFC 5758,
// RFC 8410). TestExpectedOIDsMatchSign checks them against internal/sign.
const (
	oidSHA256 = "2.16.840.1.101.3.4.2.1"
	oidSHA384 = "2.16.840.1.101.3.4.2.2"
	oidSHA512 = "2.16.840.1.101.3.4.2.3"
)

// ExpectedDigestOID is the digest OID a signature over h must carry.
func ExpectedDigestOID(h crypto.Hash) (string, error) {
	switch h {
	case crypto.SHA256:
		return oidSHA256, nil
	case crypto.SHA384:
		return oidSHA384, nil
	case crypto.SHA512:
		return oidSHA512, nil
	}
	return "", fmt.Errorf("%w: no digest OID for %v", ErrPolicy, h)
}

// ExpectedAlgorithmOID is the signature algorithm OID a signature by a key
// of alg over digest h must carry (the same for every format).
func ExpectedAlgorithmOID(alg keys.Algorithm, h crypto.Hash) (string, error) {
	idx := map[crypto.Hash]int{crypto.SHA256: 0, crypto.SHA384: 1, crypto.SHA512: 2}
	i, ok := idx[h]
	if !ok {
		return "", fmt.Errorf("%w: unsupported digest %v", ErrPolicy, h)
	}
	switch alg {
	case keys.ECDSAP256, keys.ECDSAP384:
		return [...]string{"1.2.840.10045.4.3.2", "1.2.840.10045.4.3.3", "1.2.840.10045.4.3.4"}[i], nil
	case keys.RSA2048, keys.RSA3072:
		return [...]string{"1.2.840.113549.1.1.11", "1.2.840.113549.1.1.12", "1.2.840.113549.1.1.13"}[i], nil
	case keys.RSA2048PSS, keys.RSA3072PSS:
		return "1.2.840.113549.1.1.10", nil
	case keys.Ed25519:
		if h != crypto.SHA512 {
			return "", fmt.Errorf("%w: ed25519 signs over sha512 only", ErrPolicy)
		}
		return "1.3.101.112", nil
	}
	return "", fmt.Errorf("%w: unknown algorithm %q", ErrPolicy, alg)
}
