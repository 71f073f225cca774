package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"strconv"
	"time"

	"github.com/countersign/countersign/internal/gateway"
	"github.com/countersign/countersign/internal/traffic"
)

func init() {
	register("maintenance", "answer every request 503 + Retry-After: the maintenance backend of a Gateway API HTTPRoute", runMaintenance)
}

// secondsFlag is a whole number of seconds, written "120" or "2m".
type secondsFlag int

func (s *secondsFlag) String() string { return strconv.Itoa(int(*s)) + "s" }

func (s *secondsFlag) Set(v string) error {
	if n, err := strconv.Atoi(v); err == nil {
		*s = secondsFlag(n)
		return nil
	}
	d, err := time.ParseDuration(v)
	if err != nil {
		return fmt.Errorf("want seconds (120) or a duration (2m), got %q", v)
	}
	if d%time.Second != 0 {
		return fmt.Errorf("%s is not a whole number of seconds", v)
	}
	*s = secondsFlag(d / time.Second)
	return nil
}

func runMaintenance(ctx context.Context, env *cliEnv, args []string) error {
	fs := newFlagSet(env, "maintenance", "[--listen ADDR] [--retry-after SECONDS]")
	listen := fs.String("listen", "127.0.0.1:8080", "address to answer on")
	retry := secondsFlag(gateway.DefaultRetryAfter)
	fs.Var(&retry, "retry-after", fmt.Sprintf("Retry-After when the request carries no valid %s header, 1s..24h (e.g. 120 or 2m)", traffic.RetryAfterHeader))
	logLevel := fs.String("log-level", "info", "debug | info | warn | error")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return usageError("maintenance takes no arguments, got %q", fs.Args())
	}
	var lvl slog.Level
	if err := lvl.UnmarshalText([]byte(*logLevel)); err != nil {
		return usageError("--log-level: %v", err)
	}
	h, err := traffic.Maintenance(int(retry))
	if err != nil {
		return usageError("--retry-after: %v", err)
	}
	logger := slog.New(slog.NewJSONHandler(env.stderr, &slog.HandlerOptions{Level: lvl}))
	ln, err := net.Listen("tcp", *listen)
	if err != nil {
		return err
	}
	srv := &http.Server{Handler: h, ReadHeaderTimeout: 10 * time.Second, IdleTimeout: time.Minute,
		ErrorLog: slog.NewLogLogger(logger.Handler(), slog.LevelWarn)}
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ln) }()
	logger.Info("countersign maintenance serving", slog.String("addr", ln.Addr().String()), slog.Int("retry_after", int(retry)), slog.Int("pid", os.Getpid()))
	fmt.Fprintf(env.stdout, "countersign maintenance listening on http://%s (Retry-After %d s unless %s says otherwise)\n",
		ln.Addr(), int(retry), traffic.RetryAfterHeader)

	select {
	case err := <-served:
		return err
	case <-ctx.Done():
	}
	shCtx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	err = srv.Shutdown(shCtx)
	fmt.Fprintln(env.stdout, "countersign maintenance stopped")
	if errors.Is(err, http.ErrServerClosed) {
		err = nil
	}
	return err
}
