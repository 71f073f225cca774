package drill

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"github.com/countersign/countersign/internal/auditlog"
	"github.com/countersign/countersign/internal/control"
	"github.com/countersign/countersign/internal/install"
	"github.com/countersign/countersign/internal/node"
	"github.com/countersign/countersign/internal/playbook"
	"github.com/countersign/countersign/internal/store"
)

// Scenario is a named regression the drill ships in release v2.
type Scenario struct {
	Name        string
	Description string
	Fault       string  // node fault injected by v2
	Rate        float64 // share of v2's requests it hits
	// Expect is the run state the playbook must end in for a pass.
	Expect playbook.RunState
	// SchemaBump makes v2 declare (and migrate to) the next schema
	// version, so that rolling back to v1 would be a schema downgrade.
	SchemaBump bool
	// ExpectRefusal: the rollback step must refuse (and the run pause
	// with a plan) instead of rolling back.
	ExpectRefusal bool
}

// Scenarios are the drills this build can run.
var Scenarios = []Scenario{
	{"invalid-signatures", "v2 returns signatures that do not verify", node.FaultInvalidSignatures, 1, playbook.RunSucceeded, false, false},
	{"metadata-drift", "v2 signs with a digest algorithm the policy does not expect", node.FaultMetadataDrift, 1, playbook.RunSucceeded, false, false},
	{"hsm-timeouts", "v2's key provider stalls and fails", node.FaultHSMTimeouts, 1, playbook.RunSucceeded, false, false},
	{"partial-persist", "v2 signs, then fails to persist", node.FaultPartialPersist, 1, playbook.RunSucceeded, false, false},
	{"irreversible-migration", "v2 expands the schema and corrupts signatures; rolling back to v1 would downgrade the schema",
		node.FaultIrreversibleMigration, 1, playbook.RunPaused, true, true},
}

// Lookup finds a scenario by name.
func Lookup(name string) (Scenario, error) {
	var names []string
	for _, s := range Scenarios {
		if s.Name == name {
			return s, nil
		}
		names = append(names, s.Name)
	}
	return Scenario{}, fmt.Errorf("drill: unknown scenario %q (this build runs: %s)", name, strings.Join(names, ", "))
}

// Config configures a drill.
type Config struct {
	Scenario Scenario
	// Out is the directory the world and the report go to (created; a
	// temporary directory when empty).
	Out string
	// Concurrency of the client load (default 8).
	Concurrency int
	// CanaryHold per stage (default 5s).
	CanaryHold time.Duration
	// Warmup is how long steady load runs before v2 ships (default 2s).
	Warmup time.Duration
	// Timeout bounds the whole drill (default 150s).
	Timeout time.Duration
	// Artifact is the countersign binary the fleet runs (default: this
	// executable).
	Artifact string
	// QueueURL is an external queue the world uses instead of its embedded
	// JetStream (control.Config.QueueURL): a NATS JetStream server or a
	// Kafka cluster. The drill's streams or topics are created on it.
	QueueURL string
	// Progress receives human-readable progress lines (may be nil).
	Progress io.Writer
	Logger   *slog.Logger
}

// Requests counts the client side.
type Requests struct {
	Sent       int `json:"sent"`
	Accepted   int `json:"accepted"`
	Refused503 int `json:"refused_503"`
	Errors     int `json:"errors"` // final problem answers other than 503 (e.g. 422)
	Lost       int `json:"lost"`
	Duplicates int `json:"duplicates"`
	// AsyncSent and AsyncAccepted count the requests sent through POST
	// /v1/sign:async (included above) and those whose job ended signed.
	AsyncSent     int `json:"async_sent"`
	AsyncAccepted int `json:"async_accepted"`
}

// Step is one playbook step in the report.
type Step struct {
	ID       string    `json:"id"`
	Status   string    `json:"status"`
	Started  time.Time `json:"started,omitzero"`
	Finished time.Time `json:"finished,omitzero"`
	Error    string    `json:"error,omitempty"`
	Note     string    `json:"note,omitempty"`
}

// Audit is the log evidence across the incident.
type Audit struct {
	CheckpointBefore string `json:"checkpoint_before"`
	CheckpointAfter  string `json:"checkpoint_after"`
	Consistent       bool   `json:"consistent"`
	Detail           string `json:"detail,omitempty"`
}

// Report is what `countersign drill --json` prints.
type Report struct {
	Scenario         string   `json:"scenario"`
	Requests         Requests `json:"requests"`
	TimeToDetectMs   int64    `json:"time_to_detect_ms"`
	TimeToContainMs  int64    `json:"time_to_contain_ms"`
	TimeToRestoreMs  int64    `json:"time_to_restore_ms"`
	Steps            []Step   `json:"steps"`
	SnapshotManifest string   `json:"snapshot_manifest"`
	Audit            Audit    `json:"audit"`
	Pass             bool     `json:"pass"`
	// Complete is false while some playbook steps are not available in
	// this build; they are listed, never counted as passed.
	Complete    bool     `json:"complete"`
	Unavailable []string `json:"unavailable_steps,omitempty"`
	Failures    []string `json:"failures,omitempty"`
	Incident    string   `json:"incident,omitempty"`
	// Refusal is the rollback step's refusal, with its plan, in scenarios
	// where rolling back would downgrade the schema.
	Refusal string `json:"refusal,omitempty"`
	// Reconciliation counts the reconcile step's verdicts (and replays).
	Reconciliation *Reconciliation `json:"reconciliation,omitempty"`
	// Notices are the incident's notice deliveries, copied under
	// <out>/notices/ (one file per notice, named by phase and tenant).
	Notices []Notice `json:"notices"`
	// EvidenceBundle is the close step's bundle; EvidenceVerified says the
	// drill verified it offline against the incident lead's public key.
	EvidenceBundle   string `json:"evidence_bundle"`
	EvidenceVerified bool   `json:"evidence_verified"`
	// Postmortem is the draft, copied to <out>/postmortem.md.
	Postmortem string `json:"postmortem"`
	RunID      string `json:"run_id,omitempty"`
	RunState   string `json:"run_state,omitempty"`
	Dir        string `json:"dir"`
	DurationMs int64  `json:"duration_ms"`
}

func (c *Config) progress(format string, a ...any) {
	if c.Progress != nil {
		fmt.Fprintf(c.Progress, "[%s] "+format+"\n", append([]any{time.Now().Format("15:04:05.000")}, a...)...)
	}
}

// Run runs one drill and grades it. An error means the drill itself could
// not run; a failed grade is a Report with Pass false.
func Run(ctx context.Context, cfg Config) (*Report, error) {
	if cfg.Concurrency <= 0 {
		cfg.Concurrency = 8
	}
	if cfg.CanaryHold <= 0 {
		cfg.CanaryHold = 5 * time.Second
	}
	if cfg.Warmup <= 0 {
		cfg.Warmup = 2 * time.Second
	}
	if cfg.Timeout <= 0 {
		cfg.Timeout = 150 * time.Second
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	start := time.Now()
	ctx, cancel := context.WithTimeout(ctx, cfg.Timeout)
	defer cancel()
	if cfg.Out == "" {
		d, err := os.MkdirTemp("", "countersign-drill-")
		if err != nil {
			return nil, err
		}
		cfg.Out = d
	}
	dir := filepath.Join(cfg.Out, "world")
	cfg.progress("drill %q: building the world in %s", cfg.Scenario.Name, dir)
	made, err := install.Init(ctx, dir, install.Options{Dev: true, ScryptN: 1 << 12, Logger: cfg.Logger})
	if err != nil {
		return nil, err
	}
	rcv, err := startReceiver()
	if err != nil {
		return nil, fmt.Errorf("drill: notice webhook receiver: %w", err)
	}
	defer rcv.close()
	w, err := control.Start(ctx, control.Config{Dir: dir, Listen: "127.0.0.1:0", AdminListen: "127.0.0.1:0", ControlListen: "127.0.0.1:0",
		Drill: true, AutoRun: true, Logger: cfg.Logger, Artifact: cfg.Artifact,
		NotifyWebhook: rcv.url, NotifyWebhookSecret: rcv.secret, QueueURL: cfg.QueueURL,
		Params: map[string]string{"canary_hold": cfg.CanaryHold.String(), "retry_after": "1s", "incident_commander": "drill"}})
	if err != nil {
		return nil, err
	}
	defer w.Close()
	urls := w.URLs()
	cfg.progress("world up: gateway %s, control %s; stable pool runs v1", urls.Gateway, urls.Control)

	tok, err := os.ReadFile(made.TokenFile)
	if err != nil {
		return nil, err
	}
	ld, err := newLoad(urls.Gateway, strings.TrimSpace(string(tok)), made.Key, cfg.Concurrency)
	if err != nil {
		return nil, err
	}
	ld.start(ctx)
	cfg.progress("steady load: %d clients through the gateway", cfg.Concurrency)
	st := w.Installation().Store
	sleep(ctx, cfg.Warmup)
	before, err := waitCheckpoint(ctx, st, 1)
	if err != nil {
		ld.finish()
		return nil, fmt.Errorf("drill: no audit checkpoint before the regression: %w", err)
	}

	cfg.progress("shipping v2 to the canary pool at 10%% with fault %q", cfg.Scenario.Fault)
	deployed := time.Now()
	spec := control.ReleaseSpec{ID: "v2", Pool: control.PoolCanary, Weight: 10, Fault: cfg.Scenario.Fault, FaultRate: cfg.Scenario.Rate}
	// v2 ships the new signing code path on; isolate turns it off.
	if spec.Flags, err = newPathOn(); err != nil {
		ld.finish()
		return nil, err
	}
	if cfg.Scenario.SchemaBump {
		spec.SchemaMin, spec.SchemaMax = store.SchemaVersion+1, store.SchemaVersion+1
	}
	if _, err := w.Deploy(ctx, spec); err != nil {
		ld.finish()
		return nil, fmt.Errorf("drill: deploy v2: %w", err)
	}
	rep := &Report{Scenario: cfg.Scenario.Name, Dir: cfg.Out}
	inc, runID, final, err := waitRun(ctx, w, &cfg)
	cfg.progress("stopping load; waiting for every request's final answer")
	outs := ld.finish()
	if err != nil {
		rep.Failures = append(rep.Failures, err.Error())
	}
	rep.Incident, rep.RunID = inc.ID, runID
	rep.RunState = string(final.State)

	grade(ctx, rep, w, st, outs, inc, deployed, before, &cfg, final, rcv)
	rep.DurationMs = time.Since(start).Milliseconds()
	return rep, nil
}

func sleep(ctx context.Context, d time.Duration) {
	select {
	case <-ctx.Done():
	case <-time.After(d):
	}
}

// waitCheckpoint waits until the log has a signed checkpoint of at least min entries.
func waitCheckpoint(ctx context.Context, st store.Store, min int64) (store.Checkpoint, error) {
	for {
		c, err := st.LatestCheckpoint(ctx)
		if err == nil && c.Size >= min {
			return c, nil
		}
		if err != nil && !errors.Is(err, store.ErrNotFound) {
			return c, err
		}
		select {
		case <-ctx.Done():
			return c, ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// waitRun waits for the detector's incident and its playbook run to end.
func waitRun(ctx context.Context, w *control.World, cfg *Config) (control.Incident, string, playbook.Status, error) {
	var inc control.Incident
	var runID string
	seen := map[string]bool{}
	for {
		if inc.ID == "" {
			if incs := w.Incidents(); len(incs) > 0 {
				inc = incs[0]
				cfg.progress("incident %s opened: %s (%s)", inc.ID, inc.Classification, inc.Summary)
			}
		}
		if inc.ID != "" && runID == "" {
			if id, ok := w.RunFor(inc.ID); ok {
				runID = id
				cfg.progress("rollback playbook %s started", runID)
			}
		}
		if runID != "" {
			st, err := w.Engine().Status(ctx, runID)
			if err == nil {
				for _, s := range st.Steps {
					k := s.ID + "/" + string(s.State)
					if !seen[k] && s.State != playbook.StepPending {
						seen[k] = true
						cfg.progress("  step %-14s %s %s", s.ID, s.State, s.Error)
					}
				}
				switch st.State {
				case playbook.RunSucceeded, playbook.RunFailed, playbook.RunAborted, playbook.RunPaused:
					for _, i := range w.Incidents() {
						if i.ID == inc.ID {
							inc = i
						}
					}
					return inc, runID, st, nil
				}
			}
		}
		select {
		case <-ctx.Done():
			var st playbook.Status
			if runID != "" {
				st, _ = w.Engine().Status(context.WithoutCancel(ctx), runID)
			}
			return inc, runID, st, fmt.Errorf("drill timed out waiting for the playbook (incident %q, run %q)", inc.ID, runID)
		case <-time.After(100 * time.Millisecond):
		}
	}
}

func grade(ctx context.Context, rep *Report, w *control.World, st store.Store, outs []outcome, inc control.Incident,
	deployed time.Time, before store.Checkpoint, cfg *Config, final playbook.Status, rcv *receiver) {
	ctx = context.WithoutCancel(ctx)
	// Requests: every 2xx must be a persisted signature with its audit
	// event; no idempotency key may have two signatures.
	rep.Requests.Sent = len(outs)
	for _, o := range outs {
		if o.Async {
			rep.Requests.AsyncSent++
		}
		switch o.Status {
		case "accepted":
			rep.Requests.Accepted++
			if o.Async {
				rep.Requests.AsyncAccepted++
			}
			sig, err := st.SignatureByIdempotencyKey(ctx, "dev", o.Key)
			if err != nil || sig.ID != o.SigID {
				rep.Requests.Lost++
				rep.Failures = append(rep.Failures, fmt.Sprintf("request %s was answered %s but the store has %q (%v)", o.Key, o.SigID, sig.ID, err))
				continue
			}
			evs, err := st.AuditEvents(ctx, sig.AuditIndex, 1)
			if err != nil || len(evs) != 1 || !strings.Contains(string(evs[0].Entry), sig.ID) {
				rep.Requests.Lost++
				rep.Failures = append(rep.Failures, fmt.Sprintf("signature %s has no audit event at index %d", sig.ID, sig.AuditIndex))
			}
		case "refused":
			rep.Requests.Refused503++
		case "failed":
			rep.Requests.Errors++ // a final problem answer: not lost, but counted
		default:
			rep.Requests.Lost++ // the client never got a final answer
			rep.Failures = append(rep.Failures, "request "+o.Key+" got no final answer: "+o.Detail)
		}
	}
	dups, firstV2 := scanSignatures(ctx, st, "v2")
	rep.Requests.Duplicates = dups

	// Times, from the first bad answer v2 gave.
	firstBad := inc.FirstBadAt
	if !firstV2.IsZero() && (firstBad.IsZero() || firstV2.Before(firstBad)) {
		firstBad = firstV2
	}
	if firstBad.IsZero() {
		firstBad = deployed
	}
	ms := func(t time.Time) int64 {
		if t.IsZero() {
			return -1
		}
		return t.Sub(firstBad).Milliseconds()
	}
	rep.TimeToDetectMs = ms(inc.DetectedAt)
	rep.TimeToContainMs = ms(inc.ContainedAt)
	rep.TimeToRestoreMs = ms(inc.RestoredAt)

	for _, s := range final.Steps {
		rep.Steps = append(rep.Steps, Step{ID: s.ID, Status: string(s.State), Started: s.StartedAt, Finished: s.FinishedAt, Error: s.Error, Note: s.Note})
		if s.State == playbook.StepUnavailable {
			rep.Unavailable = append(rep.Unavailable, s.ID)
		}
		if s.ID == "snapshot" {
			if m, ok := s.Outputs["manifest"].(string); ok {
				rep.SnapshotManifest = filepath.Join(w.Installation().Dir, "snapshots", m)
			}
		}
	}
	rep.Complete = len(rep.Unavailable) == 0

	// Audit: the log after the incident must be consistent with the
	// checkpoint signed before the regression shipped.
	rep.Audit.CheckpointBefore = string(before.Note)
	after, err := waitCheckpoint(ctx, st, before.Size+1)
	if err == nil {
		rep.Audit.CheckpointAfter = string(after.Note)
		_, err = auditlog.Verify(ctx, auditlog.StoreSource{R: st}, w.Installation().Config.LogVerifierKey, auditlog.VerifyOptions{Since: before.Note})
	}
	if err != nil {
		rep.Audit.Detail = err.Error()
	} else {
		rep.Audit.Consistent = true
	}

	// Grade.
	fail := func(cond bool, msg string, a ...any) {
		if cond {
			rep.Failures = append(rep.Failures, fmt.Sprintf(msg, a...))
		}
	}
	fail(rep.Requests.Lost != 0, "%d requests lost", rep.Requests.Lost)
	fail(rep.Requests.AsyncSent > 0 && rep.Requests.AsyncAccepted == 0, "none of %d asynchronous requests ended signed", rep.Requests.AsyncSent)
	fail(rep.Requests.Duplicates != 0, "%d idempotency keys with more than one signature", rep.Requests.Duplicates)
	fail(inc.ID == "", "no incident was opened")
	fail(rep.TimeToContainMs < 0 || rep.TimeToContainMs > 2000, "time to contain %d ms (target ≤ 2000 ms after the first bad signature)", rep.TimeToContainMs)
	fail(!rep.Audit.Consistent, "audit log not proven consistent across the incident: %s", rep.Audit.Detail)
	fail(final.State != cfg.Scenario.Expect, "playbook ended %q, want %q", final.State, cfg.Scenario.Expect)
	for _, s := range final.Steps {
		if cfg.Scenario.ExpectRefusal && s.ID == "rollback" {
			fail(s.State != playbook.StepFailed || !strings.Contains(s.Error, "refusing to roll back"),
				"rollback step %s (%s): want a refusal of the schema downgrade with a plan", s.State, s.Error)
			rep.Refusal = s.Error
			continue
		}
		fail(s.State == playbook.StepFailed || s.State == playbook.StepAborted, "step %s %s: %s", s.ID, s.State, s.Error)
		fail(s.State == playbook.StepUnavailable, "step %s is unavailable in this build", s.ID)
	}
	gradeClose(ctx, rep, w.Installation().Dir, cfg.Out, inc, final, rcv, cfg.Scenario, fail)
	rep.Pass = len(rep.Failures) == 0
	sort.Strings(rep.Unavailable)
}

// scanSignatures reads every persisted signature once and returns how many
// idempotency keys have more than one signature (-1 if the store cannot be
// read) and the signing time of release's first signature, probes
// included: the first bad signature is the first one the regressive
// release made, whoever asked for it.
func scanSignatures(ctx context.Context, st store.Store, release string) (dups int, first time.Time) {
	size, err := st.AuditSize(ctx)
	if err != nil {
		return -1, time.Time{}
	}
	seen := map[string]int{}
	for from := int64(0); from < size; {
		sigs, err := st.Signatures(ctx, from, size, 5000)
		if err != nil || len(sigs) == 0 {
			break
		}
		for _, s := range sigs {
			seen[s.TenantID+"\x00"+s.IdempotencyKey]++
			if first.IsZero() && s.Release == release {
				first = s.SignedAt
			}
		}
		from = sigs[len(sigs)-1].AuditIndex + 1
	}
	for _, c := range seen {
		if c > 1 {
			dups++
		}
	}
	return dups, first
}
