// Command kubetestbed keeps one kubetest cluster running in the foreground
// until SIGINT or SIGTERM, for humans: scripts/kube-testbed.sh up DIR builds
// and backgrounds it, and down DIR signals it. It runs the same code as the
// kube test tier (internal/kubetest.Start), so what works by hand works in
// tests. Once the cluster is up it writes DIR/env (sourceable: KUBECONFIG,
// COUNTERSIGN_KUBE_DIR, COUNTERSIGN_KUBE_SERVER); DIR/kubetestbed.pid holds
// its pid from the start.
package main

import (
	"context"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"syscall"

	"github.com/countersign/countersign/internal/kubetest"
)

func main() {
	dir := flag.String("dir", "", "working directory (certificates, logs, kubeconfig, env); required")
	nodes := flag.Int("nodes", 1, "number of KWOK nodes")
	flag.Parse()
	if *dir == "" || flag.NArg() != 0 {
		fmt.Fprintln(os.Stderr, "usage: kubetestbed -dir DIR [-nodes N]")
		os.Exit(2)
	}
	if err := run(*dir, *nodes); err != nil {
		fmt.Fprintln(os.Stderr, "kubetestbed:", err)
		os.Exit(1)
	}
}

func run(dir string, nodes int) error {
	dir, err := filepath.Abs(dir)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	pidFile := filepath.Join(dir, "kubetestbed.pid")
	envFile := filepath.Join(dir, "env")
	_ = os.Remove(envFile)
	if err := os.WriteFile(pidFile, []byte(strconv.Itoa(os.Getpid())+"\n"), 0o600); err != nil {
		return err
	}
	defer os.Remove(pidFile)

	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	c, err := kubetest.Start(ctx, kubetest.Options{Dir: dir, Logger: log, Nodes: nodes})
	if err != nil {
		return err
	}
	env := fmt.Sprintf("export KUBECONFIG=%s\nexport COUNTERSIGN_KUBE_DIR=%s\nexport COUNTERSIGN_KUBE_SERVER=%s\n",
		c.Kubeconfig, c.Dir, c.Config.Host)
	// Written last and renamed into place: its existence means "up".
	if err := os.WriteFile(envFile+".tmp", []byte(env), 0o600); err != nil {
		return stopAfter(c, err)
	}
	if err := os.Rename(envFile+".tmp", envFile); err != nil {
		return stopAfter(c, err)
	}
	<-ctx.Done()
	log.Info("kubetestbed: stopping")
	_ = os.Remove(envFile)
	return c.Stop()
}

func stopAfter(c *kubetest.Cluster, err error) error {
	if stopErr := c.Stop(); stopErr != nil {
		return fmt.Errorf("%w (stop: %v)", err, stopErr)
	}
	return err
}
