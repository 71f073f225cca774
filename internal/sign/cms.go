package sign

// CMS SignedData is encoded here with encoding/asn1 rather than with
// github.com/digitorus/pkcs7's SignedData builder, because that builder
// cannot express three things Countersign needs:
//   - the signing-time attribute is always time.Now() (no injected clock,
//     so replays and tests cannot reproduce an artifact's time);
//   - the message-digest is always computed from the content (no
//     digest-only signing);
//   - the SignerInfo signature algorithm is derived from the key type, so
//     RSASSA-PSS (id-RSASSA-PSS with explicit parameters) cannot be emitted
//     and its Verify rejects PSS.
// The structures below are the RFC 5652 subset we emit and accept: one
// SignerInfo identified by IssuerAndSerialNumber, detached id-data content,
// signed attributes. digitorus/pkcs7 remains the independent parser the
// tests cross-check our output with.

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/rsa"
	_ "crypto/sha1" // registers crypto.SHA1: SHA-1 artifacts are verified to report them as drift
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"fmt"
	"math/big"
	"slices"
	"time"

	"github.com/countersign/countersign/internal/keys"
)

var (
	oidData          = asn1.ObjectIdentifier{1, 2, 840, 113549, 1, 7, 1}
	oidSignedData    = asn1.ObjectIdentifier{1, 2, 840, 113549, 1, 7, 2}
	oidContentType   = asn1.ObjectIdentifier{1, 2, 840, 113549, 1, 9, 3}
	oidMessageDigest = asn1.ObjectIdentifier{1, 2, 840, 113549, 1, 9, 4}
	oidSigningTime   = asn1.ObjectIdentifier{1, 2, 840, 113549, 1, 9, 5}
	oidRSAEncryption = asn1.ObjectIdentifier{1, 2, 840, 113549, 1, 1, 1}
	oidSHA1          = asn1.ObjectIdentifier{1, 3, 14, 3, 2, 26}
)

// contentInfo is ContentInfo. encoding/asn1 ignores tag parameters when it
// marshals a RawValue, so when building, Content holds the [0] wrapper
// itself; when parsing, "explicit" strips it.
type contentInfo struct {
	ContentType asn1.ObjectIdentifier
	Content     asn1.RawValue `asn1:"explicit,tag:0"`
}

type signedData struct {
	Version          int
	DigestAlgorithms []pkix.AlgorithmIdentifier `asn1:"set"`
	EncapContentInfo encapContentInfo
	Certificates     asn1.RawValue `asn1:"optional,tag:0"`
	CRLs             asn1.RawValue `asn1:"optional,tag:1"`
	SignerInfos      []signerInfo  `asn1:"set"`
}

type encapContentInfo struct {
	EContentType asn1.ObjectIdentifier
	EContent     asn1.RawValue `asn1:"optional,explicit,tag:0"`
}

type signerInfo struct {
	Version            int
	SID                asn1.RawValue
	DigestAlgorithm    pkix.AlgorithmIdentifier
	SignedAttrs        asn1.RawValue `asn1:"optional,tag:0"`
	SignatureAlgorithm pkix.AlgorithmIdentifier
	Signature          []byte
	UnsignedAttrs      asn1.RawValue `asn1:"optional,tag:1"`
}

type issuerAndSerial struct {
	Issuer asn1.RawValue
	Serial *big.Int
}

type attribute struct {
	Type   asn1.ObjectIdentifier
	Values asn1.RawValue `asn1:"set"`
}

func signCMS(k Key, h crypto.Hash, digest []byte, signingTime time.Time) (Result, error) {
	if len(k.Chain) == 0 || k.Chain[0] == nil {
		return Result{}, fmt.Errorf("%w: cms needs the certificate chain", ErrInput)
	}
	leaf := k.Chain[0]
	if eq, ok := leaf.PublicKey.(interface{ Equal(crypto.PublicKey) bool }); !ok || !eq.Equal(k.Signer.Public()) {
		return Result{}, fmt.Errorf("%w: leaf certificate %q does not hold the signer's public key", ErrInput, leaf.Subject)
	}
	if signingTime.IsZero() {
		return Result{}, fmt.Errorf("%w: cms needs a signing time", ErrInput)
	}
	sigAlg, err := signatureAlgID(k.Algorithm, h)
	if err != nil {
		return Result{}, err
	}
	attrs, err := signedAttributes(digest, signingTime)
	if err != nil {
		return Result{}, err
	}
	toSign := setOf(attrs)
	var sig []byte
	if k.Algorithm == keys.Ed25519 {
		// RFC 8419 §3: pure Ed25519 over the DER signed attributes.
		sig, err = k.Signer.Sign(rand.Reader, toSign, crypto.Hash(0))
	} else {
		sig, err = k.Signer.Sign(rand.Reader, hashOf(h, toSign), signerOpts(k.Algorithm, h))
	}
	if err != nil {
		return Result{}, fmt.Errorf("sign: %s signer: %w", k.Algorithm, err)
	}
	sid, err := asn1.Marshal(issuerAndSerial{Issuer: asn1.RawValue{FullBytes: leaf.RawIssuer}, Serial: leaf.SerialNumber})
	if err != nil {
		return Result{}, fmt.Errorf("sign: cms signer identifier: %w", err)
	}
	var certs []byte
	for _, c := range k.Chain {
		if c != nil {
			certs = append(certs, c.Raw...)
		}
	}
	sd := signedData{
		Version:          1,
		DigestAlgorithms: []pkix.AlgorithmIdentifier{hashAlgID(h)},
		EncapContentInfo: encapContentInfo{EContentType: oidData},
		Certificates:     asn1.RawValue{Class: asn1.ClassContextSpecific, Tag: 0, IsCompound: true, Bytes: certs},
		SignerInfos: []signerInfo{{
			Version:            1,
			SID:                asn1.RawValue{FullBytes: sid},
			DigestAlgorithm:    hashAlgID(h),
			SignedAttrs:        asn1.RawValue{Class: asn1.ClassContextSpecific, Tag: 0, IsCompound: true, Bytes: attrs},
			SignatureAlgorithm: sigAlg,
			Signature:          sig,
		}},
	}
	inner, err := asn1.Marshal(sd)
	if err != nil {
		return Result{}, fmt.Errorf("sign: cms encode: %w", err)
	}
	der, err := asn1.Marshal(contentInfo{
		ContentType: oidSignedData,
		Content:     asn1.RawValue{Class: asn1.ClassContextSpecific, Tag: 0, IsCompound: true, Bytes: inner},
	})
	if err != nil {
		return Result{}, fmt.Errorf("sign: cms encode: %w", err)
	}
	return Result{Artifact: der, AlgorithmOID: sigAlg.Algorithm.String()}, nil
}

// signedAttributes returns the DER contents (without the SET header) of
// the signed attributes content-type, message-digest and signing-time,
// sorted as DER requires for a SET OF.
func signedAttributes(digest []byte, signingTime time.Time) ([]byte, error) {
	// asn1.Marshal writes UTCTime for 1950-2049 and GeneralizedTime
	// otherwise, as RFC 5652 §11.3 requires.
	st := signingTime.UTC().Truncate(time.Second)
	values := []struct {
		oid asn1.ObjectIdentifier
		v   any
	}{{oidContentType, oidData}, {oidMessageDigest, digest}, {oidSigningTime, st}}
	encoded := make([][]byte, 0, len(values))
	for _, a := range values {
		v, err := asn1.Marshal(a.v)
		if err != nil {
			return nil, fmt.Errorf("sign: cms attribute %s: %w", a.oid, err)
		}
		e, err := asn1.Marshal(attribute{Type: a.oid, Values: asn1.RawValue{Tag: asn1.TagSet, IsCompound: true, Bytes: v}})
		if err != nil {
			return nil, fmt.Errorf("sign: cms attribute %s: %w", a.oid, err)
		}
		encoded = append(encoded, e)
	}
	slices.SortFunc(encoded, bytes.Compare)
	return bytes.Join(encoded, nil), nil
}

// setOf wraps DER contents in a universal SET header: the encoding the
// signature covers (RFC 5652 §5.4).
func setOf(contents []byte) []byte {
	b, _ := asn1.Marshal(asn1.RawValue{Tag: asn1.TagSet, IsCompound: true, Bytes: contents}) // cannot fail for a RawValue
	return b
}

// cmsSigner is what a SignerInfo declares and contains, parsed.
type cmsSigner struct {
	cert       *x509.Certificate
	certs      []*x509.Certificate
	digestAlgs []asn1.ObjectIdentifier // SignedData.digestAlgorithms
	si         signerInfo
	signed     []byte // the SET OF signed attributes, as signed
	msgDigest  []byte
	sigTime    time.Time
}

func verifyCMS(der []byte, in Input, h crypto.Hash, digest []byte, pub crypto.PublicKey, vk VerifyKey) error {
	if _, err := signatureAlgID(vk.Algorithm, h); err != nil {
		return err
	}
	s, err := parseCMS(der)
	if err != nil {
		return err
	}
	if pub == nil {
		pub = s.cert.PublicKey
		if err := checkKey(pub, vk.Algorithm); err != nil {
			return &AlgorithmMismatchError{Format: "cms", Field: "key", Want: string(vk.Algorithm), Got: fmt.Sprintf("%T", pub)}
		}
	} else if eq, ok := s.cert.PublicKey.(interface{ Equal(crypto.PublicKey) bool }); !ok || !eq.Equal(pub) {
		return fmt.Errorf("%w: cms signer certificate %q holds another key", ErrInvalidSignature, s.cert.Subject)
	}

	// First check the signature under the parameters the artifact declares:
	// a genuine signature with other parameters is drift, not forgery.
	dh, known := declaredHash(s.si.DigestAlgorithm.Algorithm)
	if !known {
		return &AlgorithmMismatchError{Format: "cms", Field: "digest", Want: hashOID(h).String(), Got: s.si.DigestAlgorithm.Algorithm.String()}
	}
	if !slices.ContainsFunc(s.digestAlgs, func(o asn1.ObjectIdentifier) bool { return o.Equal(s.si.DigestAlgorithm.Algorithm) }) {
		return malformed("cms", "signer digest algorithm not listed in SignedData.digestAlgorithms", nil)
	}
	if !verifyDeclared(pub, s.si.SignatureAlgorithm, dh, s.signed, s.si.Signature) {
		return fmt.Errorf("%w: cms signature does not verify", ErrInvalidSignature)
	}
	if dh != h {
		if in.Digest == nil && !bytes.Equal(s.msgDigest, hashOf(dh, in.Document)) {
			return fmt.Errorf("%w: cms message-digest differs from the document's %s digest", ErrInvalidSignature, declaredHashName(dh))
		}
		return &AlgorithmMismatchError{Format: "cms", Field: "digest", Want: HashName(h), Got: declaredHashName(dh)}
	}
	if !bytes.Equal(s.msgDigest, digest) {
		return fmt.Errorf("%w: cms message-digest differs from the document's %s digest", ErrInvalidSignature, HashName(h))
	}
	if err := checkDeclaredAlg(s.si.SignatureAlgorithm, vk.Algorithm, h); err != nil {
		return err
	}
	if vk.Roots != nil {
		inter := x509.NewCertPool()
		for _, c := range append(s.certs, vk.Chain...) {
			if c != nil && c != s.cert {
				inter.AddCert(c)
			}
		}
		at := s.sigTime
		if at.IsZero() {
			return fmt.Errorf("%w: cms has no signing-time to check the chain at", ErrUntrusted)
		}
		if _, err := s.cert.Verify(x509.VerifyOptions{Roots: vk.Roots, Intermediates: inter, CurrentTime: at, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny}}); err != nil {
			return fmt.Errorf("%w: %v", ErrUntrusted, err)
		}
	}
	return nil
}

func parseCMS(der []byte) (*cmsSigner, error) {
	var ci contentInfo
	if rest, err := asn1.Unmarshal(der, &ci); err != nil || len(rest) != 0 {
		return nil, malformed("cms", "ContentInfo", err)
	}
	if !ci.ContentType.Equal(oidSignedData) {
		return nil, malformed("cms", "content type "+ci.ContentType.String()+" is not signedData", nil)
	}
	var sd signedData
	if rest, err := asn1.Unmarshal(ci.Content.Bytes, &sd); err != nil || len(rest) != 0 {
		return nil, malformed("cms", "SignedData", err)
	}
	if !sd.EncapContentInfo.EContentType.Equal(oidData) || len(sd.EncapContentInfo.EContent.FullBytes) != 0 {
		return nil, malformed("cms", "not a detached signature over id-data", nil)
	}
	if len(sd.SignerInfos) != 1 {
		return nil, malformed("cms", fmt.Sprintf("%d signer infos, want 1", len(sd.SignerInfos)), nil)
	}
	s := &cmsSigner{si: sd.SignerInfos[0]}
	for _, a := range sd.DigestAlgorithms {
		s.digestAlgs = append(s.digestAlgs, a.Algorithm)
	}
	certs, err := x509.ParseCertificates(sd.Certificates.Bytes)
	if err != nil {
		return nil, malformed("cms", "certificates", err)
	}
	s.certs = certs
	var ias issuerAndSerial
	if rest, err := asn1.Unmarshal(s.si.SID.FullBytes, &ias); err != nil || len(rest) != 0 || ias.Serial == nil {
		return nil, malformed("cms", "signer identifier is not IssuerAndSerialNumber", err)
	}
	for _, c := range certs {
		if c.SerialNumber.Cmp(ias.Serial) == 0 && bytes.Equal(c.RawIssuer, ias.Issuer.FullBytes) {
			s.cert = c
			break
		}
	}
	if s.cert == nil {
		return nil, malformed("cms", "no certificate for the signer", nil)
	}
	if len(s.si.SignedAttrs.Bytes) == 0 {
		return nil, malformed("cms", "no signed attributes", nil)
	}
	s.signed = setOf(s.si.SignedAttrs.Bytes)
	var attrs []attribute
	if rest, err := asn1.UnmarshalWithParams(s.signed, &attrs, "set"); err != nil || len(rest) != 0 {
		return nil, malformed("cms", "signed attributes", err)
	}
	seen := map[string]bool{}
	var contentType asn1.ObjectIdentifier
	for _, a := range attrs {
		if seen[a.Type.String()] {
			return nil, malformed("cms", "repeated attribute "+a.Type.String(), nil)
		}
		seen[a.Type.String()] = true
		var dst any
		switch {
		case a.Type.Equal(oidContentType):
			dst = &contentType
		case a.Type.Equal(oidMessageDigest):
			dst = &s.msgDigest
		case a.Type.Equal(oidSigningTime):
			dst = &s.sigTime
		default:
			continue
		}
		// Each of these attributes has exactly one value (RFC 5652 §11).
		if rest, err := asn1.Unmarshal(a.Values.Bytes, dst); err != nil || len(rest) != 0 {
			return nil, malformed("cms", "attribute "+a.Type.String(), err)
		}
	}
	if !contentType.Equal(oidData) || s.msgDigest == nil {
		return nil, malformed("cms", "content-type or message-digest attribute missing", nil)
	}
	return s, nil
}

// declaredHash maps a SignerInfo digest algorithm, including SHA-1 so that
// a SHA-1 artifact is reported as drift with its real name.
func declaredHash(oid asn1.ObjectIdentifier) (crypto.Hash, bool) {
	if oid.Equal(oidSHA1) {
		return crypto.SHA1, true
	}
	return hashByOID(oid)
}

func declaredHashName(h crypto.Hash) string {
	if h == crypto.SHA1 {
		return "sha1"
	}
	return HashName(h)
}

// verifyDeclared verifies sig over signed with pub under the algorithm the
// SignerInfo declares (dh = its digest algorithm).
func verifyDeclared(pub crypto.PublicKey, id pkix.AlgorithmIdentifier, dh crypto.Hash, signed, sig []byte) bool {
	switch k := pub.(type) {
	case *ecdsa.PublicKey:
		return slices.ContainsFunc([]asn1.ObjectIdentifier{oidECDSAWithSHA256, oidECDSAWithSHA384, oidECDSAWithSHA512, {1, 2, 840, 10045, 4, 1}},
			id.Algorithm.Equal) && ecdsa.VerifyASN1(k, hashOf(dh, signed), sig)
	case *rsa.PublicKey:
		if id.Algorithm.Equal(oidRSASSAPSS) {
			p, ok := parsePSS(id)
			if !ok {
				return false
			}
			return rsa.VerifyPSS(k, p.hash, hashOf(p.hash, signed), sig, &rsa.PSSOptions{SaltLength: p.salt, Hash: p.hash}) == nil
		}
		return slices.ContainsFunc([]asn1.ObjectIdentifier{oidRSAEncryption, oidSHA256WithRSA, oidSHA384WithRSA, oidSHA512WithRSA, {1, 2, 840, 113549, 1, 1, 5}},
			id.Algorithm.Equal) && rsa.VerifyPKCS1v15(k, dh, hashOf(dh, signed), sig) == nil
	case ed25519.PublicKey:
		return id.Algorithm.Equal(oidEd25519) && ed25519.Verify(k, signed, sig)
	}
	return false
}

type pssParams struct {
	hash crypto.Hash
	salt int
}

// parsePSS reads RSASSA-PSS-params whose hash and MGF1 hash agree.
func parsePSS(id pkix.AlgorithmIdentifier) (pssParams, bool) {
	var p pssParameters
	if rest, err := asn1.Unmarshal(id.Parameters.FullBytes, &p); err != nil || len(rest) != 0 {
		return pssParams{}, false
	}
	h, ok := hashByOID(p.Hash.Algorithm)
	if !ok || !p.MGF.Algorithm.Equal(oidMGF1) || p.TrailerField != 1 || p.SaltLength < 0 || p.SaltLength > 1024 {
		return pssParams{}, false
	}
	var mgfHash pkix.AlgorithmIdentifier
	if rest, err := asn1.Unmarshal(p.MGF.Parameters.FullBytes, &mgfHash); err != nil || len(rest) != 0 || !mgfHash.Algorithm.Equal(p.Hash.Algorithm) {
		return pssParams{}, false
	}
	return pssParams{hash: h, salt: p.SaltLength}, true
}

// checkDeclaredAlg compares the SignerInfo signature algorithm with the one
// we emit for alg and h.
func checkDeclaredAlg(got pkix.AlgorithmIdentifier, alg keys.Algorithm, h crypto.Hash) error {
	want, err := signatureAlgID(alg, h)
	if err != nil {
		return err
	}
	if !got.Algorithm.Equal(want.Algorithm) {
		return &AlgorithmMismatchError{Format: "cms", Field: "signature", Want: want.Algorithm.String(), Got: got.Algorithm.String()}
	}
	if alg.PSS() {
		p, ok := parsePSS(got)
		if !ok || p.hash != h || p.salt != h.Size() {
			return &AlgorithmMismatchError{Format: "cms", Field: "pss-parameters",
				Want: fmt.Sprintf("%s, mgf1-%s, salt %d", HashName(h), HashName(h), h.Size()),
				Got:  fmt.Sprintf("%s, salt %d", HashName(p.hash), p.salt)}
		}
	}
	return nil
}
