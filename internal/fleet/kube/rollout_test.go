package kube

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"golang.org/x/time/rate"
)

// TestCutShort: a read refused by client-go's rate limiter because it
// would wait past the rollout's deadline is a read cut short (the last
// progress read is reported instead), as is one the ended context
// failed; any other error is reported.
func TestCutShort(t *testing.T) {
	l := rate.NewLimiter(rate.Every(time.Hour), 1)
	l.Allow()
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	werr := l.Wait(ctx)
	if werr == nil {
		t.Fatal("the limiter waited an hour")
	}
	// client-go wraps it so.
	limited := fmt.Errorf("list pods: %w", fmt.Errorf("client rate limiter Wait returned an error: %w", werr))
	if !cutShort(ctx, limited) {
		t.Errorf("cutShort(%v) = false, want true", limited)
	}
	if !cutShort(ctx, fmt.Errorf("get Deployment: %w", context.DeadlineExceeded)) {
		t.Error("a read failed by the deadline is not cut short")
	}
	if forbidden := errors.New(`list pods: pods is forbidden: User "x" cannot list resource "pods"`); cutShort(ctx, forbidden) {
		t.Errorf("cutShort(%v) = true, want false", forbidden)
	}
	done, stop := context.WithCancel(t.Context())
	stop()
	if !cutShort(done, errors.New("anything")) {
		t.Error("a read after the context ended is not cut short")
	}
}
