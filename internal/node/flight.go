package node

import (
	"bytes"
	"sync"
)

// flights de-duplicates concurrent requests with the same tenant and
// Idempotency-Key inside one process: the first runs, the others wait for
// its outcome. Across processes the store's unique constraint decides.
type flights struct {
	mu sync.Mutex
	m  map[string]*flight // f.mu must be held
}

type flight struct {
	reqHash []byte
	done    chan struct{}
	// Set before done is closed.
	status int
	body   []byte
	err    error
}

// join returns the flight for key. leader is true when the caller must run
// the request and call finish.
func (f *flights) join(key string, reqHash []byte) (fl *flight, leader bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if fl, ok := f.m[key]; ok {
		return fl, false
	}
	fl = &flight{reqHash: reqHash, done: make(chan struct{})}
	f.m[key] = fl
	return fl, true
}

func (f *flights) finish(key string, fl *flight, status int, body []byte, err error) {
	fl.status, fl.body, fl.err = status, body, err
	f.mu.Lock()
	delete(f.m, key)
	f.mu.Unlock()
	close(fl.done)
}

func (fl *flight) sameRequest(reqHash []byte) bool { return bytes.Equal(fl.reqHash, reqHash) }
