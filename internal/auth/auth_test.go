package auth

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/countersign/countersign/internal/store"
)

type tokenMap map[string]store.Token

func (m tokenMap) Token(_ context.Context, id string) (store.Token, error) {
	t, ok := m[id]
	if !ok {
		return store.Token{}, store.ErrNotFound
	}
	return t, nil
}

func TestVerify(t *testing.T) {
	now := time.Unix(1_700_000_000, 0)
	secret, row, err := Mint("tenant-a", now)
	if err != nil {
		t.Fatal(err)
	}
	other, otherRow, _ := Mint("tenant-b", now)
	otherRow.Revoked = true
	m := tokenMap{row.ID: row, otherRow.ID: otherRow}
	v := NewVerifier(m, time.Second, func() time.Time { return now })

	flipped := []byte(string(secret))
	flipped[len(flipped)-1] ^= 1
	tests := []struct {
		name, token, wantTenant string
		wantErr                 error
	}{
		{"valid", string(secret), "tenant-a", nil},
		{"revoked", string(other), "", ErrInvalid},
		{"wrong secret", string(flipped), "", ErrInvalid},
		{"unknown id", "cst_0000000000000000_" + strings.Repeat("A", 43), "", ErrInvalid},
		{"no prefix", strings.TrimPrefix(string(secret), "cst_"), "", ErrInvalid},
		{"empty", "", "", ErrInvalid},
		{"short", "cst_ab_cd", "", ErrInvalid},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := v.Verify(context.Background(), tt.token)
			if !errors.Is(err, tt.wantErr) || got != tt.wantTenant {
				t.Errorf("Verify = %q, %v; want %q, %v", got, err, tt.wantTenant, tt.wantErr)
			}
		})
	}
}

func TestRevocationHonouredAfterTTL(t *testing.T) {
	now := time.Unix(1_700_000_000, 0)
	secret, row, _ := Mint("t", now)
	m := tokenMap{row.ID: row}
	v := NewVerifier(m, time.Second, func() time.Time { return now })
	if _, err := v.Verify(context.Background(), string(secret)); err != nil {
		t.Fatal(err)
	}
	row.Revoked = true
	m[row.ID] = row
	now = now.Add(2 * time.Second)
	if _, err := v.Verify(context.Background(), string(secret)); !errors.Is(err, ErrInvalid) {
		t.Fatalf("revoked token still valid after TTL: %v", err)
	}
}

func TestSecretRedacted(t *testing.T) {
	secret, _, _ := Mint("t", time.Now())
	for _, s := range []string{secret.String(), secret.GoString(), secret.LogValue().String()} {
		if strings.Contains(s, string(secret)[4:]) {
			t.Errorf("secret leaked: %s", s)
		}
	}
}
