package main

import (
	"context"
	"errors"
	"net"
	"net/http"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/rogpeppe/go-internal/testscript"
	"github.com/twmb/franz-go/pkg/kfake"
)

// TestMain lets the scripts run `countersign` as a real process: the test
// binary re-executes itself as the command, running main's run in-process.
func TestMain(m *testing.M) {
	testscript.Main(m, map[string]func(){
		"countersign": func() {
			os.Exit(run(os.Args[1:], &cliEnv{stdout: os.Stdout, stderr: os.Stderr, stdin: os.Stdin, getenv: os.Getenv}))
		},
	})
}

// TestScripts runs the CLI as a user types it: testdata/script/*.txtar.
//
// Extra script commands:
//
//	waitready URL          poll URL/readyz until it answers 200 (15 s)
//	exitcode N CMD ARGS... run CMD and require exit status N exactly
//	kafka                  start a kfake cluster (franz-go's protocol-level
//	                       FAKE Kafka, on loopback) for this script and set
//	                       $KAFKA to its brokers
//
// Every script gets $PORT, a free loopback port.
func TestScripts(t *testing.T) {
	if os.Getenv("CI") == "true" {
		if _, err := exec.LookPath("openssl"); err != nil {
			t.Fatalf("openssl is required under CI=true: %v", err)
		}
	}
	testscript.Run(t, testscript.Params{
		Dir: "testdata/script",
		Setup: func(env *testscript.Env) error {
			ln, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				return err
			}
			port := ln.Addr().(*net.TCPAddr).Port
			ln.Close()
			env.Setenv("PORT", strconv.Itoa(port))
			env.Setenv("COUNTERSIGN_KEY_PASSPHRASE", "")
			env.Setenv("COUNTERSIGN_TOKEN", "")
			env.Setenv("COUNTERSIGN_QUEUE_URL", "")
			env.Setenv("COUNTERSIGN_NATS_URL", "")
			return nil
		},
		Cmds: map[string]func(ts *testscript.TestScript, neg bool, args []string){
			"waitready": cmdWaitReady,
			"exitcode":  cmdExitCode,
			"kafka":     cmdKafka,
		},
	})
}

func cmdWaitReady(ts *testscript.TestScript, neg bool, args []string) {
	if neg || len(args) != 1 {
		ts.Fatalf("usage: waitready URL")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	url := strings.TrimSuffix(args[0], "/") + "/readyz"
	for {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
		resp, err := http.DefaultClient.Do(req)
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return
			}
		}
		select {
		case <-ctx.Done():
			ts.Fatalf("%s not ready within 15s (last error: %v)", url, err)
		case <-time.After(25 * time.Millisecond):
		}
	}
}

func cmdExitCode(ts *testscript.TestScript, neg bool, args []string) {
	if neg || len(args) < 2 {
		ts.Fatalf("usage: exitcode N command [args...]")
	}
	want, err := strconv.Atoi(args[0])
	if err != nil {
		ts.Fatalf("exitcode: %v", err)
	}
	got := 0
	if err := ts.Exec(args[1], args[2:]...); err != nil {
		var ee *exec.ExitError
		if !errors.As(err, &ee) {
			ts.Fatalf("exitcode: %v", err)
		}
		got = ee.ExitCode()
	}
	if got != want {
		ts.Fatalf("%s exited with status %d, want %d", args[1], got, want)
	}
}

// cmdKafka starts kfake for the script: no real Kafka broker can run on the
// development machines, and kfake speaks the protocol over TCP, so the
// script's countersign processes reach it as they would a cluster.
func cmdKafka(ts *testscript.TestScript, neg bool, args []string) {
	if neg || len(args) != 0 {
		ts.Fatalf("usage: kafka")
	}
	c, err := kfake.NewCluster(kfake.NumBrokers(1))
	if err != nil {
		ts.Fatalf("kfake: %v", err)
	}
	ts.Defer(c.Close)
	ts.Setenv("KAFKA", strings.Join(c.ListenAddrs(), ","))
}
