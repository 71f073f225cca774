package auditlog

import (
	"context"
	"crypto/ed25519"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"testing"

	"github.com/transparency-dev/merkle/proof"
	"github.com/transparency-dev/merkle/rfc6962"
	"golang.org/x/mod/sumdb/note"
)

func TestNoteSignerMatchesNoteKeys(t *testing.T) {
	seed := make([]byte, ed25519.SeedSize)
	seed[0] = 7
	priv := ed25519.NewKeyFromSeed(seed)
	ours, err := NewNoteSigner(testOrigin, priv)
	if err != nil {
		t.Fatal(err)
	}
	vkey, err := VerifierKey(testOrigin, priv.Public().(ed25519.PublicKey))
	if err != nil {
		t.Fatal(err)
	}
	// The same key in note's own private-key encoding.
	v, err := note.NewVerifier(vkey)
	if err != nil {
		t.Fatal(err)
	}
	skey := fmt.Sprintf("PRIVATE+KEY+%s+%08x+%s", testOrigin, v.KeyHash(), base64.StdEncoding.EncodeToString(append([]byte{1}, seed...)))
	theirs, err := note.NewSigner(skey)
	if err != nil {
		t.Fatal(err)
	}
	n := &note.Note{Text: "countersign.dev/test-install\n1\nAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=\n"}
	a, err := note.Sign(n, ours)
	if err != nil {
		t.Fatal(err)
	}
	b, err := note.Sign(n, theirs)
	if err != nil {
		t.Fatal(err)
	}
	if string(a) != string(b) {
		t.Fatalf("signed notes differ:\n%s\n%s", a, b)
	}
	if _, err := note.Open(a, note.VerifierList(v)); err != nil {
		t.Fatalf("open: %v", err)
	}
	if _, err := NewNoteSigner(testOrigin, fakeRSASigner{}); err == nil {
		t.Fatal("NewNoteSigner accepted a non-Ed25519 key")
	}
}

func TestEndToEndSQLite(t *testing.T) {
	ctx := context.Background()
	l := newTestLog(t)
	if _, err := l.in.IntegrateOnce(ctx); !errors.Is(err, ErrNoCheckpoint) {
		t.Fatalf("empty log: got %v, want ErrNoCheckpoint", err)
	}
	appendEvents(t, l.st, 0, 300)
	cp300 := l.integrate(t)
	appendEvents(t, l.st, 300, 70000-300)
	cp := l.integrate(t)
	if cp.Size != 70000 || cp300.Size != 300 {
		t.Fatalf("sizes %d, %d", cp300.Size, cp.Size)
	}
	if again := l.integrate(t); again.Size != cp.Size || string(again.Note) != string(cp.Note) {
		t.Fatal("an idle IntegrateOnce signed a new checkpoint")
	}
	srv := httptest.NewServer(Handler(l.st, nil))
	defer srv.Close()

	// Proofs from the server verify with transparency-dev/merkle.
	for _, tc := range []struct{ index, size int64 }{{0, 1}, {0, 300}, {299, 300}, {12345, 70000}, {69999, 70000}, {256, 257}} {
		var ip InclusionProof
		getJSON(t, fmt.Sprintf("%s/v1/audit/proof/inclusion?index=%d&size=%d", srv.URL, tc.index, tc.size), &ip)
		hs := decode(t, ip.Hashes)
		root := naiveRoot(t, l, tc.size)
		leaf := rfc6962.DefaultHasher.HashLeaf(testEvent(t, int(tc.index)).Entry)
		if err := proof.VerifyInclusion(rfc6962.DefaultHasher, uint64(tc.index), uint64(tc.size), leaf, hs, root); err != nil {
			t.Errorf("inclusion %d in %d: %v", tc.index, tc.size, err)
		}
	}
	for _, tc := range []struct{ old, new int64 }{{1, 2}, {300, 70000}, {256, 65536}, {65536, 70000}, {7, 7}} {
		var cpf ConsistencyProof
		getJSON(t, fmt.Sprintf("%s/v1/audit/proof/consistency?old=%d&new=%d", srv.URL, tc.old, tc.new), &cpf)
		if err := proof.VerifyConsistency(rfc6962.DefaultHasher, uint64(tc.old), uint64(tc.new), decode(t, cpf.Hashes),
			naiveRoot(t, l, tc.old), naiveRoot(t, l, tc.new)); err != nil {
			t.Errorf("consistency %d -> %d: %v", tc.old, tc.new, err)
		}
	}
	resp, err := http.Get(srv.URL + "/v1/audit/proof/inclusion?index=1&size=70001")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusNotFound {
		t.Errorf("proof beyond checkpoint: status %d, want 404", resp.StatusCode)
	}
	for path, want := range map[string]string{
		"checkpoint":             cacheCheckpoint,
		"tile/0/000":             cacheImmutable,
		"tile/1/000":             cacheImmutable,
		"tile/0/x001/017.p/112":  "404",
		"tile/0/273.p/112":       cachePartial,
		"tile/1/001.p/17":        cachePartial,
		"tile/2/000.p/1":         cachePartial,
		"tile/entries/273.p/112": cachePartial,
		"tile/entries/000":       cacheImmutable,
		"tile/0/274":             "404",
		"tile/0/0":               "404",
	} {
		resp, err := http.Get(srv.URL + PathPrefix + path)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		got := resp.Header.Get("Cache-Control")
		if resp.StatusCode == http.StatusNotFound {
			got = "404"
		}
		if got != want {
			t.Errorf("GET %s: %q (status %d), want %q", path, got, resp.StatusCode, want)
		}
	}

	// Verify over HTTP, with consistency from the old checkpoint; then
	// offline from an exported copy.
	src, err := NewHTTPSource(srv.URL, nil)
	if err != nil {
		t.Fatal(err)
	}
	res, err := Verify(ctx, src, l.vkey, VerifyOptions{Since: cp300.Note})
	if err != nil {
		t.Fatalf("verify over HTTP: %v", err)
	}
	if res.Checkpoint.Size != 70000 || res.Since.Size != 300 {
		t.Fatalf("verify result %+v", res)
	}
	out := filepath.Join(t.TempDir(), "copy")
	if _, err := Export(ctx, StoreSource{R: l.st}, out); err != nil {
		t.Fatal(err)
	}
	if _, err := Verify(ctx, DirSource(out), l.vkey, VerifyOptions{Since: cp300.Note}); err != nil {
		t.Fatalf("verify offline copy: %v", err)
	}
	// The old checkpoint "since" a newer one is a shrink.
	if _, err := Verify(ctx, DirSource(out), l.vkey, VerifyOptions{Since: cp.Note}); err != nil {
		t.Fatalf("same checkpoint as since: %v", err)
	}
	// A wrong key is refused.
	_, otherKey := otherTestKey(t)
	if _, err := Verify(ctx, DirSource(out), otherKey, VerifyOptions{}); !errors.Is(err, ErrVerify) {
		t.Fatalf("verify with another key: %v, want ErrVerify", err)
	}

	// A tlog-proof file round-trips and verifies; a changed entry fails.
	p, err := ProveIndex(ctx, l.st, 4242)
	if err != nil {
		t.Fatal(err)
	}
	p2, err := ParseProof(p.Marshal())
	if err != nil {
		t.Fatal(err)
	}
	got, entry, err := VerifyProof(p2, l.vkey, nil)
	if err != nil {
		t.Fatal(err)
	}
	if got.Size != 70000 || string(entry) != string(testEvent(t, 4242).Entry) {
		t.Fatalf("proof verified the wrong thing: size %d entry %s", got.Size, entry)
	}
	if _, _, err := VerifyProof(p2, l.vkey, testEvent(t, 4243).Entry); !errors.Is(err, ErrVerify) {
		t.Fatalf("proof of another entry: %v, want ErrVerify", err)
	}
	if err := CheckFork(ctx, l.st, l.history); err != nil {
		t.Fatalf("CheckFork on a healthy log: %v", err)
	}
}

func getJSON(t *testing.T, url string, v any) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET %s: %s", url, resp.Status)
	}
	if err := json.NewDecoder(resp.Body).Decode(v); err != nil {
		t.Fatal(err)
	}
}

func decode(t *testing.T, ss []string) [][]byte {
	t.Helper()
	hs, err := DecodeHashes(ss)
	if err != nil {
		t.Fatal(err)
	}
	out := make([][]byte, len(hs))
	for i := range hs {
		out[i] = hs[i][:]
	}
	return out
}

// naiveRoot is RFC 6962's MTH of the first size test events, computed
// recursively with transparency-dev/merkle's hasher.
func naiveRoot(t *testing.T, _ *testLog, size int64) []byte {
	t.Helper()
	return mth(testEntries(t, int(size)))
}

func mth(leaves [][]byte) []byte {
	switch len(leaves) {
	case 0:
		return rfc6962.DefaultHasher.EmptyRoot()
	case 1:
		return rfc6962.DefaultHasher.HashLeaf(leaves[0])
	}
	k := 1
	for k*2 < len(leaves) {
		k *= 2
	}
	return rfc6962.DefaultHasher.HashChildren(mth(leaves[:k]), mth(leaves[k:]))
}
