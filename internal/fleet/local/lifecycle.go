package local

import (
	"context"
	"errors"
	"maps"
	"slices"
	"sync"
)

// Resume starts the replicas the persisted history says should run (the
// current revision of each pool, at its desired count), as after a restart
// of the control plane. Pools already running are left alone.
func (f *Fleet) Resume(ctx context.Context) error {
	f.mu.Lock()
	pools := slices.Sorted(maps.Keys(f.st.Pools))
	f.mu.Unlock()
	var errs []error
	for _, pool := range pools {
		unlock, err := f.lockPool(pool)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		f.mu.Lock()
		ps := f.st.Pools[pool]
		want, running := ps.Desired, len(f.running[pool])
		hasCurrent := ps.current() != nil
		f.mu.Unlock()
		if hasCurrent && want > 0 && running == 0 {
			if err := f.scaleLocked(ctx, pool, want); err != nil {
				errs = append(errs, err)
			}
		}
		unlock()
	}
	return errors.Join(errs...)
}

// Shutdown stops every replica gracefully (SIGTERM, then SIGKILL after
// StopTimeout) and closes the fleet. The history keeps each pool's desired
// count, so Resume in a later process brings them back.
func (f *Fleet) Shutdown(ctx context.Context) error {
	rs := f.closeAll()
	done := make(chan struct{})
	go func() { stopAll(rs); close(done) }()
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		for _, r := range rs {
			r.kill()
		}
		return ctx.Err()
	}
}

// Close kills every replica's process group at once and closes the fleet.
func (f *Fleet) Close() error {
	var wg sync.WaitGroup
	for _, r := range f.closeAll() {
		wg.Go(r.kill)
	}
	wg.Wait()
	return nil
}

// closeAll marks the fleet closed and returns every live replica, including
// those of a deploy still waiting for readiness.
func (f *Fleet) closeAll() []*replica {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.closed = true
	f.running = map[string][]*replica{}
	return slices.Collect(maps.Keys(f.live))
}
