package notify

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"time"
)

// Channel delivers notices to one destination.
type Channel interface {
	// Name is the configured channel name (part of every delivery ID).
	Name() string
	// Kind is the channel type: webhook, slack, smtp, pagerduty or file.
	Kind() string
	// Deliver delivers d, retrying transient failures itself. Delivering
	// the same d.ID again must not deliver twice where the destination
	// can tell (file) and must carry the same ID where it cannot.
	Deliver(ctx context.Context, d Delivery) (Receipt, error)
}

// accepter is implemented by channels that take only some notices (e.g.
// SMTP without recipients for a tenant).
type accepter interface {
	Accepts(n Notice) bool
}

// Delivery is one notice on its way to one channel.
type Delivery struct {
	ID     string
	Notice Notice
	SentAt time.Time
}

// Receipt is the outcome of a successful delivery.
type Receipt struct {
	Attempts int
	// Duplicate: the destination already had this delivery (nothing new
	// was delivered).
	Duplicate bool
	Detail    string
}

// Sleeper waits for d or until ctx is done. Tests inject one that records
// the waits instead of sleeping.
type Sleeper func(ctx context.Context, d time.Duration) error

// SleepContext is the real Sleeper.
func SleepContext(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}

// Retry is the retry policy of a channel: exponential backoff from Initial,
// doubling up to Max, for at most Attempts tries. A Retry-After answer
// replaces the backoff (capped at Max).
type Retry struct {
	Attempts int           // default 5
	Initial  time.Duration // default 1s
	Max      time.Duration // default 1m
	Sleep    Sleeper       // default SleepContext
}

// Defaults of Retry.
const (
	DefaultRetryAttempts = 5
	DefaultRetryInitial  = time.Second
	DefaultRetryMax      = time.Minute
)

func (r Retry) withDefaults() Retry {
	if r.Attempts <= 0 {
		r.Attempts = DefaultRetryAttempts
	}
	if r.Initial <= 0 {
		r.Initial = DefaultRetryInitial
	}
	if r.Max <= 0 {
		r.Max = DefaultRetryMax
	}
	if r.Sleep == nil {
		r.Sleep = SleepContext
	}
	return r
}

// retryable is an error that may succeed later, possibly after a wait the
// destination asked for.
type retryable struct {
	err   error
	after time.Duration
}

func (e *retryable) Error() string { return e.err.Error() }
func (e *retryable) Unwrap() error { return e.err }

// do runs f until it succeeds, fails permanently (any error that is not
// *retryable) or the attempts are used up. It returns the attempts made.
func (r Retry) do(ctx context.Context, f func(attempt int) error) (int, error) {
	r = r.withDefaults()
	wait := r.Initial
	for attempt := 1; ; attempt++ {
		err := f(attempt)
		var re *retryable
		if err == nil || !errors.As(err, &re) {
			return attempt, err
		}
		if attempt >= r.Attempts {
			return attempt, fmt.Errorf("gave up after %d attempts: %w", attempt, re.err)
		}
		d := wait
		if re.after > 0 {
			d = min(re.after, r.Max)
		}
		if err := r.Sleep(ctx, d); err != nil {
			return attempt, fmt.Errorf("%w (after %d attempts: %v)", err, attempt, re.err)
		}
		wait = min(wait*2, r.Max)
	}
}

// poster posts JSON with retries. Errors never contain the URL, which may
// carry a secret (Slack webhook URLs do).
type poster struct {
	client *http.Client
	retry  Retry
}

// post sends body to target; header sets per-attempt headers. It returns
// the attempts made and the final answer's body.
func (p poster) post(ctx context.Context, target string, body []byte, header func(http.Header)) (int, []byte, error) {
	client := p.client
	if client == nil {
		client = &http.Client{Timeout: 30 * time.Second}
	}
	var answer []byte
	n, err := p.retry.do(ctx, func(int) error {
		req, err := http.NewRequestWithContext(ctx, http.MethodPost, target, bytes.NewReader(body))
		if err != nil {
			return &PermanentError{Err: errors.New("invalid URL")}
		}
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("User-Agent", "countersign-notify")
		if header != nil {
			header(req.Header)
		}
		resp, err := client.Do(req)
		if err != nil {
			var ue *url.Error
			if errors.As(err, &ue) {
				err = ue.Err // drop the URL
			}
			if ctx.Err() != nil {
				return ctx.Err()
			}
			return &retryable{err: fmt.Errorf("POST: %w", err)}
		}
		defer resp.Body.Close()
		answer, _ = io.ReadAll(io.LimitReader(resp.Body, 64<<10))
		switch {
		case resp.StatusCode >= 200 && resp.StatusCode < 300:
			return nil
		case resp.StatusCode == http.StatusRequestTimeout, resp.StatusCode == http.StatusTooEarly,
			resp.StatusCode == http.StatusTooManyRequests, resp.StatusCode >= 500:
			return &retryable{err: fmt.Errorf("HTTP %d: %s", resp.StatusCode, snippet(answer)), after: retryAfter(resp.Header)}
		default:
			return &PermanentError{Err: fmt.Errorf("HTTP %d: %s", resp.StatusCode, snippet(answer))}
		}
	})
	return n, answer, err
}

func retryAfter(h http.Header) time.Duration {
	v := h.Get("Retry-After")
	if v == "" {
		return 0
	}
	if s, err := strconv.Atoi(v); err == nil && s >= 0 {
		return time.Duration(s) * time.Second
	}
	if t, err := http.ParseTime(v); err == nil {
		return max(time.Until(t), 0)
	}
	return 0
}

func snippet(b []byte) string {
	const n = 200
	s := string(bytes.TrimSpace(b))
	if len(s) > n {
		s = s[:n] + "…"
	}
	if s == "" {
		return "(empty body)"
	}
	return s
}
