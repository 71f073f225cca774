package node_test

import (
	"fmt"
	"net/http"
	"path/filepath"
	"strings"
	"testing"

	"github.com/countersign/countersign/internal/api"
	"github.com/countersign/countersign/internal/install"
	"github.com/countersign/countersign/internal/keys"
	"github.com/countersign/countersign/internal/keys/pkcs11/pkcs11test"
)

// TestSignWithSoftHSM signs through the API with keys generated on a
// SoftHSM2 token (the pkcs11: provider configured by install, PIN in a
// file) and checks every CMS signature with OpenSSL. Without SoftHSM2 it
// skips, or fails under CI=true.
func TestSignWithSoftHSM(t *testing.T) {
	tok := pkcs11test.New(t)
	pinFile := filepath.Join(t.TempDir(), "pin")
	writeFile(t, pinFile, []byte(tok.PIN+"\n"))
	e := newEnv(t, envOptions{init: install.Options{PKCS11: &install.PKCS11Config{
		Module: tok.Config.ModulePath, Token: tok.Config.TokenLabel, PINFile: pinFile}}})
	doc := []byte("HSM-signed record\n")
	for _, alg := range []keys.Algorithm{keys.ECDSAP256, keys.RSA2048PSS, keys.Ed25519} {
		t.Run(string(alg), func(t *testing.T) {
			name := "hsm-" + string(alg)
			kv := e.createKey(t, name, alg, "pkcs11")
			if !strings.HasPrefix(kv.ProviderURI, "pkcs11:") {
				t.Fatalf("provider URI = %q, want pkcs11:", kv.ProviderURI)
			}
			for _, f := range []api.Format{api.FormatCMS, api.FormatJWS, api.FormatRaw} {
				if alg == keys.Ed25519 && f == api.FormatRaw {
					// raw Ed25519 is Ed25519ph, which SoftHSM2 2.6 does not
					// make (it ignores CK_EDDSA_PARAMS): a precise 422, not
					// a 503 inviting retries, and nothing stored.
					r := e.sign(t, e.token, "hsm-ed25519-raw", api.SignRequest{Key: name, Format: f, Document: doc})
					if r.status != http.StatusUnprocessableEntity || !strings.Contains(string(r.body), "Ed25519ph") ||
						!strings.Contains(string(r.body), string(api.TypeUnsupported)) {
						t.Errorf("raw Ed25519 on SoftHSM2: got %v, want 422 %s naming Ed25519ph", r, api.TypeUnsupported)
					}
					continue
				}
				resp, _ := e.mustSign(t, fmt.Sprintf("hsm-%s-%s", alg, f), api.SignRequest{Key: name, Format: f, Document: doc})
				checkStamp(t, resp, name, alg, alg.Hash())
				art := mustDecode(t, f, resp.Signature)
				switch f {
				case api.FormatCMS:
					verifyCMSIndependently(t, alg, filepath.Join(e.dir, "ca.pem"), doc, art)
				case api.FormatJWS:
					verifyJWSIndependently(t, alg, parsePublicKeyPEM(t, kv.PublicKeyPEM), doc, art)
				}
				if v := e.verify(t, api.VerifyRequest{Key: name, Format: f, Signature: resp.Signature, Document: doc}); !v.Valid {
					t.Errorf("%s: /v1/verify: %+v", f, v)
				}
			}
		})
	}
}
