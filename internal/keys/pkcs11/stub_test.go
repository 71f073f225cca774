//go:build !cgo

package pkcs11

import (
	"errors"
	"strings"
	"testing"

	"github.com/countersign/countersign/internal/keys"
)

func TestNewWithoutCgo(t *testing.T) {
	_, err := New(Config{ModulePath: "/usr/lib/softhsm/libsofthsm2.so", TokenLabel: "cs", PIN: NewPIN("1234")})
	if !errors.Is(err, keys.ErrNotBuilt) || !strings.Contains(err.Error(), "built without PKCS#11 support") {
		t.Fatalf("err = %v, want ErrNotBuilt saying built without PKCS#11 support", err)
	}
}
