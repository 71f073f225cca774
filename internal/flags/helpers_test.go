package flags

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/countersign/countersign/internal/auditlog"
	"github.com/open-feature/go-sdk/openfeature"
)

// memRecorder keeps recorded events in memory. before, when set, runs
// inside Record (to look at the world at record time); fail makes Record
// refuse.
type memRecorder struct {
	mu     sync.Mutex
	events []auditlog.Event
	before func(ev auditlog.Event)
	fail   error
}

func (m *memRecorder) Record(_ context.Context, ev auditlog.Event) error {
	if m.before != nil {
		m.before(ev)
	}
	if m.fail != nil {
		return m.fail
	}
	if _, err := ev.Record(); err != nil { // the event must be a valid audit entry
		return err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	m.events = append(m.events, ev)
	return nil
}

func (m *memRecorder) all() []auditlog.Event {
	m.mu.Lock()
	defer m.mu.Unlock()
	return append([]auditlog.Event(nil), m.events...)
}

var errRecorderDown = errors.New("audit log unavailable")

func quietLogger() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

// copyFixture copies testdata/name into a temp dir and returns its path.
func copyFixture(t *testing.T, name string) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("testdata", name))
	if err != nil {
		t.Fatal(err)
	}
	return writeTemp(t, b)
}

func writeTemp(t *testing.T, b []byte) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "flags.json")
	if err := os.WriteFile(p, b, 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

// openSet opens path with a quiet logger and a ticker the test drives.
func openSet(t testing.TB, path string) (*Set, chan time.Time) {
	t.Helper()
	tick := make(chan time.Time)
	s, err := New(t.Context(), Config{
		Path:   path,
		Logger: quietLogger(),
		Ticker: func(time.Duration) (<-chan time.Time, func()) { return tick, func() {} },
		Now:    func() time.Time { return time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC) },
	})
	if err != nil {
		t.Fatalf("New(%s): %v", path, err)
	}
	t.Cleanup(func() {
		if err := s.Close(context.WithoutCancel(t.Context())); err != nil {
			t.Errorf("Close: %v", err)
		}
	})
	return s, tick
}

// events subscribes to the Set's client events of one type.
func events(t *testing.T, s *Set, typ openfeature.EventType) <-chan openfeature.EventDetails {
	t.Helper()
	ch := make(chan openfeature.EventDetails, 64)
	cb := func(d openfeature.EventDetails) { ch <- d }
	s.Client().AddHandler(typ, &cb)
	return ch
}

// waitEvent waits for the next event on ch that matches, skipping others.
func waitEvent(t *testing.T, ch <-chan openfeature.EventDetails, typ openfeature.EventType, match func(openfeature.EventDetails) bool) openfeature.EventDetails {
	t.Helper()
	deadline := time.After(10 * time.Second)
	for {
		select {
		case d := <-ch:
			if match(d) {
				return d
			}
		case <-deadline:
			t.Fatalf("no %s event within 10s", typ)
			return openfeature.EventDetails{}
		}
	}
}

func readFile(t *testing.T, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return b
}
