package gateway

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"sync"
	"syscall"
	"time"
)

// Run checks every backend's readiness at once and then every
// HealthInterval until ctx ends. A backend answering anything but 200 to
// GET HealthPath, or not answering within HealthTimeout, is out of rotation
// until it passes again.
func (g *Gateway) Run(ctx context.Context) error {
	t := time.NewTicker(g.cfg.HealthInterval)
	defer t.Stop()
	for {
		g.CheckHealth(ctx)
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-t.C:
		}
	}
}

// CheckHealth runs one health pass over every backend of every pool.
func (g *Gateway) CheckHealth(ctx context.Context) {
	g.mu.Lock()
	var all []*backend
	for _, p := range g.pools {
		all = append(all, p.members()...)
	}
	g.mu.Unlock()
	g.probeAll(ctx, all)
}

func (g *Gateway) probeAll(ctx context.Context, bs []*backend) {
	var wg sync.WaitGroup
	for _, b := range bs {
		wg.Go(func() { g.probe(ctx, b) })
	}
	wg.Wait()
}

func (g *Gateway) probe(ctx context.Context, b *backend) {
	err := g.check(ctx, b)
	if ctx.Err() != nil {
		return // shutting down: say nothing about the backend
	}
	errText := ""
	if err != nil {
		errText = err.Error()
	}
	if b.setHealth(err == nil, g.cfg.Now().UTC(), errText) {
		if err != nil {
			g.log.WarnContext(ctx, "gateway: backend out of rotation", "backend", b.raw, "err", err)
		} else {
			g.log.InfoContext(ctx, "gateway: backend in rotation", "backend", b.raw)
		}
	}
}

func (g *Gateway) check(ctx context.Context, b *backend) error {
	ctx, cancel := context.WithTimeout(ctx, g.cfg.HealthTimeout)
	defer cancel()
	u := b.url.JoinPath(g.cfg.HealthPath)
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u.String(), nil)
	if err != nil {
		return err
	}
	resp, err := g.health.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("GET %s: %s", g.cfg.HealthPath, resp.Status)
	}
	return nil
}

// isDialError reports whether err shows the request never reached the
// backend (connection refused or no route), the sign of a dead process.
func isDialError(err error) bool {
	var op *net.OpError
	if errors.As(err, &op) && op.Op == "dial" {
		return true
	}
	return errors.Is(err, syscall.ECONNREFUSED)
}
