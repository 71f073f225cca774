package soft

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"

	"golang.org/x/crypto/scrypt"
)

// FormatVersion is the version of the key file envelope.
const FormatVersion = 1

// Default scrypt parameters (N=2^15, r=8, p=1: about 32 MiB and tens of
// milliseconds per open, which is what makes offline guessing expensive).
const (
	DefaultScryptN = 1 << 15
	DefaultScryptR = 8
	DefaultScryptP = 1
)

// KDFParams are the scrypt parameters and salt recorded in a key file.
type KDFParams struct {
	Name string `json:"name"` // "scrypt"
	N    int    `json:"n"`
	R    int    `json:"r"`
	P    int    `json:"p"`
	Salt []byte `json:"salt"`
}

// envelope is the on-disk JSON of a key file. The AES-256-GCM additional
// data binds version, algorithm and public key to the ciphertext, so a file
// whose header was edited does not decrypt.
type envelope struct {
	Version    int       `json:"version"`
	Algorithm  string    `json:"alg"`
	PublicKey  []byte    `json:"public_key"` // SubjectPublicKeyInfo DER
	KDF        KDFParams `json:"kdf"`
	Cipher     string    `json:"cipher"` // "aes-256-gcm"
	Nonce      []byte    `json:"nonce"`
	Ciphertext []byte    `json:"ciphertext"` // encrypted PKCS#8 DER
}

func (e *envelope) aad() []byte {
	return fmt.Appendf(nil, "countersign-soft-key v%d alg=%s spki=%x", e.Version, e.Algorithm, e.PublicKey)
}

// maxScryptN bounds the work a (possibly hostile) key file can ask for.
const maxScryptN = 1 << 22

func (k KDFParams) key(pass Passphrase) ([]byte, error) {
	if k.Name != "scrypt" {
		return nil, fmt.Errorf("soft: unsupported KDF %q", k.Name)
	}
	if k.N < 2 || k.N > maxScryptN || k.N&(k.N-1) != 0 || k.R < 1 || k.P < 1 || k.R*k.P >= 1<<30 || len(k.Salt) < 16 {
		return nil, fmt.Errorf("soft: invalid scrypt parameters N=%d r=%d p=%d salt=%d bytes", k.N, k.R, k.P, len(k.Salt))
	}
	return scrypt.Key(pass.secret, k.Salt, k.N, k.R, k.P, 32)
}

func seal(alg string, spki, pkcs8 []byte, pass Passphrase, n, r, p int) (*envelope, error) {
	e := &envelope{Version: FormatVersion, Algorithm: alg, PublicKey: spki, Cipher: "aes-256-gcm",
		KDF: KDFParams{Name: "scrypt", N: n, R: r, P: p, Salt: make([]byte, 32)}}
	if _, err := rand.Read(e.KDF.Salt); err != nil {
		return nil, err
	}
	key, err := e.KDF.key(pass)
	if err != nil {
		return nil, err
	}
	aead, err := gcm(key)
	if err != nil {
		return nil, err
	}
	e.Nonce = make([]byte, aead.NonceSize())
	if _, err := rand.Read(e.Nonce); err != nil {
		return nil, err
	}
	e.Ciphertext = aead.Seal(nil, e.Nonce, pkcs8, e.aad())
	return e, nil
}

func (e *envelope) open(pass Passphrase) ([]byte, error) {
	if e.Version != FormatVersion {
		return nil, fmt.Errorf("soft: key file version %d not supported (want %d)", e.Version, FormatVersion)
	}
	if e.Cipher != "aes-256-gcm" {
		return nil, fmt.Errorf("soft: unsupported cipher %q", e.Cipher)
	}
	key, err := e.KDF.key(pass)
	if err != nil {
		return nil, err
	}
	aead, err := gcm(key)
	if err != nil {
		return nil, err
	}
	if len(e.Nonce) != aead.NonceSize() {
		return nil, fmt.Errorf("soft: nonce is %d bytes, want %d", len(e.Nonce), aead.NonceSize())
	}
	pt, err := aead.Open(nil, e.Nonce, e.Ciphertext, e.aad())
	if err != nil {
		// GCM cannot tell a wrong passphrase from a tampered file.
		return nil, ErrWrongPassphrase
	}
	return pt, nil
}

func gcm(key []byte) (cipher.AEAD, error) {
	block, err := aes.NewCipher(key)
	if err != nil {
		return nil, err
	}
	return cipher.NewGCM(block)
}

func parseEnvelope(b []byte) (*envelope, error) {
	var e envelope
	if err := json.Unmarshal(b, &e); err != nil {
		return nil, fmt.Errorf("soft: key file is not a key envelope: %w", err)
	}
	if e.Version == 0 {
		return nil, errors.New("soft: key file has no version")
	}
	return &e, nil
}
