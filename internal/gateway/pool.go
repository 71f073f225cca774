package gateway

import (
	"fmt"
	"net/url"
	"sync"
	"sync/atomic"
	"time"
)

// backend is one node address in a pool. Its counters are atomics so the
// request path never takes a lock.
type backend struct {
	raw string
	url *url.URL

	healthy   atomic.Bool
	inFlight  atomic.Int64
	forwarded atomic.Uint64
	failed    atomic.Uint64 // forwarded requests it did not answer
	// failedRun counts the forwarded requests it did not answer since the
	// last one it did; at ejectAfter the backend is taken out of rotation.
	failedRun atomic.Int64

	mu        sync.Mutex // guards lastCheck, lastErr
	lastCheck time.Time
	lastErr   string
}

func (b *backend) setHealth(ok bool, at time.Time, errText string) (changed bool) {
	b.mu.Lock()
	b.lastCheck, b.lastErr = at, errText
	b.mu.Unlock()
	return b.healthy.Swap(ok) != ok
}

func (b *backend) state() BackendState {
	b.mu.Lock()
	defer b.mu.Unlock()
	return BackendState{URL: b.raw, Healthy: b.healthy.Load(), LastCheck: b.lastCheck, LastError: b.lastErr,
		InFlight: b.inFlight.Load(), Forwarded: b.forwarded.Load(), Failed: b.failed.Load()}
}

// pool is a named set of backends. The backend slice is replaced whole
// (copy on write); pool counters survive membership changes.
type pool struct {
	name     string
	backends atomic.Pointer[[]*backend]
	next     atomic.Uint64 // round-robin cursor

	inFlight    atomic.Int64
	forwarded   atomic.Uint64
	lastForward atomic.Int64 // unix nanoseconds of the last forward; 0: never
}

func newPool(name string) *pool {
	p := &pool{name: name}
	p.backends.Store(&[]*backend{})
	return p
}

func (p *pool) members() []*backend { return *p.backends.Load() }

// healthy reports whether at least one backend other than avoid (nil:
// none excluded) may take traffic.
func (p *pool) healthy(avoid *backend) bool {
	for _, b := range p.members() {
		if b != avoid && b.healthy.Load() {
			return true
		}
	}
	return false
}

// pick returns a healthy backend other than avoid, round-robin, or nil.
func (p *pool) pick(avoid *backend) *backend {
	bs := p.members()
	n := uint64(len(bs))
	if n == 0 {
		return nil
	}
	start := p.next.Add(1)
	for i := range n {
		if b := bs[(start+i)%n]; b != avoid && b.healthy.Load() {
			return b
		}
	}
	return nil
}

// parseBackends validates backend URLs: absolute http(s) with a host, no
// duplicates. Existing backends with the same URL are reused so their
// health and counters carry over.
func parseBackends(raws []string, existing []*backend) ([]*backend, []*backend, error) {
	old := make(map[string]*backend, len(existing))
	for _, b := range existing {
		old[b.raw] = b
	}
	seen := make(map[string]bool, len(raws))
	out := make([]*backend, 0, len(raws))
	var added []*backend
	for _, raw := range raws {
		u, err := url.Parse(raw)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			return nil, nil, fmt.Errorf("%w: backend %q is not an absolute http(s) URL", ErrInvalid, raw)
		}
		if seen[raw] {
			return nil, nil, fmt.Errorf("%w: backend %q listed twice", ErrInvalid, raw)
		}
		seen[raw] = true
		if b, ok := old[raw]; ok {
			out = append(out, b)
			continue
		}
		b := &backend{raw: raw, url: u}
		out = append(out, b)
		added = append(added, b)
	}
	return out, added, nil
}
