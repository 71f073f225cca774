package sign

import (
	"crypto"
	"crypto/x509"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/countersign/countersign/internal/api"
	"github.com/countersign/countersign/internal/keys"
)

// fuzzVerify runs Verify on hostile input. The algorithm byte picks the
// expected key (low bits) and digest mode (high bit); Verify must return an
// error or nil, never panic, and never accept an artifact that a second,
// differently-built input (a changed document) also accepts.
func fuzzVerify(f *testing.F, format api.Format) {
	pubs := map[keys.Algorithm]crypto.PublicKey{}
	for _, alg := range keys.Algorithms {
		pubs[alg] = testKey(f, alg).Public()
	}
	f.Add(uint8(0), []byte{}, []byte{})
	f.Fuzz(func(t *testing.T, sel uint8, artifact, doc []byte) {
		alg := keys.Algorithms[int(sel&0x7f)%len(keys.Algorithms)]
		in := Input{Document: doc}
		if sel&0x80 != 0 {
			in = Input{Digest: hashOf(alg.Hash(), doc)}
		}
		err := Verify(format, artifact, in, VerifyKey{Public: pubs[alg], Algorithm: alg})
		if err != nil || in.Digest != nil {
			return
		}
		other := append([]byte("x"), doc...)
		if Verify(format, artifact, Input{Document: other}, VerifyKey{Public: pubs[alg], Algorithm: alg}) == nil {
			t.Fatalf("%s artifact verifies for two different documents", format)
		}
	})
}

func FuzzVerifyCMS(f *testing.F) { fuzzVerify(f, api.FormatCMS) }
func FuzzVerifyJWS(f *testing.F) { fuzzVerify(f, api.FormatJWS) }
func FuzzVerifyRaw(f *testing.F) { fuzzVerify(f, api.FormatRaw) }

// writeFuzzCorpora writes one valid artifact per format and algorithm into
// testdata/fuzz/FuzzVerify<Format>/ (go test runs them as seeds), so the
// fuzzer starts from structures that reach the signature checks.
func writeFuzzCorpora(t *testing.T) {
	pki := newPKI(t)
	doc := []byte("fuzz seed document\n")
	dirs := map[api.Format]string{api.FormatCMS: "FuzzVerifyCMS", api.FormatJWS: "FuzzVerifyJWS", api.FormatRaw: "FuzzVerifyRaw"}
	for format, dir := range dirs {
		dir = filepath.Join("testdata", "fuzz", dir)
		if err := os.MkdirAll(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		for i, alg := range keys.Algorithms {
			s := testKey(t, alg)
			k := Key{Signer: s, Algorithm: alg, Chain: []*x509.Certificate{pki.leaf(t, s.Public(), signingLeaf), pki.ca}, KeyID: "seed"}
			res, err := Sign(format, k, Input{Document: doc}, time.Date(2025, 1, 2, 3, 4, 5, 0, time.UTC))
			if err != nil {
				t.Fatalf("%s/%s: %v", format, alg, err)
			}
			body := fmt.Sprintf("go test fuzz v1\nbyte(%q)\n[]byte(%q)\n[]byte(%q)\n", uint8(i), res.Artifact, doc)
			if err := os.WriteFile(filepath.Join(dir, "valid-"+string(alg)), []byte(body), 0o644); err != nil {
				t.Fatal(err)
			}
		}
	}
}
