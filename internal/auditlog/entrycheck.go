package auditlog

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"unicode/utf8"
)

// CheckEntry checks that b is a canonical audit entry as Event.Record
// writes it: known fields only, in order, no insignificant whitespace,
// strings escaped exactly as encoding/json escapes them.
//
// The definition is checkEntryReference (decode strictly, re-encode,
// compare bytes). canonicalEntry accepts exactly the same entries in one
// allocation-free pass; it is tried first, and the reference runs only when
// it rejects, to produce the precise error. FuzzCheckEntry and
// TestCheckEntryAgreesWithReference hold the two to the same verdicts.
func CheckEntry(b []byte) error {
	if canonicalEntry(b) {
		return nil
	}
	return checkEntryReference(b)
}

// checkEntryReference is the defining canonical-entry check: b must decode
// into entry with no unknown field, carry EntryVersion, and re-encode to
// exactly b.
func checkEntryReference(b []byte) error {
	var e entry
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&e); err != nil {
		return fmt.Errorf("entry is not an audit entry: %w", err)
	}
	if e.V != EntryVersion {
		return fmt.Errorf("entry has version %d, this binary knows %d", e.V, EntryVersion)
	}
	again, err := json.Marshal(e)
	if err != nil || !bytes.Equal(again, b) {
		return errors.New("entry is not in canonical form")
	}
	return nil
}

// entryHead is how every canonical entry starts (EntryVersion is 1).
const entryHead = `{"v":1,"type":`

// optionalFields are entry's omitempty string fields, in struct order.
var optionalFields = [...]string{`,"tenant":`, `,"release":`, `,"instance":`, `,"subject":`}

// canonicalEntry reports whether b is json.Marshal's encoding of an entry
// with V == EntryVersion, which is what checkEntryReference accepts:
//
//   - the fields of entry in struct order, each key exactly as encoded;
//     type, time and actor always present, the optional strings present
//     only when non-empty;
//   - every string in encoding/json's unique canonical form (see
//     canonicalString);
//   - details, when present, any JSON value that json.Compact with HTML
//     escaping leaves unchanged (json.RawMessage is copied, not
//     re-encoded): valid JSON, no whitespace, no raw '<', '>', '&',
//     U+2028 or U+2029 (see compactValue);
//   - nothing after the closing brace.
func canonicalEntry(b []byte) bool {
	rest, ok := bytes.CutPrefix(b, []byte(entryHead))
	if !ok {
		return false
	}
	if rest, ok = canonicalString(rest); !ok {
		return false
	}
	if rest, ok = bytes.CutPrefix(rest, []byte(`,"time":`)); !ok {
		return false
	}
	if rest, ok = canonicalString(rest); !ok {
		return false
	}
	if rest, ok = bytes.CutPrefix(rest, []byte(`,"actor":`)); !ok {
		return false
	}
	if rest, ok = canonicalString(rest); !ok {
		return false
	}
	for _, key := range optionalFields {
		after, present := bytes.CutPrefix(rest, []byte(key))
		if !present {
			continue
		}
		if rest, ok = canonicalString(after); !ok || len(after)-len(rest) == 2 { // "" is omitted, never written
			return false
		}
	}
	if after, present := bytes.CutPrefix(rest, []byte(`,"details":`)); present {
		v := compactValue{depth: 1} // inside the entry object
		if rest, ok = v.value(after); !ok {
			return false
		}
	}
	return len(rest) == 1 && rest[0] == '}'
}

// canonicalString consumes one JSON string at the start of b that is
// exactly what encoding/json (with HTML escaping) writes for the string it
// decodes to, and returns what follows it. That form is unique: raw bytes
// except '"', '\\', control characters, '<', '>', '&', U+2028 and U+2029;
// short escapes \" \\ \b \f \n \r \t; \u00XX (lowercase hex) for the other
// control characters and for '<', '>', '&'; \u2028 and \u2029; valid UTF-8
// only (invalid bytes decode to U+FFFD, which re-encodes differently).
func canonicalString(b []byte) ([]byte, bool) {
	if len(b) == 0 || b[0] != '"' {
		return nil, false
	}
	for i := 1; i < len(b); {
		c := b[i]
		switch {
		case c == '"':
			return b[i+1:], true
		case c == '\\':
			n, ok := canonicalEscape(b[i:])
			if !ok {
				return nil, false
			}
			i += n
		case c < utf8.RuneSelf:
			if c < 0x20 || c == '<' || c == '>' || c == '&' {
				return nil, false
			}
			i++
		default:
			r, size := utf8.DecodeRune(b[i:])
			if (r == utf8.RuneError && size == 1) || r == '\u2028' || r == '\u2029' {
				return nil, false
			}
			i += size
		}
	}
	return nil, false
}

// canonicalEscape returns the length of the canonical escape sequence at
// the start of b (which starts with a backslash).
func canonicalEscape(b []byte) (int, bool) {
	if len(b) < 2 {
		return 0, false
	}
	switch b[1] {
	case '"', '\\', 'b', 'f', 'n', 'r', 't':
		return 2, true
	case 'u':
	default:
		return 0, false
	}
	if len(b) < 6 {
		return 0, false
	}
	r := 0
	for _, h := range b[2:6] {
		switch {
		case h >= '0' && h <= '9':
			r = r<<4 | int(h-'0')
		case h >= 'a' && h <= 'f':
			r = r<<4 | int(h-'a'+10)
		default: // upper-case hex is not what the encoder writes
			return 0, false
		}
	}
	switch {
	case r == '\b' || r == '\f' || r == '\n' || r == '\r' || r == '\t':
		return 0, false // written as a short escape
	case r < 0x20, r == '<', r == '>', r == '&', r == 0x2028, r == 0x2029:
		return 6, true
	}
	return 0, false
}

// maxNestingDepth is encoding/json's limit on nested arrays and objects,
// counted from the outermost value.
const maxNestingDepth = 10000

// compactValue validates one JSON value as encoding/json's scanner does,
// and additionally that json.Compact with HTML escaping would not change
// it: no whitespace outside strings, no raw '<', '>', '&' and no U+2028 or
// U+2029 bytes anywhere. Strings are checked as the scanner checks them
// (any escape it accepts, any byte >= 0x20), not for canonical form:
// details is copied through json.RawMessage, never re-encoded.
type compactValue struct {
	depth int // arrays and objects open around the value
}

func (v *compactValue) value(b []byte) ([]byte, bool) {
	if len(b) == 0 {
		return nil, false
	}
	switch c := b[0]; {
	case c == '{':
		return v.object(b)
	case c == '[':
		return v.array(b)
	case c == '"':
		return rawString(b)
	case c == '-' || (c >= '0' && c <= '9'):
		return number(b)
	case c == 't':
		return literal(b, "true")
	case c == 'f':
		return literal(b, "false")
	case c == 'n':
		return literal(b, "null")
	}
	return nil, false
}

func (v *compactValue) object(b []byte) ([]byte, bool) {
	if v.depth++; v.depth > maxNestingDepth {
		return nil, false
	}
	defer func() { v.depth-- }()
	rest := b[1:]
	if len(rest) > 0 && rest[0] == '}' {
		return rest[1:], true
	}
	for {
		var ok bool
		if rest, ok = rawString(rest); !ok {
			return nil, false
		}
		if len(rest) == 0 || rest[0] != ':' {
			return nil, false
		}
		if rest, ok = v.value(rest[1:]); !ok {
			return nil, false
		}
		if len(rest) == 0 {
			return nil, false
		}
		switch rest[0] {
		case ',':
			rest = rest[1:]
		case '}':
			return rest[1:], true
		default:
			return nil, false
		}
	}
}

func (v *compactValue) array(b []byte) ([]byte, bool) {
	if v.depth++; v.depth > maxNestingDepth {
		return nil, false
	}
	defer func() { v.depth-- }()
	rest := b[1:]
	if len(rest) > 0 && rest[0] == ']' {
		return rest[1:], true
	}
	for {
		var ok bool
		if rest, ok = v.value(rest); !ok {
			return nil, false
		}
		if len(rest) == 0 {
			return nil, false
		}
		switch rest[0] {
		case ',':
			rest = rest[1:]
		case ']':
			return rest[1:], true
		default:
			return nil, false
		}
	}
}

// rawString consumes a JSON string as the scanner accepts it, rejecting
// what json.Compact with HTML escaping would rewrite.
func rawString(b []byte) ([]byte, bool) {
	if len(b) == 0 || b[0] != '"' {
		return nil, false
	}
	for i := 1; i < len(b); {
		switch c := b[i]; {
		case c == '"':
			return b[i+1:], true
		case c == '\\':
			if i+1 >= len(b) {
				return nil, false
			}
			switch b[i+1] {
			case '"', '\\', '/', 'b', 'f', 'n', 'r', 't':
				i += 2
			case 'u':
				if i+6 > len(b) {
					return nil, false
				}
				for _, h := range b[i+2 : i+6] {
					if !isHex(h) {
						return nil, false
					}
				}
				i += 6
			default:
				return nil, false
			}
		case c < 0x20, c == '<', c == '>', c == '&':
			return nil, false
		case c == 0xE2 && i+2 < len(b) && b[i+1] == 0x80 && b[i+2]&^1 == 0xA8: // U+2028, U+2029
			return nil, false
		default:
			i++
		}
	}
	return nil, false
}

func isHex(c byte) bool {
	return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F')
}

// number consumes a JSON number: -?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?
func number(b []byte) ([]byte, bool) {
	i := 0
	if b[i] == '-' {
		i++
	}
	switch {
	case i < len(b) && b[i] == '0':
		i++
	case i < len(b) && b[i] >= '1' && b[i] <= '9':
		i = digits(b, i)
	default:
		return nil, false
	}
	if i < len(b) && b[i] == '.' {
		j := digits(b, i+1)
		if j == i+1 {
			return nil, false
		}
		i = j
	}
	if i < len(b) && (b[i] == 'e' || b[i] == 'E') {
		i++
		if i < len(b) && (b[i] == '+' || b[i] == '-') {
			i++
		}
		j := digits(b, i)
		if j == i {
			return nil, false
		}
		i = j
	}
	return b[i:], true
}

func digits(b []byte, i int) int {
	for i < len(b) && b[i] >= '0' && b[i] <= '9' {
		i++
	}
	return i
}

func literal(b []byte, lit string) ([]byte, bool) {
	rest, ok := bytes.CutPrefix(b, []byte(lit))
	return rest, ok
}
