package node

import (
	"fmt"
	"os"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
)

// Crash points of the asynchronous path. Each names the gap between two
// durable steps of the worker, where a real process crash leaves partial
// work that restart and redelivery must finish without a second signature.
const (
	// CrashAfterSign: the artifact is made, nothing is persisted.
	CrashAfterSign = "after-sign"
	// CrashAfterPersist: signature, audit event and job transition are
	// committed, the message is not acknowledged.
	CrashAfterPersist = "after-persist"
	// CrashAfterAck: the message is acknowledged, the callback not sent;
	// the job records no delivery, so the sweeper sends it after restart.
	CrashAfterAck = "after-ack"
)

// CrashPointEnv names the environment variable that arms a crash point in
// drill mode: "<point>" or "<point>:<n>" to crash on the n-th pass (default
// the first).
const CrashPointEnv = "COUNTERSIGN_CRASHPOINT"

// CrashPointNames lists the crash points a node knows.
var CrashPointNames = []string{CrashAfterSign, CrashAfterPersist, CrashAfterAck}

// CrashPoint kills the process with SIGKILL the n-th time execution passes
// the named point, so tests and drills exercise a real crash (no deferred
// function, no flush, no graceful shutdown). The zero of *CrashPoint (nil)
// never fires; the CLI arms one only with --drill.
type CrashPoint struct {
	name  string
	after int64
	seen  atomic.Int64
	kill  func() // default: SIGKILL to this process
}

// ParseCrashPoint parses "<point>[:<n>]".
func ParseCrashPoint(spec string) (*CrashPoint, error) {
	name, count, hasCount := strings.Cut(spec, ":")
	known := false
	for _, n := range CrashPointNames {
		known = known || n == name
	}
	if !known {
		return nil, fmt.Errorf("node: unknown crash point %q (known: %v)", name, CrashPointNames)
	}
	after := int64(1)
	if hasCount {
		n, err := strconv.ParseInt(count, 10, 64)
		if err != nil || n < 1 {
			return nil, fmt.Errorf("node: crash point %q: count %q must be a positive integer", spec, count)
		}
		after = n
	}
	return &CrashPoint{name: name, after: after, kill: killSelf}, nil
}

// Name is the armed point.
func (c *CrashPoint) Name() string { return c.name }

// String is "<point>:<n>".
func (c *CrashPoint) String() string { return fmt.Sprintf("%s:%d", c.name, c.after) }

// pass is called at each crash point; it returns only when the process is
// not meant to die here.
func (c *CrashPoint) pass(name string) {
	if c == nil || c.name != name {
		return
	}
	if c.seen.Add(1) == c.after {
		c.kill()
	}
}

func killSelf() {
	// SIGKILL cannot be caught: nothing after this line runs, exactly as in
	// an OOM kill or a power-cut of the process.
	syscall.Kill(os.Getpid(), syscall.SIGKILL)
	select {} // the signal is delivered asynchronously; never continue
}
