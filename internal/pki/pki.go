// Package pki is Countersign's internal certificate authority: it makes the
// self-signed CA created by `countersign init` and issues the
// document-signing leaf certificates that go into CMS signatures.
//
// Invariant: the CA private key never passes through this package as key
// material; both constructors take a crypto.Signer, so the CA key can live in
// any key provider (encrypted file or HSM). Issued leaves carry the key
// usages and extended key usages that `openssl cms -verify` accepts with its
// default (S/MIME signing) purpose check, plus id-kp-documentSigning (RFC 9336).
package pki

import (
	"crypto"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"errors"
	"fmt"
	"math/big"
	"time"
)

// ErrInvalid is returned for unusable inputs (empty names, a CA certificate
// that is not a CA, a validity that is not positive).
var ErrInvalid = errors.New("pki: invalid input")

// OIDDocumentSigning is id-kp-documentSigning (RFC 9336).
var OIDDocumentSigning = asn1.ObjectIdentifier{1, 3, 6, 1, 5, 5, 7, 3, 36}

// clockSkew backdates NotBefore so that verifiers whose clock is slightly
// behind ours accept a freshly issued certificate.
const clockSkew = 5 * time.Minute

// NewCA creates a self-signed CA certificate for the key behind signer.
// The CA may only issue end-entity certificates (path length 0).
func NewCA(signer crypto.Signer, commonName string, now time.Time, validity time.Duration) (*x509.Certificate, error) {
	if signer == nil || commonName == "" || validity <= 0 {
		return nil, fmt.Errorf("%w: NewCA needs a signer, a common name and a positive validity", ErrInvalid)
	}
	skid, err := keyID(signer.Public())
	if err != nil {
		return nil, err
	}
	serial, err := randomSerial()
	if err != nil {
		return nil, err
	}
	name := pkix.Name{CommonName: commonName, Organization: []string{"Countersign"}}
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               name,
		Issuer:                name,
		NotBefore:             now.Add(-clockSkew).UTC(),
		NotAfter:              now.Add(validity).UTC(),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign | x509.KeyUsageDigitalSignature,
		BasicConstraintsValid: true,
		IsCA:                  true,
		MaxPathLen:            0,
		MaxPathLenZero:        true,
		SubjectKeyId:          skid,
		AuthorityKeyId:        skid,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, signer.Public(), signer)
	if err != nil {
		return nil, fmt.Errorf("pki: create CA certificate: %w", err)
	}
	return x509.ParseCertificate(der)
}

// IssueSigningCert issues a document-signing certificate for pub, signed by
// the CA. subject becomes the certificate's common name.
func IssueSigningCert(ca *x509.Certificate, caSigner crypto.Signer, pub crypto.PublicKey, subject string, now time.Time, validity time.Duration) (*x509.Certificate, error) {
	if ca == nil || caSigner == nil || pub == nil || subject == "" || validity <= 0 {
		return nil, fmt.Errorf("%w: IssueSigningCert needs a CA, its signer, a public key, a subject and a positive validity", ErrInvalid)
	}
	if !ca.IsCA {
		return nil, fmt.Errorf("%w: issuer %q is not a CA certificate", ErrInvalid, ca.Subject.CommonName)
	}
	if !publicKeysEqual(ca.PublicKey, caSigner.Public()) {
		return nil, fmt.Errorf("%w: CA signer does not hold the key of certificate %q", ErrInvalid, ca.Subject.CommonName)
	}
	skid, err := keyID(pub)
	if err != nil {
		return nil, err
	}
	serial, err := randomSerial()
	if err != nil {
		return nil, err
	}
	notAfter := now.Add(validity)
	if notAfter.After(ca.NotAfter) {
		// A leaf must not outlive its issuer; verifiers reject such chains
		// once the CA expires anyway.
		notAfter = ca.NotAfter
	}
	tmpl := &x509.Certificate{
		SerialNumber: serial,
		Subject:      pkix.Name{CommonName: subject, Organization: []string{"Countersign"}},
		NotBefore:    now.Add(-clockSkew).UTC(),
		NotAfter:     notAfter.UTC(),
		// digitalSignature + contentCommitment (non-repudiation): what the
		// S/MIME signing purpose check and document signers expect.
		KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageContentCommitment,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageEmailProtection},
		UnknownExtKeyUsage:    []asn1.ObjectIdentifier{OIDDocumentSigning},
		BasicConstraintsValid: true,
		IsCA:                  false,
		SubjectKeyId:          skid,
		AuthorityKeyId:        ca.SubjectKeyId,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, pub, caSigner)
	if err != nil {
		return nil, fmt.Errorf("pki: issue certificate for %q: %w", subject, err)
	}
	return x509.ParseCertificate(der)
}

// Fingerprint is the lowercase hex SHA-256 of the key's SubjectPublicKeyInfo
// DER. It returns "" for a key x509 cannot marshal.
func Fingerprint(pub crypto.PublicKey) string {
	der, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		return ""
	}
	sum := sha256.Sum256(der)
	return fmt.Sprintf("%x", sum[:])
}

// keyID is RFC 7093 method 1: the leftmost 160 bits of the SHA-256 of the
// subjectPublicKey bit string.
func keyID(pub crypto.PublicKey) ([]byte, error) {
	der, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		return nil, fmt.Errorf("pki: marshal public key: %w", err)
	}
	var spki struct {
		Algorithm pkix.AlgorithmIdentifier
		PublicKey asn1.BitString
	}
	if _, err := asn1.Unmarshal(der, &spki); err != nil {
		return nil, fmt.Errorf("pki: parse public key: %w", err)
	}
	sum := sha256.Sum256(spki.PublicKey.Bytes)
	return sum[:20], nil
}

// randomSerial is a positive 128-bit random serial number (RFC 5280 allows
// up to 20 octets; CA/B Forum asks for at least 64 bits of entropy).
func randomSerial() (*big.Int, error) {
	limit := new(big.Int).Lsh(big.NewInt(1), 127)
	n, err := rand.Int(rand.Reader, limit)
	if err != nil {
		return nil, fmt.Errorf("pki: serial number: %w", err)
	}
	return n.Add(n, big.NewInt(1)), nil
}

// publicKeysEqual compares keys that implement Equal (all stdlib keys do).
func publicKeysEqual(a, b crypto.PublicKey) bool {
	ea, ok := a.(interface{ Equal(crypto.PublicKey) bool })
	return ok && ea.Equal(b)
}

// SamePublicKey reports whether a and b are the same public key.
func SamePublicKey(a, b crypto.PublicKey) bool { return publicKeysEqual(a, b) }
