package node_test

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/countersign/countersign/internal/api"
	"github.com/countersign/countersign/internal/install"
	"github.com/countersign/countersign/internal/node"
)

var (
	crashBuildOnce sync.Once
	crashBinPath   string
	crashBuildErr  error
)

// countersignBinary builds cmd/countersign once per test process.
func countersignBinary(t *testing.T) string {
	t.Helper()
	crashBuildOnce.Do(func() {
		dir, err := os.MkdirTemp("", "countersign-crash-bin-")
		if err != nil {
			crashBuildErr = err
			return
		}
		crashBinPath = filepath.Join(dir, "countersign")
		out, err := exec.Command("go", "build", "-o", crashBinPath, "github.com/countersign/countersign/cmd/countersign").CombinedOutput()
		if err != nil {
			crashBuildErr = fmt.Errorf("go build: %v\n%s", err, out)
		}
	})
	if crashBuildErr != nil {
		t.Fatal(crashBuildErr)
	}
	return crashBinPath
}

// nodeProc is a node running as a child process.
type nodeProc struct {
	cmd    *exec.Cmd
	url    string
	exited chan struct{}
	err    error // cmd.Wait's, once exited is closed
	stderr *strings.Builder
}

func startNodeProc(t *testing.T, bin, data string, env ...string) *nodeProc {
	t.Helper()
	cmd := exec.Command(bin, "node", "--data", data, "--listen", "127.0.0.1:0", "--queue", "embedded",
		"--drill", "--sweep-after", "2s", "--queue-ack-wait", "3s", "--worker-concurrency", "4", "--log-level", "warn", "--release", "crash-r1")
	cmd.Env = append(os.Environ(), env...)
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	p := &nodeProc{cmd: cmd, exited: make(chan struct{}), stderr: &strings.Builder{}}
	cmd.Stderr = &lockedWriter{w: p.stderr}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	lines := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			if addr, ok := strings.CutPrefix(sc.Text(), "countersign node listening on "); ok {
				lines <- strings.Fields(addr)[0]
			}
		}
		io.Copy(io.Discard, stdout)
	}()
	go func() {
		p.err = cmd.Wait()
		close(p.exited)
	}()
	select {
	case p.url = <-lines:
	case <-p.exited:
		t.Fatalf("node exited at start: %v\n%s", p.err, p.stderr)
	case <-time.After(30 * time.Second):
		cmd.Process.Kill()
		t.Fatal("node did not start within 30s")
	}
	t.Cleanup(func() {
		cmd.Process.Kill()
		<-p.exited
	})
	return p
}

type lockedWriter struct {
	mu sync.Mutex
	w  io.Writer
}

func (l *lockedWriter) Write(b []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(b)
}

func killedBySIGKILL(err error) bool {
	var ee *exec.ExitError
	if !errors.As(err, &ee) {
		return false
	}
	ws, ok := ee.Sys().(syscall.WaitStatus)
	return ok && ws.Signaled() && ws.Signal() == syscall.SIGKILL
}

// TestCrashPointsLoseNothing runs the node as a child process with its
// embedded JetStream and worker, applies sustained async load, lets each
// crash point SIGKILL it, restarts it without the crash point, and proves
// that every job answered 202 ends in exactly one signature (job signed,
// signature row, one audit event), and no key has two signatures.
func TestCrashPointsLoseNothing(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the binary and crashes it; skipped with -short")
	}
	bin := countersignBinary(t)
	for _, point := range node.CrashPointNames {
		t.Run(point, func(t *testing.T) {
			data := filepath.Join(t.TempDir(), "data")
			if _, err := install.Init(context.Background(), data, install.Options{Dev: true, ScryptN: 1 << 10, Logger: asyncQuietLogger()}); err != nil {
				t.Fatal(err)
			}
			tokb, err := os.ReadFile(filepath.Join(data, "dev-token"))
			if err != nil {
				t.Fatal(err)
			}
			token := strings.TrimSpace(string(tokb))

			p := startNodeProc(t, bin, data, node.CrashPointEnv+"="+point+":40")
			accepted := asyncLoad(t, p, token, point, nil)
			select {
			case <-p.exited:
			case <-time.After(30 * time.Second):
				t.Fatalf("crash point %s did not fire within 30s (%d jobs accepted)", point, len(accepted))
			}
			if !killedBySIGKILL(p.err) {
				t.Fatalf("node exit = %v, want killed by SIGKILL\n%s", p.err, p.stderr)
			}
			// The crash point fires at the 40th job; up to one 202 per
			// client (8) may still have been on its way when SIGKILL landed
			// (those jobs count as not accepted: their outcome was never
			// told). Fewer means the crash did not happen under load.
			if len(accepted) < 40-8 {
				t.Fatalf("only %d jobs accepted before the crash", len(accepted))
			}

			p2 := startNodeProc(t, bin, data)
			deadline := time.Now().Add(40 * time.Second)
			for key, id := range accepted {
				for {
					v, err := getJob(p2.url, token, id)
					if err == nil && v.State == node.JobStateSigned {
						break
					}
					if err == nil && v.State == node.JobStateFailed {
						t.Fatalf("job %s (%s) failed: %+v", id, key, v.Problem)
					}
					if time.Now().After(deadline) {
						t.Fatalf("job %s (%s) not signed 40s after restart: %+v %v", id, key, v, err)
					}
					time.Sleep(20 * time.Millisecond)
				}
			}
			p2.cmd.Process.Signal(syscall.SIGTERM)
			select {
			case <-p2.exited:
			case <-time.After(30 * time.Second):
				t.Fatal("node did not stop on SIGTERM")
			}
			inst, err := install.Open(context.Background(), data, install.OpenOptions{ScryptN: 1 << 10, Logger: asyncQuietLogger()})
			if err != nil {
				t.Fatal(err)
			}
			defer inst.Close()
			keys := make([]string, 0, len(accepted))
			for k := range accepted {
				keys = append(keys, k)
			}
			checkSignedJobs(t, inst.Store, "dev", keys)
			t.Logf("%s: %d accepted jobs, all signed exactly once after the crash", point, len(accepted))
		})
	}
}

// TestCrashAfterAckCallbacksDelivered lets the after-ack crash point kill
// the node between acknowledging messages and sending their callbacks, and
// checks that after a restart every accepted job's callback is delivered:
// the callbacks the crash lost are found undelivered in the store and sent
// by the sweeper.
func TestCrashAfterAckCallbacksDelivered(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the binary and crashes it; skipped with -short")
	}
	var mu sync.Mutex
	got := map[string]int{}
	cb := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		mu.Lock()
		got[r.Header.Get("Countersign-Job-Id")]++
		mu.Unlock()
	}))
	defer cb.Close()
	bin := countersignBinary(t)
	data := filepath.Join(t.TempDir(), "data")
	if _, err := install.Init(context.Background(), data, install.Options{Dev: true, ScryptN: 1 << 10, Logger: asyncQuietLogger()}); err != nil {
		t.Fatal(err)
	}
	tokb, err := os.ReadFile(filepath.Join(data, "dev-token"))
	if err != nil {
		t.Fatal(err)
	}
	token := strings.TrimSpace(string(tokb))
	p := startNodeProc(t, bin, data, node.CrashPointEnv+"="+node.CrashAfterAck+":30")
	accepted := asyncLoad(t, p, token, "cb", map[string]string{node.CallbackHeader: cb.URL})
	if !killedBySIGKILL(p.err) {
		t.Fatalf("node exit = %v, want killed by SIGKILL\n%s", p.err, p.stderr)
	}
	p2 := startNodeProc(t, bin, data)
	deadline := time.Now().Add(60 * time.Second)
	for {
		mu.Lock()
		missing := 0
		for _, id := range accepted {
			if got[id] == 0 {
				missing++
			}
		}
		mu.Unlock()
		if missing == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d of %d accepted jobs' callbacks not delivered 60s after restart\n%s", missing, len(accepted), p2.stderr)
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Logf("%d accepted jobs, every callback delivered after the crash", len(accepted))
}

// asyncLoad submits jobs from 8 clients until the node dies, and returns the
// idempotency keys answered 202 with their job IDs.
func asyncLoad(t *testing.T, p *nodeProc, token, prefix string, hdr map[string]string) map[string]string {
	t.Helper()
	var mu sync.Mutex
	accepted := map[string]string{}
	var wg sync.WaitGroup
	client := &http.Client{Timeout: 10 * time.Second}
	for c := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; ; i++ {
				select {
				case <-p.exited:
					return
				default:
				}
				key := fmt.Sprintf("%s-%d-%d", prefix, c, i)
				body, _ := json.Marshal(api.SignRequest{Key: "default", Format: api.FormatJWS, Document: []byte(key), DocumentID: key})
				req, _ := http.NewRequest(http.MethodPost, p.url+"/v1/sign:async", strings.NewReader(string(body)))
				req.Header.Set("Authorization", "Bearer "+token)
				req.Header.Set("Idempotency-Key", key)
				for k, v := range hdr {
					req.Header.Set(k, v)
				}
				resp, err := client.Do(req)
				if err != nil {
					continue // the outcome of an unanswered request is unknown: not accepted
				}
				b, _ := io.ReadAll(resp.Body)
				resp.Body.Close()
				if resp.StatusCode != http.StatusAccepted {
					continue
				}
				var v node.JobView
				if json.Unmarshal(b, &v) == nil {
					mu.Lock()
					accepted[key] = v.ID
					mu.Unlock()
				}
			}
		}()
	}
	wg.Wait()
	return accepted
}

func getJob(base, token, id string) (node.JobView, error) {
	req, _ := http.NewRequest(http.MethodGet, base+"/v1/jobs/"+id, nil)
	req.Header.Set("Authorization", "Bearer "+token)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return node.JobView{}, err
	}
	defer resp.Body.Close()
	var v node.JobView
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(resp.Body)
		return v, fmt.Errorf("GET job: %d %s", resp.StatusCode, b)
	}
	return v, json.NewDecoder(resp.Body).Decode(&v)
}
