package pkcs11

import (
	"bytes"
	"encoding/json"
	"fmt"
	"log/slog"
	"strings"
	"testing"
)

func TestURIRoundTrip(t *testing.T) {
	tests := []struct {
		in   URI
		want string
	}{
		{URI{Token: "cs", ID: []byte{0x01, 0xab}, Object: "acme/k/v1"}, "pkcs11:token=cs;id=%01%ab;object=acme%2Fk%2Fv1"},
		{URI{Token: "my token", ID: []byte{0xff}}, "pkcs11:token=my%20token;id=%ff"},
	}
	for _, tc := range tests {
		t.Run(tc.want, func(t *testing.T) {
			if got := tc.in.String(); got != tc.want {
				t.Fatalf("String() = %s, want %s", got, tc.want)
			}
			back, err := ParseURI(tc.want)
			if err != nil {
				t.Fatal(err)
			}
			if back.Token != tc.in.Token || !bytes.Equal(back.ID, tc.in.ID) || back.Object != tc.in.Object {
				t.Fatalf("ParseURI = %+v, want %+v", back, tc.in)
			}
		})
	}
	u, err := ParseURI("pkcs11:token=cs;id=01ab?pin-value=1234&module-path=/evil.so")
	if err != nil || !bytes.Equal(u.ID, []byte{0x01, 0xab}) {
		t.Fatalf("plain-hex id: %+v, %v", u, err)
	}
	for _, bad := range []string{"soft:x", "pkcs11:", "pkcs11:token=cs", "pkcs11:id=%01", "pkcs11:token=cs;id=%zz"} {
		if _, err := ParseURI(bad); err == nil {
			t.Errorf("ParseURI(%q) succeeded", bad)
		}
	}
}

func TestPINRedacted(t *testing.T) {
	cfg := Config{ModulePath: "/lib.so", TokenLabel: "cs", PIN: NewPIN("s3cr3t-pin")}
	var buf bytes.Buffer
	slog.New(slog.NewJSONHandler(&buf, nil)).Info("config", "cfg", cfg, "pin", cfg.PIN)
	j, _ := json.Marshal(cfg)
	for _, out := range []string{fmt.Sprintf("%v %+v %#v %s", cfg, cfg, cfg, cfg.PIN), buf.String(), string(j)} {
		if strings.Contains(out, "s3cr3t") {
			t.Errorf("PIN leaked: %s", out)
		}
	}
}
