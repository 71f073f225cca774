package client

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/countersign/countersign/internal/api"
)

// fakeClock records the waits the client asked for instead of sleeping.
type fakeClock struct {
	mu     sync.Mutex
	now    time.Time
	sleeps []time.Duration
}

func (f *fakeClock) Now() time.Time { f.mu.Lock(); defer f.mu.Unlock(); return f.now }
func (f *fakeClock) Sleep(_ context.Context, d time.Duration) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.sleeps = append(f.sleeps, d)
	f.now = f.now.Add(d)
	return nil
}

func problemResponse(w http.ResponseWriter, p *api.Problem, retryAfter string) {
	if retryAfter != "" {
		w.Header().Set("Retry-After", retryAfter)
	}
	w.Header().Set("Content-Type", api.ContentTypeProblem)
	w.WriteHeader(p.Status)
	json.NewEncoder(w).Encode(p)
}

func TestSignRetriesMaintenanceWithSameKey(t *testing.T) {
	var mu sync.Mutex
	var keys []string
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		keys = append(keys, r.Header.Get("Idempotency-Key"))
		n := len(keys)
		mu.Unlock()
		if r.Header.Get("Authorization") != "Bearer tok" {
			t.Errorf("Authorization = %q", r.Header.Get("Authorization"))
		}
		if n <= 2 {
			problemResponse(w, api.NewProblem(503, api.TypeMaintenance, "rollback in progress"), "3")
			return
		}
		json.NewEncoder(w).Encode(api.SignResponse{ID: "sig_1", Key: "k"})
	}))
	defer srv.Close()
	clk := &fakeClock{now: time.Unix(0, 0)}
	c, err := New(srv.URL, "tok", withClock(clk.Now, clk.Sleep))
	if err != nil {
		t.Fatal(err)
	}
	got, err := c.Sign(context.Background(), SignRequest{Key: "k", Format: FormatRaw, Document: []byte("x")})
	if err != nil {
		t.Fatalf("Sign: %v", err)
	}
	if got.ID != "sig_1" {
		t.Errorf("ID = %q", got.ID)
	}
	if len(keys) != 3 || keys[0] == "" || keys[0] != keys[1] || keys[1] != keys[2] {
		t.Errorf("idempotency keys across retries = %q; want one non-empty key reused 3 times", keys)
	}
	if want := []time.Duration{3 * time.Second, 3 * time.Second}; len(clk.sleeps) != 2 || clk.sleeps[0] != want[0] || clk.sleeps[1] != want[1] {
		t.Errorf("waits = %v; want %v (Retry-After honoured)", clk.sleeps, want)
	}
}

func TestRetryBudgetExhausted(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		problemResponse(w, api.NewProblem(503, api.TypeMaintenance, "down"), "4")
	}))
	defer srv.Close()
	clk := &fakeClock{now: time.Unix(0, 0)}
	c, _ := New(srv.URL, "tok", withClock(clk.Now, clk.Sleep),
		WithRetry(RetryPolicy{MaxAttempts: 100, Budget: 10 * time.Second, MaxDelay: 5 * time.Second, BaseDelay: time.Millisecond}))
	_, err := c.Sign(context.Background(), SignRequest{Key: "k", Format: FormatRaw, Document: []byte("x")})
	var re *RetriesExhaustedError
	if !errors.As(err, &re) {
		t.Fatalf("err = %v; want RetriesExhaustedError", err)
	}
	if !IsProblem(err, TypeMaintenance) {
		t.Errorf("last error is not the maintenance problem: %v", err)
	}
	var total time.Duration
	for _, d := range clk.sleeps {
		total += d
	}
	if total > 10*time.Second {
		t.Errorf("waited %v, over the 10s budget", total)
	}
}

func TestProblemsAreTypedAndNotRetried(t *testing.T) {
	tests := []struct {
		status int
		typ    string
	}{
		{404, api.TypeKeyNotFound},
		{422, api.TypeIdempotencyMismatch},
		{401, api.TypeUnauthorized},
		{413, api.TypeTooLarge},
	}
	for _, tt := range tests {
		t.Run(tt.typ, func(t *testing.T) {
			calls := 0
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				calls++
				problemResponse(w, api.NewProblem(tt.status, tt.typ, "nope"), "")
			}))
			defer srv.Close()
			c, _ := New(srv.URL, "tok")
			_, err := c.Sign(context.Background(), SignRequest{Key: "k", Format: FormatRaw, Document: []byte("x")})
			var p *Problem
			if !errors.As(err, &p) || p.Status != tt.status || p.Type != tt.typ {
				t.Fatalf("err = %#v; want problem %d %s", err, tt.status, tt.typ)
			}
			if calls != 1 {
				t.Errorf("calls = %d; a %d must not be retried", calls, tt.status)
			}
		})
	}
}

func TestRetryAfterHTTPDate(t *testing.T) {
	now := time.Date(2026, 11, 26, 10, 0, 0, 0, time.UTC)
	if got := retryAfter(now.Add(7*time.Second).Format(http.TimeFormat), now); got != 7*time.Second {
		t.Errorf("retryAfter(date) = %v; want 7s", got)
	}
	if got := retryAfter("garbage", now); got != 0 {
		t.Errorf("retryAfter(garbage) = %v; want 0", got)
	}
}

func TestNewRejectsBadURL(t *testing.T) {
	for _, u := range []string{"", "ftp://x", "localhost:7300", "http://"} {
		if _, err := New(u, "t"); err == nil {
			t.Errorf("New(%q) accepted", u)
		}
	}
}

func TestNewIdempotencyKeyIsTimeOrderedUUID(t *testing.T) {
	prev := ""
	seen := make(map[string]bool)
	for i := 0; i < 10000; i++ {
		k := NewIdempotencyKey()
		u, err := uuid.Parse(k)
		if err != nil || len(k) != 36 {
			t.Fatalf("key %q is not a canonical UUID: %v", k, err)
		}
		if u.Version() != 7 || u.Variant() != uuid.RFC4122 {
			t.Fatalf("key %q: version %d variant %v, want 7 and RFC 4122", k, u.Version(), u.Variant())
		}
		if seen[k] {
			t.Fatalf("key %q made twice", k)
		}
		seen[k] = true
		// Keys made one after the other sort one after the other: that
		// is what keeps the server's index inserts on adjacent pages.
		if k <= prev {
			t.Fatalf("key %q does not sort after the previous %q", k, prev)
		}
		prev = k
	}
}
