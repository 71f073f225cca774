package sign

import (
	"crypto"
	"crypto/rand"
	"crypto/x509"
	"testing"
	"time"

	"github.com/countersign/countersign/internal/keys"
)

// benchDoc is a 4 KiB document: a typical contract page or invoice.
var benchDoc = make([]byte, 4096)

func benchKey(b *testing.B, pki *testPKI, alg keys.Algorithm) Key {
	s := testKey(b, alg)
	return Key{Signer: s, Algorithm: alg, Chain: []*x509.Certificate{pki.leaf(b, s.Public(), signingLeaf), pki.ca}, KeyID: "bench"}
}

// BenchmarkSign/<format>/<alg> measures a whole Sign; compare with
// BenchmarkRawCrypto/<alg> for the format's overhead.
func BenchmarkSign(b *testing.B) {
	pki := newPKI(b)
	at := time.Now()
	for _, format := range formats {
		for _, alg := range keys.Algorithms {
			k := benchKey(b, pki, alg)
			b.Run(string(format)+"/"+string(alg), func(b *testing.B) {
				b.ReportAllocs()
				for b.Loop() {
					if _, err := Sign(format, k, Input{Document: benchDoc}, at); err != nil {
						b.Fatal(err)
					}
				}
			})
		}
	}
}

// BenchmarkVerify/<format>/<alg> measures Verify of a valid artifact.
func BenchmarkVerify(b *testing.B) {
	pki := newPKI(b)
	for _, format := range formats {
		for _, alg := range keys.Algorithms {
			k := benchKey(b, pki, alg)
			res, err := Sign(format, k, Input{Document: benchDoc}, time.Now())
			if err != nil {
				b.Fatal(err)
			}
			vk := VerifyKey{Public: k.Signer.Public(), Algorithm: alg}
			b.Run(string(format)+"/"+string(alg), func(b *testing.B) {
				b.ReportAllocs()
				for b.Loop() {
					if err := Verify(format, res.Artifact, Input{Document: benchDoc}, vk); err != nil {
						b.Fatal(err)
					}
				}
			})
		}
	}
}

// BenchmarkRawCrypto is the baseline: hash the document and call the bare
// crypto.Signer.Sign for the same key (pure Ed25519 over the document).
func BenchmarkRawCrypto(b *testing.B) {
	for _, alg := range keys.Algorithms {
		s := testKey(b, alg)
		b.Run(string(alg), func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				var err error
				if alg == keys.Ed25519 {
					_, err = s.Sign(rand.Reader, benchDoc, crypto.Hash(0))
				} else {
					_, err = s.Sign(rand.Reader, hashOf(alg.Hash(), benchDoc), signerOpts(alg, alg.Hash()))
				}
				if err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
