package node

import (
	"encoding/base64"

	"github.com/countersign/countersign/internal/api"
)

// decodeSignRequest decodes a POST /v1/sign body exactly as decodeStrict
// (encoding/json, unknown fields refused) does. The bodies clients send,
// one flat object with the documented field names spelled as documented
// and plain printable-ASCII strings, are parsed by hand in one pass without
// reflection; anything else (escapes, non-ASCII, nulls, numbers, other
// spellings of a field name, repeated fields, unknown fields, trailing
// data, invalid base64) is left to encoding/json, so results and error
// messages never depend on which path ran. decode_test.go holds the two
// paths together on generated and mutated bodies, and FuzzDecodeSignRequest
// keeps looking for a disagreement.
func decodeSignRequest(body []byte, req *api.SignRequest) error {
	if fastSignRequest(body, req) {
		return nil
	}
	*req = api.SignRequest{}
	return decodeStrict(body, req)
}

// fastSignRequest parses body into req and reports true, or reports false
// (leaving req in any state) when body is not in the subset it handles.
func fastSignRequest(body []byte, req *api.SignRequest) bool {
	p := jsonScanner{b: body}
	var seen uint8
	if !p.object(func(name []byte) bool { return p.signField(name, req, &seen) }) {
		return false
	}
	p.space()
	return p.i == len(p.b)
}

// Bits of the sign request fields already read, for refusing repeats.
const (
	fKey = 1 << iota
	fFormat
	fDocument
	fDocumentID
	fDigest
	fIdempotencyKey // batch items only
)

// signField reads the value of the sign request field name into req, or
// reports false for an unknown or repeated name or a value outside the
// subset.
func (p *jsonScanner) signField(name []byte, req *api.SignRequest, seen *uint8) bool {
	var bit uint8
	switch string(name) {
	case "key":
		bit = fKey
	case "format":
		bit = fFormat
	case "document":
		bit = fDocument
	case "document_id":
		bit = fDocumentID
	case "digest":
		bit = fDigest
	default:
		return false
	}
	if *seen&bit != 0 {
		return false
	}
	*seen |= bit
	switch bit {
	case fKey:
		s, ok := p.str()
		req.Key = string(s)
		return ok
	case fFormat:
		s, ok := p.str()
		req.Format = api.Format(s)
		return ok
	case fDocumentID:
		s, ok := p.str()
		req.DocumentID = string(s)
		return ok
	case fDocument:
		var ok bool
		req.Document, ok = p.base64()
		return ok
	default:
		return p.digest(&req.Digest)
	}
}

// decodeBatchRequest decodes a POST /v1/sign:batch body exactly as
// decodeStrict does, the same way decodeSignRequest does for single signs:
// {"items":[...]} whose items are flat objects of idempotency_key and the
// sign request fields, in the subset fastSignRequest reads, is parsed by
// hand; anything else is left to encoding/json. A batch of 100 items
// costs encoding/json ~100 reflective decodes, which at the batch sizes
// the bench drives is a visible share of the node's CPU per signature.
func decodeBatchRequest(body []byte, req *api.BatchSignRequest) error {
	if fastBatchRequest(body, req) {
		return nil
	}
	*req = api.BatchSignRequest{}
	return decodeStrict(body, req)
}

// fastBatchRequest parses body into req and reports true, or reports
// false (leaving req in any state) when body is not in the subset.
func fastBatchRequest(body []byte, req *api.BatchSignRequest) bool {
	p := jsonScanner{b: body}
	seenItems := false
	if !p.object(func(name []byte) bool {
		if string(name) != "items" || seenItems {
			return false
		}
		seenItems = true
		// encoding/json makes "items":[] an empty, non-nil slice.
		req.Items = make([]api.BatchSignItem, 0, 16)
		return p.array(func() bool {
			req.Items = append(req.Items, api.BatchSignItem{})
			it := &req.Items[len(req.Items)-1]
			var seen uint8
			return p.object(func(name []byte) bool {
				if string(name) != "idempotency_key" {
					return p.signField(name, &it.SignRequest, &seen)
				}
				if seen&fIdempotencyKey != 0 {
					return false
				}
				seen |= fIdempotencyKey
				s, ok := p.str()
				it.IdempotencyKey = string(s)
				return ok
			})
		})
	}) {
		return false
	}
	p.space()
	return p.i == len(p.b)
}

// jsonScanner reads the subset of JSON fastSignRequest accepts.
type jsonScanner struct {
	b []byte
	i int
}

func (p *jsonScanner) space() {
	for p.i < len(p.b) {
		switch p.b[p.i] {
		case ' ', '\t', '\n', '\r':
			p.i++
		default:
			return
		}
	}
}

func (p *jsonScanner) consume(c byte) bool {
	p.space()
	if p.i < len(p.b) && p.b[p.i] == c {
		p.i++
		return true
	}
	return false
}

// str reads a string of printable ASCII without escapes and returns its
// bytes (a sub-slice of the body).
func (p *jsonScanner) str() ([]byte, bool) {
	if !p.consume('"') {
		return nil, false
	}
	start := p.i
	for ; p.i < len(p.b); p.i++ {
		switch c := p.b[p.i]; {
		case c == '"':
			s := p.b[start:p.i]
			p.i++
			return s, true
		case c < 0x20 || c > 0x7e || c == '\\':
			return nil, false
		}
	}
	return nil, false
}

// base64 reads a string and decodes it as encoding/json decodes a []byte
// (standard encoding, padded); "" gives an empty, non-nil slice.
func (p *jsonScanner) base64() ([]byte, bool) {
	s, ok := p.str()
	if !ok {
		return nil, false
	}
	out := make([]byte, base64.StdEncoding.DecodedLen(len(s)))
	n, err := base64.StdEncoding.Decode(out, s)
	if err != nil {
		return nil, false
	}
	return out[:n], true
}

// object reads {"name": value, ...}; field reads each value and reports
// whether it could.
func (p *jsonScanner) object(field func(name []byte) bool) bool {
	if !p.consume('{') {
		return false
	}
	if p.consume('}') {
		return true
	}
	for {
		name, ok := p.str()
		if !ok || !p.consume(':') || !field(name) {
			return false
		}
		if p.consume('}') {
			return true
		}
		if !p.consume(',') {
			return false
		}
	}
}

// array reads [value, ...]; elem reads each value and reports whether it
// could.
func (p *jsonScanner) array(elem func() bool) bool {
	if !p.consume('[') {
		return false
	}
	if p.consume(']') {
		return true
	}
	for {
		if !elem() {
			return false
		}
		if p.consume(']') {
			return true
		}
		if !p.consume(',') {
			return false
		}
	}
}

// digest reads {"alg": "...", "value": "<base64>"} into a new api.Digest.
func (p *jsonScanner) digest(dst **api.Digest) bool {
	d := &api.Digest{}
	var seenAlg, seenValue bool
	ok := p.object(func(name []byte) bool {
		switch string(name) {
		case "alg":
			if seenAlg {
				return false
			}
			seenAlg = true
			s, ok := p.str()
			d.Alg = string(s)
			return ok
		case "value":
			if seenValue {
				return false
			}
			seenValue = true
			var ok bool
			d.Value, ok = p.base64()
			return ok
		}
		return false
	})
	*dst = d
	return ok
}
