package bench

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/url"
	"strconv"
	"time"

	"github.com/google/uuid"

	"github.com/countersign/countersign/internal/api"
)

// SignConn is one load-generator worker's keep-alive HTTP/1.1 connection
// to a signing node, sending one pre-encoded request over and over.
//
// It is written on net.Conn and bufio rather than net/http and
// encoding/json on purpose: the load generator shares the cores with the
// server it measures, so every microsecond of its CPU is taken from the
// server and lowers the measured ratio. net/http's client plus JSON
// encoding and decoding cost 35–48 µs per request; this costs a few. The
// request is encoded once; per request only the idempotency keys' fixed-
// width keys are rewritten in place. The response is parsed only as far
// as the bench needs: status line, Content-Length or chunked framing,
// Connection: close, and the body is checked for the expected success
// shape; anything else is decoded with encoding/json for its problem.
//
// A SignConn is not safe for concurrent use: one per worker.
type SignConn struct {
	addr, host string
	tls        *tls.Config
	req        []byte // the whole request: header and body
	slots      []int  // offsets in req of each idempotency key's UUID
	items      int    // batch items; 0 for a single POST /v1/sign
	keys       KeyStyle
	conn       net.Conn
	br         *bufio.Reader
	stopCancel func() bool
	body       []byte
	// Dials counts the connections made, for tests and diagnostics.
	Dials int
}

// KeyStyle is how a SignConn makes idempotency keys. The store indexes
// signatures by (tenant, idempotency key), so the style decides where in
// that index each new signature lands: the load generator must say which
// one it measured.
type KeyStyle int

const (
	// KeysUUIDv7 are time-ordered UUIDs (RFC 9562 version 7), what
	// client.NewIdempotencyKey makes: consecutive keys, from every worker,
	// sort next to each other.
	KeysUUIDv7 KeyStyle = iota
	// KeysUUIDv4 are random UUIDs: every key lands on a random page of the
	// index (what a client that draws random keys costs the server).
	KeysUUIDv4
)

// String returns the style's flag value.
func (k KeyStyle) String() string {
	if k == KeysUUIDv4 {
		return "uuidv4"
	}
	return "uuidv7"
}

// ParseKeyStyle parses "uuidv7" or "uuidv4".
func ParseKeyStyle(s string) (KeyStyle, error) {
	switch s {
	case "uuidv7":
		return KeysUUIDv7, nil
	case "uuidv4":
		return KeysUUIDv4, nil
	}
	return 0, fmt.Errorf("bench: idempotency key style %q: want uuidv7 or uuidv4", s)
}

func (k KeyStyle) next() (uuid.UUID, error) {
	if k == KeysUUIDv4 {
		return uuid.NewRandom()
	}
	return uuid.NewV7()
}

// keyWidth is the width of the UUID at the end of every idempotency key:
// fixed, so Content-Length never changes.
const keyWidth = 36

// NewSignConn prepares a worker's connection to base (http or https URL)
// for POST /v1/sign of req, or POST /v1/sign:batch of batch copies of req
// when batch > 0. Every idempotency key is keyPrefix, then a fresh UUID of
// the given style per request and item. Nothing is dialled until the first
// Do.
func NewSignConn(base, token, keyPrefix string, keys KeyStyle, req api.SignRequest, batch int) (*SignConn, error) {
	u, err := url.Parse(base)
	if err != nil {
		return nil, fmt.Errorf("bench: server URL: %w", err)
	}
	c := &SignConn{host: u.Host, items: batch, keys: keys}
	port := u.Port()
	switch u.Scheme {
	case "http":
		if port == "" {
			port = "80"
		}
	case "https":
		if port == "" {
			port = "443"
		}
		c.tls = &tls.Config{ServerName: u.Hostname(), NextProtos: []string{"http/1.1"}}
	default:
		return nil, fmt.Errorf("bench: server URL %q: scheme must be http or https", base)
	}
	c.addr = net.JoinHostPort(u.Hostname(), port)
	prefix := u.EscapedPath()
	for len(prefix) > 0 && prefix[len(prefix)-1] == '/' {
		prefix = prefix[:len(prefix)-1]
	}

	placeholder := keyPrefix + string(bytes.Repeat([]byte{'0'}, keyWidth))
	var body []byte
	path := prefix + "/v1/sign"
	if batch > 0 {
		path += ":batch"
		items := make([]api.BatchSignItem, batch)
		for i := range items {
			items[i] = api.BatchSignItem{IdempotencyKey: placeholder, SignRequest: req}
		}
		body, err = json.Marshal(api.BatchSignRequest{Items: items})
	} else {
		body, err = json.Marshal(req)
	}
	if err != nil {
		return nil, fmt.Errorf("bench: encode request: %w", err)
	}
	var h bytes.Buffer
	fmt.Fprintf(&h, "POST %s HTTP/1.1\r\nHost: %s\r\nAuthorization: Bearer %s\r\nContent-Type: application/json\r\nAccept: application/json, application/problem+json\r\nContent-Length: %d\r\n", path, u.Host, token, len(body))
	if batch == 0 {
		h.WriteString("Idempotency-Key: ")
		c.slots = append(c.slots, h.Len()+len(keyPrefix))
		h.WriteString(placeholder)
		h.WriteString("\r\n")
	}
	h.WriteString("\r\n")
	head := h.Len()
	h.Write(body)
	c.req = h.Bytes()
	if batch > 0 {
		// The placeholder is plain ASCII, so json.Marshal wrote it as is.
		quoted := []byte(`"` + placeholder + `"`)
		for off := 0; ; {
			i := bytes.Index(c.req[head+off:], quoted)
			if i < 0 {
				break
			}
			c.slots = append(c.slots, head+off+i+1+len(keyPrefix))
			off += i + len(quoted)
		}
		if len(c.slots) != batch {
			return nil, fmt.Errorf("bench: key prefix %q also occurs in the request body", keyPrefix)
		}
	}
	return c, nil
}

// Close closes the connection, if any.
func (c *SignConn) Close() error {
	if c.conn == nil {
		return nil
	}
	c.stopCancel()
	err := c.conn.Close()
	c.conn, c.br = nil, nil
	return err
}

func (c *SignConn) dial(ctx context.Context) error {
	var d net.Dialer
	conn, err := d.DialContext(ctx, "tcp", c.addr)
	if err != nil {
		return fmt.Errorf("bench: dial %s: %w", c.addr, err)
	}
	if c.tls != nil {
		tc := tls.Client(conn, c.tls)
		if err := tc.HandshakeContext(ctx); err != nil {
			conn.Close()
			return fmt.Errorf("bench: TLS handshake with %s: %w", c.addr, err)
		}
		conn = tc
	}
	c.conn, c.br, c.Dials = conn, bufio.NewReaderSize(conn, 16<<10), c.Dials+1
	// Reads and writes end when ctx does (the run's deadline or a cancel).
	c.stopCancel = context.AfterFunc(ctx, func() { conn.SetDeadline(time.Unix(1, 0)) })
	return nil
}

// ResponseError is a request the server did not answer with success.
type ResponseError struct {
	Status int    // HTTP status, or the failed batch item's status
	Type   string // the problem type URI; "" when the body was no problem
	Detail string // the problem detail, or the start of the body
	Item   int    // the failed item's index in a batch; -1 for the request itself
}

func (e *ResponseError) Error() string {
	where := ""
	if e.Item >= 0 {
		where = fmt.Sprintf("batch item %d: ", e.Item)
	}
	typ := e.Type
	if typ == "" {
		typ = "no problem body"
	}
	return fmt.Sprintf("%s%d (%s): %s", where, e.Status, typ, e.Detail)
}

// Do sends the request once with fresh idempotency keys and reads the
// answer. A nil error means HTTP 200 and, for a batch, every item 200. It
// reconnects when the connection was closed: a request whose write or
// read fails on a reused connection before any byte of the answer came is
// sent once more on a new one (the server closed an idle connection);
// any other connection failure is returned and the next Do dials anew.
func (c *SignConn) Do(ctx context.Context) error {
	for _, off := range c.slots {
		u, err := c.keys.next()
		if err != nil {
			return fmt.Errorf("bench: idempotency key: %w", err)
		}
		copy(c.req[off:off+keyWidth], u.String())
	}
	for attempt := 0; ; attempt++ {
		reused := c.conn != nil
		if !reused {
			if err := c.dial(ctx); err != nil {
				return err
			}
		}
		status, keep, got, err := c.roundTrip()
		if err != nil {
			c.Close()
			if ctx.Err() != nil {
				return ctx.Err()
			}
			if reused && !got && attempt == 0 {
				continue
			}
			return fmt.Errorf("bench: %s: %w", c.addr, err)
		}
		if !keep {
			c.Close()
		}
		return c.check(status)
	}
}

// roundTrip writes the request and reads the response into c.body. got
// says whether any byte of the response arrived.
func (c *SignConn) roundTrip() (status int, keep, got bool, err error) {
	if _, err := c.conn.Write(c.req); err != nil {
		return 0, false, false, err
	}
	line, err := c.br.ReadSlice('\n')
	if err != nil {
		return 0, false, len(line) > 0, err
	}
	// "HTTP/1.1 200 OK\r\n"
	if len(line) < 12 || !bytes.HasPrefix(line, []byte("HTTP/1.")) || line[8] != ' ' {
		return 0, false, true, fmt.Errorf("malformed status line %q", line)
	}
	status, err = strconv.Atoi(string(line[9:12]))
	if err != nil {
		return 0, false, true, fmt.Errorf("malformed status line %q", line)
	}
	keep = line[7] == '1'
	length, chunked := -1, false
	for {
		h, err := c.br.ReadSlice('\n')
		if err != nil {
			return 0, false, true, err
		}
		h = bytes.TrimRight(h, "\r\n")
		if len(h) == 0 {
			break
		}
		name, val, ok := bytes.Cut(h, []byte(":"))
		if !ok {
			return 0, false, true, fmt.Errorf("malformed header line %q", h)
		}
		val = bytes.TrimSpace(val)
		switch {
		case asciiEqualFold(name, "Content-Length"):
			if length, err = strconv.Atoi(string(val)); err != nil || length < 0 {
				return 0, false, true, fmt.Errorf("bad Content-Length %q", val)
			}
		case asciiEqualFold(name, "Transfer-Encoding"):
			chunked = asciiEqualFold(val, "chunked")
		case asciiEqualFold(name, "Connection"):
			if asciiEqualFold(val, "close") {
				keep = false
			}
		}
	}
	c.body = c.body[:0]
	switch {
	case chunked:
		err = c.readChunked()
	case length >= 0:
		c.body = growTo(c.body, length)
		_, err = io.ReadFull(c.br, c.body)
	default: // body until the server closes
		keep = false
		c.body, err = readAllInto(c.br, c.body)
	}
	return status, keep, true, err
}

func (c *SignConn) readChunked() error {
	for {
		line, err := c.br.ReadSlice('\n')
		if err != nil {
			return err
		}
		line = bytes.TrimRight(line, "\r\n")
		if i := bytes.IndexByte(line, ';'); i >= 0 {
			line = line[:i]
		}
		n, err := strconv.ParseUint(string(bytes.TrimSpace(line)), 16, 31)
		if err != nil {
			return fmt.Errorf("bad chunk size %q", line)
		}
		if n == 0 {
			for { // trailers, up to the empty line
				t, err := c.br.ReadSlice('\n')
				if err != nil {
					return err
				}
				if len(bytes.TrimRight(t, "\r\n")) == 0 {
					return nil
				}
			}
		}
		start := len(c.body)
		c.body = growTo(c.body, start+int(n))
		if _, err := io.ReadFull(c.br, c.body[start:]); err != nil {
			return err
		}
		if crlf, err := c.br.ReadSlice('\n'); err != nil || len(bytes.TrimRight(crlf, "\r\n")) != 0 {
			return fmt.Errorf("chunk not followed by CRLF")
		}
	}
}

var (
	singleOK = []byte(`"signature":"`)
	batchOK  = []byte(`{"status":200,"signature":{`)
)

// check turns the response in c.body into nil or a *ResponseError. The
// success shapes are recognised by a substring count; anything else is
// decoded in full so the error names the problem type.
func (c *SignConn) check(status int) error {
	if status != 200 {
		var p api.Problem
		if err := json.Unmarshal(c.body, &p); err != nil || p.Status == 0 {
			return &ResponseError{Status: status, Detail: string(c.body[:min(len(c.body), 200)]), Item: -1}
		}
		return &ResponseError{Status: status, Type: p.Type, Detail: p.Detail, Item: -1}
	}
	if c.items == 0 {
		if !bytes.Contains(c.body, singleOK) {
			return &ResponseError{Status: status, Detail: "200 without a signature: " + string(c.body[:min(len(c.body), 200)]), Item: -1}
		}
		return nil
	}
	if bytes.Count(c.body, batchOK) == c.items {
		return nil
	}
	var resp api.BatchSignResponse
	if err := json.Unmarshal(c.body, &resp); err != nil {
		return &ResponseError{Status: status, Detail: "undecodable batch response: " + err.Error(), Item: -1}
	}
	for i, r := range resp.Results {
		if r.Status != 200 || r.Signature == nil {
			e := &ResponseError{Status: r.Status, Item: i}
			if r.Problem != nil {
				e.Type, e.Detail = r.Problem.Type, r.Problem.Detail
			}
			return e
		}
	}
	return &ResponseError{Status: status, Detail: fmt.Sprintf("%d results for %d items", len(resp.Results), c.items), Item: -1}
}

// Body is the last response body read; valid until the next Do.
func (c *SignConn) Body() []byte { return c.body }

func growTo(b []byte, n int) []byte {
	if cap(b) >= n {
		return b[:n]
	}
	nb := make([]byte, n, max(n, 2*cap(b)))
	copy(nb, b)
	return nb
}

func readAllInto(r io.Reader, b []byte) ([]byte, error) {
	var buf bytes.Buffer
	buf.Write(b)
	_, err := buf.ReadFrom(io.LimitReader(r, 256<<20))
	return buf.Bytes(), err
}

func asciiEqualFold(b []byte, s string) bool {
	if len(b) != len(s) {
		return false
	}
	for i := range len(b) {
		x, y := b[i], s[i]
		if 'A' <= x && x <= 'Z' {
			x += 'a' - 'A'
		}
		if 'A' <= y && y <= 'Z' {
			y += 'a' - 'A'
		}
		if x != y {
			return false
		}
	}
	return true
}
