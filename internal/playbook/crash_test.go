package playbook

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
)

// The crash test runs the engine in a child process (this test binary,
// re-executed), makes the child stop dead at one "crash point" — right after
// a journal record became durable, just before an action's side effect, or
// just after it — SIGKILLs it there, and resumes the run. Every step's side
// effect must have happened exactly once and the run must succeed.

const (
	envCrashDir   = "PLAYBOOK_CRASH_DIR"
	envCrashPoint = "PLAYBOOK_CRASH_POINT"
	crashLine     = "CRASH-POINT-REACHED"
	doneLine      = "RUN-FINISHED"
)

const crashSpec = `name: crash
steps:
  - id: contain
    action: effect
    with: {what: contain}
  - id: deploy
    action: effect
    approval: {required: 1, roles: [incident-commander]}
    with: {what: '${steps.contain.outputs.effect}'}
  - id: replay
    action: effect
    when: '${steps.contain.outputs.count} > 0'
    retries: {count: 1, backoff: 1ms}
  - id: close
    action: effect
    with: {run: '${run.id}'}
`

// effectAction appends "token" to an append-only effects log, unless the
// log already holds the token (then the effect already happened).
type effectAction struct {
	log   string
	point func(string) // crash point hook
}

func (a *effectAction) Plan(_ context.Context, c Call) (Plan, error) {
	return Plan{Changes: []Change{{Target: "file:" + a.log, To: c.Token}}}, nil
}

func (a *effectAction) Run(_ context.Context, c Call) (Outputs, error) {
	b, err := os.ReadFile(a.log)
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return nil, err
	}
	for _, l := range strings.Split(string(b), "\n") {
		if l == c.Token {
			return Outputs{"effect": c.StepID, "count": 1, "again": true}, nil
		}
	}
	a.point("before effect " + c.StepID)
	f, err := os.OpenFile(a.log, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o644)
	if err != nil {
		return nil, err
	}
	if _, err := f.WriteString(c.Token + "\n"); err != nil {
		f.Close()
		return nil, err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return nil, err
	}
	if err := f.Close(); err != nil {
		return nil, err
	}
	a.point("after effect " + c.StepID)
	return Outputs{"effect": c.StepID, "count": 1}, nil
}

// crashEngine builds the engine used by both the child and the parent.
func crashEngine(t testing.TB, dir string, point func(string)) (*Engine, *Spec) {
	reg := NewRegistry()
	if err := reg.Register("effect", &effectAction{log: filepath.Join(dir, "effects.log"), point: point}); err != nil {
		t.Fatal(err)
	}
	eng, err := New(Config{Store: newFileJournal(t, filepath.Join(dir, "journal")), Actions: reg, Policy: DrillApproval{}, Logger: slog.New(slog.DiscardHandler),
		Observer: func(ev Event) { point(fmt.Sprintf("record %d %s %s %s", ev.Seq, ev.Step, ev.State, ev.RunState)) }})
	if err != nil {
		t.Fatal(err)
	}
	spec, err := Parse([]byte(crashSpec), reg)
	if err != nil {
		t.Fatal(err)
	}
	return eng, spec
}

// TestCrashChild is the child side; it does nothing unless re-executed.
func TestCrashChild(t *testing.T) {
	dir := os.Getenv(envCrashDir)
	if dir == "" {
		t.Skip("child process of TestKillAndResume")
	}
	stop, _ := strconv.Atoi(os.Getenv(envCrashPoint))
	var n int
	var mu sync.Mutex
	eng, spec := crashEngine(t, dir, func(what string) {
		mu.Lock()
		n++
		reached := n == stop
		mu.Unlock()
		if reached {
			fmt.Printf("%s %s\n", crashLine, what)
			os.Stdout.Sync()
			select {} // wait here to be killed
		}
	})
	var err error
	if _, jerr := eng.Status(context.Background(), "run-1"); jerr != nil {
		_, err = eng.Run(context.Background(), spec, RunOptions{RunID: "run-1", Actor: "child"})
	} else {
		_, err = eng.Resume(context.Background(), "run-1", "child")
	}
	if err != nil {
		t.Fatal(err)
	}
	fmt.Println(doneLine)
}

// runChild runs the child until it reaches crash point stop (then kills it
// with SIGKILL) or finishes. It reports where it stopped, or "" if it finished.
func runChild(t *testing.T, dir string, stop int) string {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^TestCrashChild$", "-test.count=1")
	cmd.Env = append(os.Environ(), envCrashDir+"="+dir, envCrashPoint+"="+strconv.Itoa(stop))
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = cmd.Stdout
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	sc := bufio.NewScanner(out)
	var transcript []string
	for sc.Scan() {
		line := sc.Text()
		transcript = append(transcript, line)
		if where, ok := strings.CutPrefix(line, crashLine+" "); ok {
			if err := cmd.Process.Kill(); err != nil {
				t.Fatal(err)
			}
			io.Copy(io.Discard, out)
			cmd.Wait()
			return where
		}
	}
	if err := cmd.Wait(); err != nil {
		t.Fatalf("child: %v\n%s", err, strings.Join(transcript, "\n"))
	}
	if !strings.Contains(strings.Join(transcript, "\n"), doneLine) {
		t.Fatalf("child finished without running:\n%s", strings.Join(transcript, "\n"))
	}
	return ""
}

func checkExactlyOnce(t *testing.T, dir string) {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(dir, "effects.log"))
	if err != nil {
		t.Fatal(err)
	}
	got := strings.Fields(string(b))
	want := []string{"run-1/contain", "run-1/deploy", "run-1/replay", "run-1/close"}
	if strings.Join(got, " ") != strings.Join(want, " ") {
		t.Errorf("effects: got %v, want each step once: %v", got, want)
	}
	j := newFileJournal(t, filepath.Join(dir, "journal"))
	succeeded := map[string]int{}
	for _, r := range j.records(t, "run-1") {
		if r.State == StepSucceeded {
			succeeded[r.Step]++
		}
	}
	for _, id := range []string{"contain", "deploy", "replay", "close"} {
		if succeeded[id] != 1 {
			t.Errorf("step %s journaled as succeeded %d times", id, succeeded[id])
		}
	}
}

func TestKillAndResume(t *testing.T) {
	if testing.Short() {
		t.Skip("re-executes the test binary once per crash point")
	}
	// Crash once at each point in turn, then resume in this process.
	for stop := 1; ; stop++ {
		dir := t.TempDir()
		where := runChild(t, dir, stop)
		if where == "" {
			if stop < 20 {
				t.Fatalf("only %d crash points", stop-1)
			}
			break
		}
		eng, _ := crashEngine(t, dir, func(string) {})
		st, err := eng.Resume(context.Background(), "run-1", "parent")
		if err != nil {
			t.Fatalf("crash %d (%s): resume: %v", stop, where, err)
		}
		if st.State != RunSucceeded {
			t.Fatalf("crash %d (%s): run %s: %+v", stop, where, st.State, st)
		}
		t.Logf("crash %2d at %-32s resumed: %s", stop, where, st.State)
		checkExactlyOnce(t, dir)
	}
	// Crash repeatedly in one run: every child resumes and dies again
	// three points later, until one finishes.
	dir := t.TempDir()
	var crashes int
	for runChild(t, dir, 3) != "" {
		crashes++
		if crashes > 40 {
			t.Fatal("no progress across crashes")
		}
	}
	if crashes < 5 {
		t.Errorf("only %d crashes in the repeated-crash run", crashes)
	}
	checkExactlyOnce(t, dir)
	eng, _ := crashEngine(t, dir, func(string) {})
	st, err := eng.Status(context.Background(), "run-1")
	if err != nil || st.State != RunSucceeded {
		t.Fatalf("after %d crashes: %s, %v", crashes, st.State, err)
	}
}
