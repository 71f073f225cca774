// Package pkcs11test makes throwaway SoftHSM2 tokens for tests of any
// package that signs through the pkcs11 provider.
//
// Invariant: each token lives in its own t.TempDir() with its own
// softhsm2.conf (SOFTHSM2_CONF is set for the test), so tests never touch
// the machine's tokens. A PKCS#11 module initialises once per process and
// reads its configuration then: close every provider of one token before
// the next test creates another (t.Cleanup order does this when providers
// are created after NewToken).
package pkcs11test

import (
	"crypto/rand"
	"encoding/hex"
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	"github.com/countersign/countersign/internal/keys/pkcs11"
)

// ModulePath is where Debian's softhsm2 package installs the library.
const ModulePath = "/usr/lib/softhsm/libsofthsm2.so"

// Token is an initialised SoftHSM2 token.
type Token struct {
	Config   pkcs11.Config
	PIN      string // the user PIN in clear, for tests that grep output for it
	SOPIN    string
	TokenDir string
	ConfPath string
}

// NewToken initialises a fresh token and returns the provider config for
// it. Without SoftHSM2 the test is skipped, or fails under CI=true.
func NewToken(t testing.TB) pkcs11.Config {
	t.Helper()
	return New(t).Config
}

// New is NewToken returning the token's details too.
func New(t testing.TB) *Token {
	t.Helper()
	util := require(t)
	dir := t.TempDir()
	tok := &Token{
		PIN:      randomHex(t, 8),
		SOPIN:    randomHex(t, 8),
		TokenDir: filepath.Join(dir, "tokens"),
		ConfPath: filepath.Join(dir, "softhsm2.conf"),
	}
	conf := "directories.tokendir = " + tok.TokenDir + "\nobjectstore.backend = file\nlog.level = ERROR\n"
	if err := os.WriteFile(tok.ConfPath, []byte(conf), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Setenv("SOFTHSM2_CONF", tok.ConfPath)
	tok.Config = pkcs11.Config{ModulePath: ModulePath, TokenLabel: "cs-test-" + randomHex(t, 4), PIN: pkcs11.NewPIN(tok.PIN)}
	tok.initToken(t, util)
	return tok
}

// Reinit wipes the token directory and initialises an empty token with the
// same label and PINs: what an HSM replacement or a token reset looks like.
func (tok *Token) Reinit(t testing.TB) {
	t.Helper()
	if err := os.RemoveAll(tok.TokenDir); err != nil {
		t.Fatal(err)
	}
	tok.initToken(t, require(t))
}

// Remove deletes the token directory (the token disappears under a running
// provider).
func (tok *Token) Remove(t testing.TB) {
	t.Helper()
	if err := os.RemoveAll(tok.TokenDir); err != nil {
		t.Fatal(err)
	}
}

func (tok *Token) initToken(t testing.TB, util string) {
	t.Helper()
	if err := os.MkdirAll(tok.TokenDir, 0o700); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(util, "--init-token", "--free", "--label", tok.Config.TokenLabel,
		"--so-pin", tok.SOPIN, "--pin", tok.PIN)
	cmd.Env = append(os.Environ(), "SOFTHSM2_CONF="+tok.ConfPath)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("softhsm2-util --init-token: %v\n%s", err, out)
	}
}

func require(t testing.TB) string {
	t.Helper()
	util, err := exec.LookPath("softhsm2-util")
	if err == nil {
		_, err = os.Stat(ModulePath)
	}
	if err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("SoftHSM2 is required under CI=true (softhsm2-util and %s): %v", ModulePath, err)
		}
		t.Skipf("SoftHSM2 not installed (apt-get install softhsm2): %v", err)
	}
	return util
}

func randomHex(t testing.TB, n int) string {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return hex.EncodeToString(b)
}
