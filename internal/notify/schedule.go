package notify

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"slices"
	"sync"
	"time"
)

// Clock is the scheduler's time source.
type Clock interface {
	Now() time.Time
	After(d time.Duration) <-chan time.Time
}

// SystemClock is the real Clock.
type SystemClock struct{}

func (SystemClock) Now() time.Time                         { return time.Now() }
func (SystemClock) After(d time.Duration) <-chan time.Time { return time.After(d) }

// Defaults of SchedulerConfig.
const (
	DefaultCheckInterval = 30 * time.Second
	DefaultRemindEvery   = 15 * time.Minute
)

// Reminder is an update that is due: a notice promised its readers an
// update by DueAt.
type Reminder struct {
	Incident string
	Phase    Phase
	Tenant   string
	Revision int // the revision that promised the update
	DueAt    time.Time
	Overdue  time.Duration
	// Count is 1 for the first reminder of this revision, 2 for the next…
	Count int
}

// SchedulerConfig configures a Scheduler.
type SchedulerConfig struct {
	Clock         Clock         // default SystemClock
	CheckInterval time.Duration // how often Run checks (default DefaultCheckInterval)
	// RemindEvery repeats a reminder while the update stays overdue
	// (default DefaultRemindEvery).
	RemindEvery time.Duration
	// Remind is told of every due update (required): the control plane
	// puts it on the timeline and in front of the commander.
	Remind func(ctx context.Context, r Reminder) error
	// AutoSend lists the phases whose status update Update sends itself.
	AutoSend []Phase
	// Update renders and sends a status update for r (next revision) and
	// returns the notice sent, which the scheduler then tracks.
	Update func(ctx context.Context, r Reminder) (Notice, error)
	Logger *slog.Logger
}

// Scheduler tracks the "next update at" of every notice sent and reminds
// (or sends a status update) when one is due. Time comes only from the
// injected Clock.
type Scheduler struct {
	cfg SchedulerConfig

	mu    sync.Mutex
	items map[scheduleKey]*scheduled // s.mu must be held
}

type scheduleKey struct {
	incident string
	phase    Phase
	tenant   string
}

type scheduled struct {
	revision     int
	due          time.Time
	lastReminded time.Time
	count        int
}

// NewScheduler returns a Scheduler.
func NewScheduler(cfg SchedulerConfig) (*Scheduler, error) {
	if cfg.Remind == nil {
		return nil, fmt.Errorf("%w: a scheduler needs a Remind function", ErrConfig)
	}
	if len(cfg.AutoSend) > 0 && cfg.Update == nil {
		return nil, fmt.Errorf("%w: auto-send phases %v without an Update function", ErrConfig, cfg.AutoSend)
	}
	if cfg.Clock == nil {
		cfg.Clock = SystemClock{}
	}
	if cfg.CheckInterval <= 0 {
		cfg.CheckInterval = DefaultCheckInterval
	}
	if cfg.RemindEvery <= 0 {
		cfg.RemindEvery = DefaultRemindEvery
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	return &Scheduler{cfg: cfg, items: map[scheduleKey]*scheduled{}}, nil
}

// Track records the update n promises. A notice without NextUpdateAt
// promises none and clears the phase's (and tenant's) schedule; an older
// revision than the one tracked is ignored.
func (s *Scheduler) Track(n Notice) {
	k := scheduleKey{n.Incident, n.Phase, n.Tenant}
	s.mu.Lock()
	defer s.mu.Unlock()
	if cur, ok := s.items[k]; ok && cur.revision > n.Revision {
		return
	}
	if n.NextUpdateAt.IsZero() {
		delete(s.items, k)
		return
	}
	s.items[k] = &scheduled{revision: n.Revision, due: n.NextUpdateAt}
}

// Forget drops every schedule of an incident (at close).
func (s *Scheduler) Forget(incident string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for k := range s.items {
		if k.incident == incident {
			delete(s.items, k)
		}
	}
}

// Pending lists every tracked update, earliest first.
func (s *Scheduler) Pending() []Reminder {
	now := s.cfg.Clock.Now()
	s.mu.Lock()
	out := make([]Reminder, 0, len(s.items))
	for k, it := range s.items {
		out = append(out, reminder(k, it, now))
	}
	s.mu.Unlock()
	sortReminders(out)
	return out
}

func reminder(k scheduleKey, it *scheduled, now time.Time) Reminder {
	return Reminder{Incident: k.incident, Phase: k.phase, Tenant: k.tenant, Revision: it.revision, DueAt: it.due,
		Overdue: max(now.Sub(it.due), 0), Count: it.count}
}

func sortReminders(rs []Reminder) {
	slices.SortFunc(rs, func(a, b Reminder) int {
		return cmp.Or(a.DueAt.Compare(b.DueAt), cmp.Compare(a.Incident, b.Incident), cmp.Compare(a.Phase, b.Phase),
			cmp.Compare(a.Tenant, b.Tenant))
	})
}

// Tick fires every update that is due now: Remind, then (for auto-send
// phases) Update, whose notice replaces the schedule. A reminder repeats
// every RemindEvery while the update stays overdue. It returns the
// reminders fired.
func (s *Scheduler) Tick(ctx context.Context) ([]Reminder, error) {
	now := s.cfg.Clock.Now()
	var due []Reminder
	s.mu.Lock()
	for k, it := range s.items {
		if now.Before(it.due) || (!it.lastReminded.IsZero() && now.Sub(it.lastReminded) < s.cfg.RemindEvery) {
			continue
		}
		it.lastReminded = now
		it.count++
		due = append(due, reminder(k, it, now))
	}
	s.mu.Unlock()
	sortReminders(due)
	var errs []error
	for _, r := range due {
		if err := s.cfg.Remind(ctx, r); err != nil {
			errs = append(errs, fmt.Errorf("notify: remind %s phase %s: %w", r.Incident, r.Phase, err))
		}
		if !slices.Contains(s.cfg.AutoSend, r.Phase) {
			continue
		}
		n, err := s.cfg.Update(ctx, r)
		if err != nil {
			errs = append(errs, fmt.Errorf("notify: status update %s phase %s: %w", r.Incident, r.Phase, err))
			s.cfg.Logger.WarnContext(ctx, "status update failed", "incident", r.Incident, "phase", string(r.Phase),
				"tenant", r.Tenant, "err", err)
			continue
		}
		s.Track(n)
	}
	return due, errors.Join(errs...)
}

// Run ticks every CheckInterval until ctx is done. Tick errors are logged;
// a failed reminder or update is tried again RemindEvery later.
func (s *Scheduler) Run(ctx context.Context) error {
	for {
		if _, err := s.Tick(ctx); err != nil {
			s.cfg.Logger.WarnContext(ctx, "notify scheduler", "err", err)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-s.cfg.Clock.After(s.cfg.CheckInterval):
		}
	}
}
