package notify

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"
)

// fakeClock is an injected Clock: time moves only when the test says.
type fakeClock struct {
	mu      sync.Mutex
	now     time.Time
	waiters []waiter
}

type waiter struct {
	at time.Time
	ch chan time.Time
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *fakeClock) After(d time.Duration) <-chan time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	ch := make(chan time.Time, 1)
	c.waiters = append(c.waiters, waiter{c.now.Add(d), ch})
	return ch
}

func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
	kept := c.waiters[:0]
	for _, w := range c.waiters {
		if !w.at.After(c.now) {
			w.ch <- c.now
		} else {
			kept = append(kept, w)
		}
	}
	c.waiters = kept
}

func (c *fakeClock) pending() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.waiters)
}

func TestSchedulerReminders(t *testing.T) {
	t0 := time.Date(2026, 3, 2, 9, 15, 0, 0, time.UTC)
	clk := &fakeClock{now: t0}
	var reminded []Reminder
	var updates []Reminder
	s, err := NewScheduler(SchedulerConfig{Clock: clk, RemindEvery: 10 * time.Minute, AutoSend: []Phase{PhaseInternal},
		Remind: func(_ context.Context, r Reminder) error { reminded = append(reminded, r); return nil },
		Update: func(_ context.Context, r Reminder) (Notice, error) {
			updates = append(updates, r)
			return Notice{Incident: r.Incident, Phase: r.Phase, Revision: r.Revision + 1, NextUpdateAt: clk.Now().Add(30 * time.Minute)}, nil
		}})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	s.Track(Notice{Incident: "INC-7", Phase: PhaseInternal, Revision: 1, NextUpdateAt: t0.Add(30 * time.Minute)})
	s.Track(Notice{Incident: "INC-7", Phase: PhaseCustomer, Tenant: "acme", Revision: 1, NextUpdateAt: t0.Add(time.Hour)})
	s.Track(Notice{Incident: "INC-7", Phase: PhaseCustomer, Tenant: "globex", Revision: 1, NextUpdateAt: t0.Add(time.Hour)})
	s.Track(Notice{Incident: "INC-7", Phase: PhaseRemediation, Tenant: "acme", Revision: 1}) // promises nothing
	if p := s.Pending(); len(p) != 3 || p[0].Phase != PhaseInternal {
		t.Fatalf("pending %+v", p)
	}

	step := func(d time.Duration, wantReminded, wantUpdates int) {
		t.Helper()
		clk.Advance(d)
		if _, err := s.Tick(ctx); err != nil {
			t.Fatal(err)
		}
		if len(reminded) != wantReminded || len(updates) != wantUpdates {
			t.Fatalf("at +%v: %d reminders, %d updates; want %d, %d", clk.Now().Sub(t0), len(reminded), len(updates), wantReminded, wantUpdates)
		}
	}
	step(29*time.Minute, 0, 0)
	step(time.Minute, 1, 1) // A due at +30m: reminded and auto-sent (revision 2, due +60m)
	if r := reminded[0]; r.Phase != PhaseInternal || r.Revision != 1 || r.Overdue != 0 || r.Count != 1 {
		t.Errorf("reminder %+v", r)
	}
	step(5*time.Minute, 1, 1)
	step(25*time.Minute, 4, 2) // +60m: A rev 2 auto-sent; B acme and globex reminded only
	if reminded[1].Phase != PhaseInternal || reminded[1].Revision != 2 || reminded[2].Tenant != "acme" || reminded[3].Tenant != "globex" {
		t.Errorf("reminders %+v", reminded[1:])
	}
	step(5*time.Minute, 4, 2) // B reminders repeat only every 10m
	step(5*time.Minute, 6, 2) // +70m: B still overdue, reminded again
	if r := reminded[5]; r.Count != 2 || r.Overdue != 10*time.Minute {
		t.Errorf("repeat reminder %+v", r)
	}
	// A new customer notice replaces the schedule; an older revision does not.
	s.Track(Notice{Incident: "INC-7", Phase: PhaseCustomer, Tenant: "acme", Revision: 2, NextUpdateAt: clk.Now().Add(time.Hour)})
	s.Track(Notice{Incident: "INC-7", Phase: PhaseCustomer, Tenant: "acme", Revision: 1, NextUpdateAt: t0})
	step(10*time.Minute, 7, 2) // only globex
	if reminded[6].Tenant != "globex" {
		t.Errorf("reminder %+v", reminded[6])
	}
	s.Forget("INC-7")
	step(24*time.Hour, 7, 2)
}

func TestSchedulerUpdateFailureKeepsReminding(t *testing.T) {
	t0 := time.Date(2026, 3, 2, 9, 15, 0, 0, time.UTC)
	clk := &fakeClock{now: t0}
	calls := 0
	s, _ := NewScheduler(SchedulerConfig{Clock: clk, RemindEvery: time.Minute, AutoSend: []Phase{PhaseInternal},
		Remind: func(context.Context, Reminder) error { return nil },
		Update: func(context.Context, Reminder) (Notice, error) { calls++; return Notice{}, errors.New("smtp down") }})
	s.Track(Notice{Incident: "INC-1", Phase: PhaseInternal, Revision: 1, NextUpdateAt: t0})
	if _, err := s.Tick(context.Background()); err == nil {
		t.Fatal("failed update not reported")
	}
	clk.Advance(time.Minute)
	s.Tick(context.Background())
	if calls != 2 || len(s.Pending()) != 1 {
		t.Fatalf("calls %d, pending %+v", calls, s.Pending())
	}
}

// Run checks on the injected clock's interval and stops with its context.
func TestSchedulerRun(t *testing.T) {
	t0 := time.Date(2026, 3, 2, 9, 15, 0, 0, time.UTC)
	clk := &fakeClock{now: t0}
	got := make(chan Reminder, 4)
	s, _ := NewScheduler(SchedulerConfig{Clock: clk, CheckInterval: time.Minute,
		Remind: func(_ context.Context, r Reminder) error { got <- r; return nil }})
	s.Track(Notice{Incident: "INC-2", Phase: PhaseRegulator, Revision: 1, NextUpdateAt: t0.Add(90 * time.Second)})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx) }()
	waitFor := func() {
		deadline := time.Now().Add(5 * time.Second)
		for clk.pending() == 0 {
			if time.Now().After(deadline) {
				t.Fatal("Run never waited on the clock")
			}
			time.Sleep(time.Millisecond)
		}
	}
	waitFor()
	clk.Advance(time.Minute) // +1m: not due
	waitFor()
	select {
	case r := <-got:
		t.Fatalf("reminded early: %+v", r)
	default:
	}
	clk.Advance(time.Minute) // +2m: due
	select {
	case r := <-got:
		if r.Incident != "INC-2" || r.Overdue != 30*time.Second {
			t.Errorf("reminder %+v", r)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("no reminder")
	}
	cancel()
	if err := <-done; !errors.Is(err, context.Canceled) {
		t.Errorf("Run = %v", err)
	}
}
