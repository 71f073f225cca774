package probe

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"errors"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/countersign/countersign/internal/api"
	"github.com/countersign/countersign/internal/keys"
	"github.com/countersign/countersign/internal/sign"
)

func TestLoadPolicyFiles(t *testing.T) {
	for _, tc := range []struct {
		file    string
		alg     keys.Algorithm
		hash    crypto.Hash
		formats []api.Format
		v4ok    bool
	}{
		{"testdata/policy.yaml", keys.ECDSAP256, crypto.SHA256, AllFormats, false},
		{"testdata/policy.json", keys.Ed25519, crypto.SHA512, []api.Format{api.FormatRaw, api.FormatCMS}, true},
	} {
		t.Run(tc.file, func(t *testing.T) {
			f, err := os.Open(tc.file)
			if err != nil {
				t.Fatal(err)
			}
			defer f.Close()
			p, err := LoadPolicy(f)
			if err != nil {
				t.Fatal(err)
			}
			kp, ok := p.For("", "probe")
			if !ok || kp.Algorithm != tc.alg || kp.Hash() != tc.hash || !equalFormats(kp.FormatList(), tc.formats) || kp.AllowsVersion(4) != tc.v4ok {
				t.Errorf("got %+v (hash %v, formats %v), want %s/%v/%v", kp, kp.Hash(), kp.FormatList(), tc.alg, tc.hash, tc.formats)
			}
		})
	}
}

func equalFormats(a, b []api.Format) bool {
	return strings.Join(fmtStrings(a), ",") == strings.Join(fmtStrings(b), ",")
}

func fmtStrings(fs []api.Format) []string {
	out := make([]string, len(fs))
	for i, f := range fs {
		out[i] = string(f)
	}
	return out
}

func TestLoadPolicyRejects(t *testing.T) {
	for _, tc := range []struct{ name, doc, want string }{
		{"unknown field", "keys: [{key: p, algorithm: ecdsa-p256, digets: sha256}]", "digets"},
		{"bad algorithm", "keys: [{key: p, algorithm: dsa}]", "unknown algorithm"},
		{"bad digest", "keys: [{key: p, algorithm: ecdsa-p256, digest: md5}]", "md5"},
		{"ed25519 sha256", "keys: [{key: p, algorithm: ed25519, digest: sha256}]", "sha512 only"},
		{"bad range", "keys: [{key: p, algorithm: ecdsa-p256, min_version: 3, max_version: 2}]", "version range"},
		{"bad format", "keys: [{key: p, algorithm: ecdsa-p256, formats: [pdf]}]", "unknown format"},
		{"duplicate", "keys: [{key: p, algorithm: ecdsa-p256}, {key: p, algorithm: ed25519}]", "twice"},
		{"empty", "keys: []", "no keys"},
		{"unnamed", "keys: [{algorithm: ecdsa-p256}]", "without a name"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := LoadPolicy(strings.NewReader(tc.doc))
			if !errors.Is(err, ErrPolicy) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("LoadPolicy = %v, want ErrPolicy mentioning %q", err, tc.want)
			}
		})
	}
}

// TestExpectedOIDsMatchSign checks the policy's OID table against what
// internal/sign actually stamps.
func TestExpectedOIDsMatchSign(t *testing.T) {
	ec256, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	ec384, _ := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	_, ed, _ := ed25519.GenerateKey(rand.Reader)
	rsaKey, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	signers := map[keys.Algorithm]crypto.Signer{keys.ECDSAP256: ec256, keys.ECDSAP384: ec384, keys.Ed25519: ed, keys.RSA2048: rsaKey, keys.RSA2048PSS: rsaKey}
	for alg, s := range signers {
		for _, h := range []crypto.Hash{crypto.SHA256, crypto.SHA384, crypto.SHA512} {
			want, werr := ExpectedAlgorithmOID(alg, h)
			res, serr := sign.Sign(api.FormatRaw, sign.Key{Signer: s, Algorithm: alg}, sign.Input{Document: []byte("d"), Hash: h}, time.Now())
			if (werr == nil) != (serr == nil) {
				t.Errorf("%s/%v: table error %v, sign error %v", alg, h, werr, serr)
				continue
			}
			if serr != nil {
				continue
			}
			dw, _ := ExpectedDigestOID(h)
			if res.AlgorithmOID != want || res.DigestOID != dw {
				t.Errorf("%s/%v: sign stamps %s/%s, table says %s/%s", alg, h, res.AlgorithmOID, res.DigestOID, want, dw)
			}
		}
	}
	for _, pair := range [][2]keys.Algorithm{{keys.RSA3072, keys.RSA2048}, {keys.RSA3072PSS, keys.RSA2048PSS}} {
		a, _ := ExpectedAlgorithmOID(pair[0], crypto.SHA384)
		b, _ := ExpectedAlgorithmOID(pair[1], crypto.SHA384)
		if a != b || a == "" {
			t.Errorf("%s and %s differ: %q %q", pair[0], pair[1], a, b)
		}
	}
}
