package kafka

import (
	"context"
	"fmt"
	"sync"

	"github.com/twmb/franz-go/pkg/kgo"
)

const (
	statePaused  = "paused"
	stateResumed = "resumed"
)

// control mirrors the compacted control topic: the last record per
// consumer name says whether it is paused. Every Queue watches it, so a
// pause written by one process (the playbook) stops workers in others.
type control struct {
	cl     *kgo.Client
	cancel context.CancelFunc
	done   chan struct{}

	mu      sync.Mutex
	paused  map[string]bool
	changed chan struct{} // closed and replaced on every change
}

func startControl(ctx context.Context, q *Queue) (*control, error) {
	cl, err := kgo.NewClient(q.cfg.opts(
		kgo.ConsumeTopics(q.controlTopic()),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()),
	)...)
	if err != nil {
		return nil, fmt.Errorf("kafka: control client: %w", err)
	}
	c := &control{cl: cl, done: make(chan struct{}), paused: map[string]bool{}, changed: make(chan struct{})}
	// Read the existing state before returning, so a restarted worker
	// honours a pause from before its start.
	if err := c.catchUp(ctx, q); err != nil {
		cl.Close()
		return nil, err
	}
	wctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	c.cancel = cancel
	go c.watch(wctx)
	return c, nil
}

func (c *control) catchUp(ctx context.Context, q *Queue) error {
	ends, err := q.adm.ListEndOffsets(ctx, q.controlTopic())
	if err != nil {
		return fmt.Errorf("kafka: control end offset: %w", err)
	}
	end, _ := ends.Lookup(q.controlTopic(), 0)
	for next := int64(0); next < end.Offset; {
		fs := c.cl.PollFetches(ctx)
		if err := fs.Err0(); err != nil {
			return fmt.Errorf("kafka: read control topic: %w", err)
		}
		fs.EachRecord(func(r *kgo.Record) {
			c.apply(r)
			next = r.Offset + 1
		})
	}
	return nil
}

func (c *control) watch(ctx context.Context) {
	defer close(c.done)
	for {
		fs := c.cl.PollFetches(ctx)
		if ctx.Err() != nil || fs.IsClientClosed() {
			return
		}
		fs.EachRecord(c.apply)
	}
}

func (c *control) apply(r *kgo.Record) {
	c.set(string(r.Key), string(r.Value) == statePaused)
}

func (c *control) set(name string, paused bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.paused[name] == paused {
		return
	}
	c.paused[name] = paused
	close(c.changed)
	c.changed = make(chan struct{})
}

// state reports whether name is paused and a channel closed on the next
// change.
func (c *control) state(name string) (bool, <-chan struct{}) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.paused[name], c.changed
}

func (c *control) stop() {
	c.cancel()
	c.cl.Close()
	<-c.done
}

// Pause writes the paused state to the control topic; every worker of the
// consumer stops delivering before its next record.
func (q *Queue) Pause(ctx context.Context, name string) error {
	return q.setPaused(ctx, name, true)
}

// Resume writes the resumed state to the control topic.
func (q *Queue) Resume(ctx context.Context, name string) error {
	return q.setPaused(ctx, name, false)
}

func (q *Queue) setPaused(ctx context.Context, name string, paused bool) error {
	if err := q.checkOpen(); err != nil {
		return err
	}
	v := stateResumed
	if paused {
		v = statePaused
	}
	rec := &kgo.Record{Topic: q.controlTopic(), Key: []byte(name), Value: []byte(v)}
	if err := q.cl.ProduceSync(ctx, rec).FirstErr(); err != nil {
		return fmt.Errorf("kafka: %s %s: %w", v, name, err)
	}
	q.ctrl.set(name, paused)
	return nil
}
