package auditlog

import (
	"fmt"
	"math/rand/v2"
	"strings"
	"testing"
	"time"
)

// agree fails t unless the fast check and the reference give b the same
// verdict, and returns that verdict.
func agree(t testing.TB, b []byte) bool {
	t.Helper()
	fast := canonicalEntry(b)
	ref := checkEntryReference(b)
	if fast != (ref == nil) {
		t.Fatalf("canonicalEntry(%q) = %v, reference says %v", b, fast, ref)
	}
	return fast
}

func TestCanonicalEntryCases(t *testing.T) {
	const head = `{"v":1,"type":"x","time":"t","actor":"a"`
	deep := func(n int) string { return strings.Repeat("[", n) + strings.Repeat("]", n) }
	for _, tc := range []struct {
		name  string
		entry string
		ok    bool
	}{
		{"minimal", head + `}`, true},
		{"empty required strings", `{"v":1,"type":"","time":"","actor":""}`, true},
		{"all fields", head + `,"tenant":"t","release":"r","instance":"i","subject":"s","details":{"a":1}}`, true},
		{"empty optional written", head + `,"tenant":""}`, false},
		{"optional fields out of order", head + `,"release":"r","tenant":"t"}`, false},
		{"duplicate field", head + `,"tenant":"t","tenant":"t"}`, false},
		{"unknown field", head + `,"extra":1}`, false},
		{"upper-case key", `{"V":1,"type":"x","time":"t","actor":"a"}`, false},
		{"escaped key", `{"v":1,"\u0074ype":"x","time":"t","actor":"a"}`, false},
		{"version 2", `{"v":2,"type":"x","time":"t","actor":"a"}`, false},
		{"version 1.0", `{"v":1.0,"type":"x","time":"t","actor":"a"}`, false},
		{"leading space", ` ` + head + `}`, false},
		{"trailing newline", head + "}\n", false},
		{"trailing value", head + `}{}`, false},
		{"space after colon", `{"v": 1,"type":"x","time":"t","actor":"a"}`, false},
		{"short escapes", head + `,"subject":"\"\\\b\f\n\r\t"}`, true},
		{"control as \\u", head + `,"subject":"\u0000\u001f"}`, true},
		{"newline as \\u", head + `,"subject":"\u000a"}`, false},
		{"raw control", head + ",\"subject\":\"\x01\"}", false},
		{"html escaped", head + `,"subject":"\u003c\u003e\u0026"}`, true},
		{"html raw", head + `,"subject":"<"}`, false},
		{"upper-case hex", head + `,"subject":"\u003C"}`, false},
		{"escaped solidus", head + `,"subject":"\/"}`, false},
		{"escaped letter", head + `,"subject":"\u0041"}`, false},
		{"line separator escaped", head + `,"subject":"\u2028\u2029"}`, true},
		{"line separator raw", head + ",\"subject\":\"\u2028\"}", false},
		{"utf-8", head + `,"subject":"é😀` + "\x7f" + `"}`, true},
		{"replacement char raw", head + ",\"subject\":\"\ufffd\"}", true},
		{"replacement char escaped", head + `,"subject":"\ufffd"}`, false},
		{"invalid utf-8", head + ",\"subject\":\"\xff\"}", false},
		{"surrogate escape", head + `,"subject":"\ud83d\ude00"}`, false},
		{"details null", head + `,"details":null}`, true},
		{"details number forms", head + `,"details":[1.0,-0,1e5,2E-3,0.5]}`, true},
		{"details bad number", head + `,"details":[01]}`, false},
		{"details unsorted keys", head + `,"details":{"b":1,"a":2}}`, true},
		{"details any escape", head + `,"details":"\/\u0041\u003C"}`, true},
		{"details invalid utf-8", head + ",\"details\":\"\xff\"}", true},
		{"details raw html", head + `,"details":"<"}`, false},
		{"details raw line separator", head + ",\"details\":\"\u2029\"}", false},
		{"details whitespace", head + `,"details":{"a": 1}}`, false},
		{"details trailing comma", head + `,"details":[1,]}`, false},
		{"details empty string", head + `,"details":""}`, true},
		{"details nested at the depth limit", head + `,"details":` + deep(maxNestingDepth-1) + `}`, true},
		{"details nested past the depth limit", head + `,"details":` + deep(maxNestingDepth) + `}`, false},
		{"truncated", head, false},
		{"empty", ``, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := agree(t, []byte(tc.entry)); got != tc.ok {
				t.Errorf("verdict on %q = %v, want %v", tc.entry, got, tc.ok)
			}
		})
	}
}

// trickyPieces are fragments that exercise every branch of the canonical
// string and compact-value rules.
var trickyPieces = []string{
	"a", "Z", " ", "\"", "\\", "/", "<", ">", "&", "\x00", "\x01", "\b", "\f", "\n", "\r", "\t", "\x1f", "\x7f",
	"é", "\u2028", "\u2029", "\ufffd", "😀", "\xff", "\xed\xa0\x80", "\xe2\x80", "\xe2\x80\xa8",
	`\u003c`, `\u003C`, `\/`, `\u0041`, `\u000a`, `\n`, `\ufffd`, `\u2028`, `\ud83d`, `\x`, `\`, `\u12`,
	`"`, `""`, `,`, `:`, `{`, `}`, `[`, `]`, `null`, `true`, `1`, `-0`, `1.5e3`, `01`, `1.`, ` `,
}

func randomText(r *rand.Rand) string {
	var b strings.Builder
	for range r.IntN(5) {
		b.WriteString(trickyPieces[r.IntN(len(trickyPieces))])
	}
	return b.String()
}

func randomDetail(r *rand.Rand, depth int) any {
	switch r.IntN(7) {
	case 0:
		return randomText(r)
	case 1:
		return r.IntN(2000) - 1000
	case 2:
		return r.Float64() * 1e6
	case 3:
		return r.IntN(2) == 0
	case 4:
		return nil
	case 5:
		if depth < 3 {
			s := make([]any, r.IntN(3))
			for i := range s {
				s[i] = randomDetail(r, depth+1)
			}
			return s
		}
	}
	if depth >= 3 {
		return "leaf"
	}
	m := map[string]any{}
	for range r.IntN(3) {
		m[randomText(r)] = randomDetail(r, depth+1)
	}
	return m
}

// randomEntry is either a Record-made entry with tricky strings or a
// hand-assembled one with arbitrary details text.
func randomEntry(t testing.TB, r *rand.Rand) []byte {
	if r.IntN(3) == 0 {
		return fmt.Appendf(nil, `{"v":1,"type":"%s","time":"%s","actor":"a","details":%s}`,
			randomText(r), randomText(r), randomText(r))
	}
	opt := func() string {
		if r.IntN(2) == 0 {
			return ""
		}
		return randomText(r)
	}
	ev := Event{Type: randomText(r), Time: time.Unix(r.Int64N(1<<40), r.Int64N(1e9)), Actor: randomText(r),
		TenantID: opt(), Release: opt(), Instance: opt(), Subject: opt()}
	if r.IntN(2) == 0 {
		ev.Details = map[string]any{}
		for range 1 + r.IntN(3) {
			ev.Details[randomText(r)] = randomDetail(r, 0)
		}
	}
	rec, err := ev.Record()
	if err != nil {
		t.Fatal(err)
	}
	return rec.Entry
}

// mutate applies one random edit to b.
func mutate(r *rand.Rand, b []byte) []byte {
	b = append([]byte(nil), b...)
	if len(b) == 0 {
		return []byte(trickyPieces[r.IntN(len(trickyPieces))])
	}
	i := r.IntN(len(b))
	switch r.IntN(4) {
	case 0: // replace one byte
		b[i] = trickyPieces[r.IntN(len(trickyPieces))][0]
	case 1: // insert a piece
		p := trickyPieces[r.IntN(len(trickyPieces))]
		b = append(b[:i], append([]byte(p), b[i:]...)...)
	case 2: // delete a range
		j := min(len(b), i+1+r.IntN(4))
		b = append(b[:i], b[j:]...)
	case 3: // flip one bit
		b[i] ^= 1 << r.IntN(8)
	}
	return b
}

// TestCheckEntryAgreesWithReference is the property test behind
// CheckEntry's fast path: on generated entries and on mutations of them,
// canonicalEntry and the decode/re-encode reference agree.
func TestCheckEntryAgreesWithReference(t *testing.T) {
	r := rand.New(rand.NewPCG(11, 12))
	var accepted, rejected int
	for range 20000 {
		b := randomEntry(t, r)
		for range r.IntN(3) {
			b = mutate(r, b)
		}
		if agree(t, b) {
			accepted++
		} else {
			rejected++
		}
	}
	// Both verdicts must be well exercised for the property to mean much.
	if accepted < 2000 || rejected < 2000 {
		t.Fatalf("accepted %d, rejected %d: the generator no longer covers both verdicts", accepted, rejected)
	}
	t.Logf("accepted %d, rejected %d", accepted, rejected)
}

func FuzzCheckEntry(f *testing.F) {
	r := rand.New(rand.NewPCG(5, 6))
	for range 32 {
		f.Add(randomEntry(f, r))
	}
	f.Add(testEvent(f, 1).Entry)
	f.Fuzz(func(t *testing.T, b []byte) {
		agree(t, b)
	})
}

func BenchmarkCheckEntry(b *testing.B) {
	e := testEvent(b, 12345).Entry
	b.Run("fast", func(b *testing.B) {
		for b.Loop() {
			if err := CheckEntry(e); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("reference", func(b *testing.B) {
		for b.Loop() {
			if err := checkEntryReference(e); err != nil {
				b.Fatal(err)
			}
		}
	})
}
