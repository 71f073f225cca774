package keys_test

import (
	"context"
	"crypto"
	"errors"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/countersign/countersign/internal/keys"
	"github.com/countersign/countersign/internal/keys/soft"
)

// countingProvider counts Signer opens of a real soft provider.
type countingProvider struct {
	*soft.Provider
	opens atomic.Int32
}

func (c *countingProvider) Signer(ctx context.Context, uri string) (crypto.Signer, error) {
	c.opens.Add(1)
	return c.Provider.Signer(ctx, uri)
}

func TestRegistryCachesSigners(t *testing.T) {
	ctx := context.Background()
	sp, err := soft.New(t.TempDir(), soft.NewPassphrase([]byte("p")), soft.WithScrypt(1<<10, 8, 1))
	if err != nil {
		t.Fatal(err)
	}
	cp := &countingProvider{Provider: sp}
	reg := keys.NewRegistry()
	if err := reg.Register("soft", cp); err != nil {
		t.Fatal(err)
	}
	if err := reg.Register("soft", cp); err == nil {
		t.Error("registering a scheme twice succeeded")
	}
	uri, _, err := reg.Generate(ctx, "soft", keys.ECDSAP256, "k")
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	signers := make([]crypto.Signer, 8)
	for i := range signers {
		wg.Go(func() {
			s, err := reg.Signer(ctx, uri)
			if err != nil {
				t.Error(err)
			}
			signers[i] = s
		})
	}
	wg.Wait()
	if n := cp.opens.Load(); n != 1 {
		t.Errorf("provider opened the key %d times, want 1", n)
	}
	for _, s := range signers[1:] {
		if s != signers[0] {
			t.Fatal("callers got different signers for one URI")
		}
	}
	// A failed open is not cached.
	if _, err := reg.Signer(ctx, "soft:missing.key"); !errors.Is(err, soft.ErrNotFound) {
		t.Fatalf("err = %v", err)
	}
	if _, err := reg.Signer(ctx, "soft:missing.key"); !errors.Is(err, soft.ErrNotFound) {
		t.Fatalf("err = %v", err)
	}
	if n := cp.opens.Load(); n != 3 {
		t.Errorf("opens = %d, want 3 (failures are retried)", n)
	}
	reg.Forget(uri)
	if _, err := reg.Signer(ctx, uri); err != nil || cp.opens.Load() != 4 {
		t.Errorf("Forget did not force a reopen: %v, opens %d", err, cp.opens.Load())
	}
	for _, bad := range []string{"hsm:foo", "nocolon", ":x"} {
		if _, err := reg.Signer(ctx, bad); err == nil {
			t.Errorf("Signer(%q) succeeded", bad)
		}
	}
	if _, err := reg.Signer(ctx, "hsm:foo"); !errors.Is(err, keys.ErrUnknownScheme) {
		t.Errorf("unknown scheme: err = %v", err)
	}
	if err := reg.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := reg.Signer(ctx, uri); !errors.Is(err, keys.ErrUnknownScheme) {
		t.Errorf("Signer after Close: err = %v", err)
	}
}
