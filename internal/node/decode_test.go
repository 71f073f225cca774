package node

import (
	"encoding/base64"
	"fmt"
	"math/rand/v2"
	"reflect"
	"strings"
	"testing"

	"github.com/countersign/countersign/internal/api"
)

// agree checks the fast decoder against the reference on body: when the
// fast path accepts it, encoding/json must accept it too with an identical
// result (nil and empty slices told apart); decodeSignRequest must always
// give the reference's result and error.
func agree(t *testing.T, body []byte) (fast bool) {
	t.Helper()
	var ref api.SignRequest
	refErr := decodeStrict(body, &ref)
	var got api.SignRequest
	if fastSignRequest(body, &got) {
		if refErr != nil {
			t.Fatalf("fast path accepted %q, encoding/json refused it: %v", body, refErr)
		}
		if !reflect.DeepEqual(got, ref) {
			t.Fatalf("fast path decoded %q as %#v, encoding/json as %#v", body, got, ref)
		}
		fast = true
	}
	var via api.SignRequest
	err := decodeSignRequest(body, &via)
	if fmt.Sprint(err) != fmt.Sprint(refErr) || (refErr == nil && !reflect.DeepEqual(via, ref)) {
		t.Fatalf("decodeSignRequest(%q) = %#v, %v; reference %#v, %v", body, via, err, ref, refErr)
	}
	return fast
}

func TestDecodeSignRequestCases(t *testing.T) {
	b64 := base64.StdEncoding.EncodeToString([]byte("hello, world"))
	d32 := base64.StdEncoding.EncodeToString(make([]byte, 32))
	for _, c := range []struct {
		body string
		fast bool
	}{
		{`{"key":"default","format":"raw","document":"` + b64 + `"}`, true},
		{` { "key" : "default" ,"format":"cms", "document":"` + b64 + `" ,"document_id":"inv-7"}` + "\n", true},
		{`{"key":"k","format":"jws","digest":{"alg":"sha256","value":"` + d32 + `"}}`, true},
		{`{"key":"k","format":"raw","document":""}`, true},
		{`{"digest":{}}`, true},
		{`{}`, true},
		{`{"key":"k","document":null}`, false},
		{`{"Key":"k"}`, false},
		{`{"key":"k","key":"j"}`, false},
		{`{"key":"k\u0041"}`, false},
		{`{"key":"ké"}`, false},
		{`{"key":"k","extra":1}`, false},
		{`{"key":"k"} {}`, false},
		{`{"key":"k"}x`, false},
		{`{"document":"not base64!"}`, false},
		{`{"document":"aGk"}`, false},
		{`{"key":5}`, false},
		{`{"digest":{"alg":"sha256","alg":"sha512"}}`, false},
		{`{"digest":{"alg":"sha256","other":"x"}}`, false},
		{`{"key":"k",}`, false},
		{`[]`, false},
		{``, false},
		{`{"key":"unterminated`, false},
	} {
		if got := agree(t, []byte(c.body)); got != c.fast {
			t.Errorf("%q: fast path taken = %v, want %v", c.body, got, c.fast)
		}
	}
}

// TestDecodeSignRequestGenerated builds bodies from the request grammar and
// mutates them byte by byte; both verdicts must be well represented.
func TestDecodeSignRequestGenerated(t *testing.T) {
	rng := rand.New(rand.NewPCG(7, 11))
	pick := func(xs ...string) string { return xs[rng.IntN(len(xs))] }
	ws := func() string { return pick("", "", " ", "\n\t", "\r ") }
	str := func() string {
		return pick(`"default"`, `"raw"`, `"cms"`, `""`, `"a\"b"`, `"\u00e9"`, `"é"`, `"<&>"`, `"x y"`, `null`, `12`, `true`, `"`+strings.Repeat("z", 40)+`"`)
	}
	b64 := func() string {
		b := make([]byte, rng.IntN(70))
		for i := range b {
			b[i] = byte(rng.Uint32())
		}
		return pick(`"`+base64.StdEncoding.EncodeToString(b)+`"`, `"`+base64.RawStdEncoding.EncodeToString(b)+`"`, `""`, `null`, `"@@@="`)
	}
	field := func() string {
		switch rng.IntN(8) {
		case 0:
			return `"key"` + ws() + ":" + ws() + str()
		case 1:
			return `"format"` + ws() + ":" + ws() + str()
		case 2:
			return `"document_id":` + str()
		case 3, 4:
			return `"document":` + ws() + b64()
		case 5:
			return `"digest":{` + pick(`"alg":`+str(), `"value":`+b64(), `"alg":`+str()+`,"value":`+b64(), ``, `"Alg":"sha256"`) + `}`
		case 6:
			return pick(`"Key":"x"`, `"unknown":1`, `"digest":null`, `"document":[1]`)
		default:
			return `"key":"default"`
		}
	}
	var fast, slow int
	for range 20000 {
		n := rng.IntN(5)
		fs := make([]string, n)
		for i := range fs {
			fs[i] = field()
		}
		body := []byte(ws() + "{" + strings.Join(fs, ","+ws()) + ws() + "}" + ws())
		if rng.IntN(4) == 0 && len(body) > 0 { // mutate one byte
			body[rng.IntN(len(body))] = pick("{", "}", ",", ":", `"`, "\\", "a", "\x00", "\xff", " ")[0]
		}
		if agree(t, body) {
			fast++
		} else {
			slow++
		}
	}
	if fast < 2000 || slow < 2000 {
		t.Errorf("fast path took %d bodies, reference %d: the generator no longer exercises both", fast, slow)
	}
}

func FuzzDecodeSignRequest(f *testing.F) {
	f.Add([]byte(`{"key":"default","format":"raw","document":"aGVsbG8="}`))
	f.Add([]byte(`{"key":"k","format":"jws","digest":{"alg":"sha256","value":"AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA="}}`))
	f.Add([]byte(`{"document":"","document_id":"x"}`))
	f.Fuzz(func(t *testing.T, body []byte) { agree(t, body) })
}

func BenchmarkDecodeSignRequest(b *testing.B) {
	body := []byte(`{"key":"default","format":"raw","document":"` + base64.StdEncoding.EncodeToString(make([]byte, 256)) + `"}`)
	b.Run("fast", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			var req api.SignRequest
			if err := decodeSignRequest(body, &req); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("encoding-json", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			var req api.SignRequest
			if err := decodeStrict(body, &req); err != nil {
				b.Fatal(err)
			}
		}
	})
}

// agreeBatch is agree for POST /v1/sign:batch bodies.
func agreeBatch(t *testing.T, body []byte) (fast bool) {
	t.Helper()
	var ref api.BatchSignRequest
	refErr := decodeStrict(body, &ref)
	var got api.BatchSignRequest
	if fastBatchRequest(body, &got) {
		if refErr != nil {
			t.Fatalf("fast path accepted %q, encoding/json refused it: %v", body, refErr)
		}
		if !reflect.DeepEqual(got, ref) {
			t.Fatalf("fast path decoded %q as %#v, encoding/json as %#v", body, got, ref)
		}
		fast = true
	}
	var via api.BatchSignRequest
	err := decodeBatchRequest(body, &via)
	if fmt.Sprint(err) != fmt.Sprint(refErr) || (refErr == nil && !reflect.DeepEqual(via, ref)) {
		t.Fatalf("decodeBatchRequest(%q) = %#v, %v; reference %#v, %v", body, via, err, ref, refErr)
	}
	return fast
}

func TestDecodeBatchRequestCases(t *testing.T) {
	doc := `"document":"` + base64.StdEncoding.EncodeToString([]byte("hello")) + `"`
	for _, c := range []struct {
		body string
		fast bool
	}{
		{`{"items":[{"idempotency_key":"a","key":"default","format":"raw",` + doc + `},{"idempotency_key":"b","key":"k","format":"cms",` + doc + `,"document_id":"d"}]}`, true},
		{` { "items" : [ { "key":"k", "idempotency_key" : "a" } , {} ] } ` + "\n", true},
		{`{"items":[]}`, true},
		{`{}`, true},
		{`{"items":[{"idempotency_key":"a","digest":{"alg":"sha256","value":""}}]}`, true},
		{`{"items":null}`, false},
		{`{"items":[null]}`, false},
		{`{"items":[{"idempotency_key":"a","idempotency_key":"b"}]}`, false},
		{`{"items":[{"Idempotency_key":"a"}]}`, false},
		{`{"items":[{"idempotency_key":"a\n"}]}`, false},
		{`{"items":[],"items":[]}`, false},
		{`{"items":[{"extra":1}]}`, false},
		{`{"items":[{}],}`, false},
		{`{"items":[{},]}`, false},
		{`{"items":[{}]}]`, false},
		{`{"items":{}}`, false},
		{`{"Items":[]}`, false},
		{`{"items":[{"idempotency_key":"a","document":"aGk"}]}`, false},
		{`{"items":[`, false},
		{``, false},
	} {
		if got := agreeBatch(t, []byte(c.body)); got != c.fast {
			t.Errorf("%q: fast path taken = %v, want %v", c.body, got, c.fast)
		}
	}
}

// TestDecodeBatchRequestGenerated builds batch bodies from the grammar and
// mutates them byte by byte; both verdicts must be well represented.
func TestDecodeBatchRequestGenerated(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 5))
	pick := func(xs ...string) string { return xs[rng.IntN(len(xs))] }
	ws := func() string { return pick("", "", "", " ", "\n\t") }
	str := func() string {
		return pick(`"default"`, `"raw"`, `"k-1"`, `""`, `"a\"b"`, `"é"`, `null`, `7`, `"x y"`)
	}
	b64 := func() string {
		b := make([]byte, rng.IntN(40))
		for i := range b {
			b[i] = byte(rng.Uint32())
		}
		return pick(`"`+base64.StdEncoding.EncodeToString(b)+`"`, `"`+base64.StdEncoding.EncodeToString(b)+`"`, `""`, `null`, `"@@="`)
	}
	field := func() string {
		switch rng.IntN(9) {
		case 0, 1:
			return `"idempotency_key"` + ws() + ":" + ws() + str()
		case 2:
			return `"key":` + str()
		case 3:
			return `"format":` + ws() + str()
		case 4:
			return `"document":` + b64()
		case 5:
			return `"digest":{` + pick(`"alg":`+str(), `"alg":"sha256","value":`+b64(), ``) + `}`
		case 6:
			return pick(`"document_id":"d"`, `"unknown":1`, `"IDEMPOTENCY_KEY":"x"`, `"document":[1]`)
		default:
			return `"idempotency_key":"i-` + fmt.Sprint(rng.IntN(1000)) + `"`
		}
	}
	item := func() string {
		fs := make([]string, rng.IntN(5))
		for i := range fs {
			fs[i] = field()
		}
		return "{" + ws() + strings.Join(fs, ","+ws()) + "}"
	}
	var fast, slow int
	for range 10000 {
		items := make([]string, rng.IntN(4))
		for i := range items {
			items[i] = item()
		}
		body := []byte(ws() + `{"items":` + ws() + "[" + strings.Join(items, ","+ws()) + "]" + ws() + "}" + ws())
		if rng.IntN(8) == 0 {
			body = []byte(pick(`{}`, `{"items":null}`, `{"items":[]} x`, `{"items":[`+item()+`],"items":[]}`))
		}
		if rng.IntN(4) == 0 && len(body) > 0 { // mutate one byte
			body[rng.IntN(len(body))] = pick("{", "}", "[", "]", ",", ":", `"`, "\\", "a", "\xff", " ")[0]
		}
		if agreeBatch(t, body) {
			fast++
		} else {
			slow++
		}
	}
	if fast < 1000 || slow < 1000 {
		t.Errorf("fast path took %d bodies, reference %d: the generator no longer exercises both", fast, slow)
	}
}

func FuzzDecodeBatchRequest(f *testing.F) {
	f.Add([]byte(`{"items":[{"idempotency_key":"a","key":"default","format":"raw","document":"aGVsbG8="}]}`))
	f.Add([]byte(`{"items":[]}`))
	f.Fuzz(func(t *testing.T, body []byte) { agreeBatch(t, body) })
}

func BenchmarkDecodeBatchRequest(b *testing.B) {
	var sb strings.Builder
	sb.WriteString(`{"items":[`)
	doc := base64.StdEncoding.EncodeToString(make([]byte, 256))
	for i := range 100 {
		if i > 0 {
			sb.WriteByte(',')
		}
		fmt.Fprintf(&sb, `{"idempotency_key":"bench-%d","key":"default","format":"raw","document":"%s"}`, i, doc)
	}
	sb.WriteString(`]}`)
	body := []byte(sb.String())
	b.Run("fast", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			var req api.BatchSignRequest
			if err := decodeBatchRequest(body, &req); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("encoding-json", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			var req api.BatchSignRequest
			if err := decodeStrict(body, &req); err != nil {
				b.Fatal(err)
			}
		}
	})
}
