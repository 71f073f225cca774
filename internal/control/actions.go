package control

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/countersign/countersign/internal/api"
	"github.com/countersign/countersign/internal/flags"
	"github.com/countersign/countersign/internal/fleet"
	"github.com/countersign/countersign/internal/gateway"
	"github.com/countersign/countersign/internal/keys"
	"github.com/countersign/countersign/internal/playbook"
	"github.com/countersign/countersign/internal/probe"
	"github.com/countersign/countersign/internal/sign"
	"github.com/countersign/countersign/internal/snapshot"
	"github.com/countersign/countersign/internal/store"
)

// actionFunc adapts a pair of funcs to playbook.Action.
type actionFunc struct {
	plan func(ctx context.Context, c playbook.Call) (playbook.Plan, error)
	run  func(ctx context.Context, c playbook.Call) (playbook.Outputs, error)
}

func (a actionFunc) Plan(ctx context.Context, c playbook.Call) (playbook.Plan, error) {
	return a.plan(ctx, c)
}
func (a actionFunc) Run(ctx context.Context, c playbook.Call) (playbook.Outputs, error) {
	return a.run(ctx, c)
}

// registerActions binds the rollback playbook's built-in actions to w.
func (w *World) registerActions(r *playbook.Registry) error {
	acts := map[string]playbook.Action{
		"incident.classify":   actionFunc{w.planClassify, w.runClassify},
		"gateway.maintenance": actionFunc{w.planMaintenance, w.runMaintenance},
		"incident.open":       actionFunc{w.planIncidentOpen, w.runIncidentOpen},
		"snapshot.take":       actionFunc{w.planSnapshot, w.runSnapshot},
		"fleet.isolate":       actionFunc{w.planIsolate, w.runIsolate},
		"fleet.rollback":      actionFunc{w.planRollback, w.runRollback},
		"probe.smoke":         actionFunc{w.planSmoke, w.runSmoke},
		"gateway.canary":      actionFunc{w.planCanary, w.runCanary},
		"reconcile.replay":    actionFunc{w.planReplay, w.runReplay},
		"reconcile.audit":     actionFunc{w.planReconcile, w.runReconcile},
		"notify.customers":    actionFunc{w.planNotify, w.runNotify},
		"incident.close":      actionFunc{w.planClose, w.runClose},
	}
	for _, name := range playbook.RollbackActions {
		a, ok := acts[name]
		if !ok {
			return fmt.Errorf("control: no action bound for %s", name)
		}
		if err := r.Register(name, a); err != nil {
			return err
		}
	}
	return nil
}

func str(c playbook.Call, k string) string {
	v, _ := c.With[k]
	switch x := v.(type) {
	case string:
		return x
	case nil:
		return ""
	default:
		return fmt.Sprint(x)
	}
}

// actorCtx names who makes a step's changes: the gateway's recorder reads
// the actor, and backends that annotate what they change (fleet/kube,
// traffic/httproute) write the incident, run and step on every object.
func actorCtx(ctx context.Context, c playbook.Call) context.Context {
	actor := "playbook:" + c.RunID + "/" + c.StepID
	ctx = fleet.WithCause(ctx, fleet.Cause{Incident: c.Params["incident"], RunID: c.RunID, Step: c.StepID, Actor: actor})
	return gateway.WithActor(ctx, actor)
}

// incidentFor finds the incident a run is about.
func (w *World) incidentFor(ctx context.Context, c playbook.Call) (Incident, error) {
	if id := c.Params["incident"]; id != "" {
		return w.incidents.get(ctx, id)
	}
	inc, ok, err := w.incidents.openFor(ctx, c.Params["regressive_release"])
	if err != nil {
		return Incident{}, err
	}
	if !ok {
		return Incident{}, fmt.Errorf("%w: none open for release %s", ErrNoIncident, c.Params["regressive_release"])
	}
	return inc, nil
}

// --- 1. classify

func (w *World) planClassify(ctx context.Context, c playbook.Call) (playbook.Plan, error) {
	return playbook.Plan{Notes: []string{"reads the incident's probe and drift evidence; changes nothing"}}, nil
}

func (w *World) runClassify(ctx context.Context, c playbook.Call) (playbook.Outputs, error) {
	inc, err := w.incidentFor(ctx, c)
	if err != nil {
		return nil, err
	}
	class, severity := "signature-corruption", "sev1"
	switch probe.Classification(inc.Classification) {
	case probe.Availability:
		class, severity = "availability", "sev2"
	case probe.Performance:
		class, severity = "performance", "sev3"
	}
	start := inc.FirstBadAt
	if start.IsZero() {
		start = inc.DetectedAt
	}
	return playbook.Outputs{"class": class, "severity": severity, "window_start": start.Format(time.RFC3339Nano), "incident": inc.ID}, nil
}

// --- 2. block ingress

// poolsRunning lists the pools whose current release is id.
func (w *World) poolsRunning(ctx context.Context, id string) ([]string, error) {
	st, err := w.fleet.Status(ctx)
	if err != nil {
		return nil, err
	}
	var out []string
	for _, p := range st {
		if p.Release.ID == id && p.Revision > 0 {
			out = append(out, p.Pool)
		}
	}
	return out, nil
}

func (w *World) planMaintenance(ctx context.Context, c playbook.Call) (playbook.Plan, error) {
	pl := playbook.Plan{}
	on := str(c, "enabled") != "false"
	if rel := str(c, "isolate_release"); rel != "" && on {
		pools, _ := w.poolsRunning(ctx, rel)
		for _, p := range pools {
			if p != PoolStable {
				chs, err := w.planWeights(ctx, map[string]int{PoolStable: 100, p: 0}, "pool "+p+" runs "+rel)
				if err != nil {
					return pl, err
				}
				pl.Changes = append(pl.Changes, chs...)
			}
		}
	}
	gate := gateway.Gate{On: on, RetryAfter: retryAfterSeconds(str(c, "retry_after"))}
	chs, err := w.router.PlanGate(ctx, gate)
	if err != nil {
		return pl, fmt.Errorf("plan gate on %s: %w", w.router, err)
	}
	for _, ch := range planChanges(chs) {
		ch.Detail = "writes answered 503 + Retry-After " + str(c, "retry_after")
		pl.Changes = append(pl.Changes, ch)
	}
	if len(chs) == 0 {
		pl.Notes = append(pl.Notes, fmt.Sprintf("the gate of %s is already %v", w.router, on))
	}
	if str(c, "pause_async_intake") == "true" {
		pl.Changes = append(pl.Changes, playbook.Change{Target: "gateway:POST /v1/sign:async", To: "503 + Retry-After", Detail: "async intake refused by the gate"})
		pl.Notes = append(pl.Notes, "queue consumers: "+sharedConsumerNote)
	}
	return pl, nil
}

// retryAfterSeconds turns a playbook duration ("120s") into the gate's
// Retry-After seconds; anything unparsable or under a second is 30.
func retryAfterSeconds(v string) int {
	if d, err := time.ParseDuration(v); err == nil && d >= time.Second {
		return int(d / time.Second)
	}
	return 30
}

func (w *World) runMaintenance(ctx context.Context, c playbook.Call) (playbook.Outputs, error) {
	ctx = actorCtx(ctx, c)
	retry := retryAfterSeconds(str(c, "retry_after"))
	on := str(c, "enabled") != "false"
	out := playbook.Outputs{}
	// Zero the regressive pool's weight first: with the gate on writes stop
	// anyway, but reads (verify) would still reach it.
	if rel := str(c, "isolate_release"); rel != "" && on {
		pools, err := w.poolsRunning(ctx, rel)
		if err != nil {
			return nil, err
		}
		for _, p := range pools {
			if p == PoolStable {
				continue // the only pool left: the gate is the containment
			}
			if err := w.router.SetWeights(ctx, map[string]int{PoolStable: 100, p: 0}); err != nil {
				return nil, fmt.Errorf("zero weight of %s: %w", p, err)
			}
			out["isolated_pool"] = p
		}
	}
	g, err := w.router.SetGate(ctx, gateway.Gate{On: on, RetryAfter: retry, Reason: "incident " + c.Params["incident"] + " (playbook " + c.RunID + ")"})
	if err != nil {
		return nil, err
	}
	out["gate_on"] = g.On
	out["since"] = g.Since.Format(time.RFC3339Nano)
	if on {
		out["async_intake"] = "paused: the gate answers POST /v1/sign:async with 503 + Retry-After"
	} else {
		out["async_intake"] = "open"
	}
	out["consumers"] = sharedConsumerNote
	out["consumer_state"] = w.consumerState(ctx)
	if inc, err := w.incidentFor(ctx, c); err == nil && on {
		now := w.now().UTC()
		w.incidents.update(ctx, inc.ID, "incident.contained", map[string]any{"gate_on_at": now.Format(time.RFC3339Nano)},
			func(i *Incident) {
				if i.ContainedAt.IsZero() {
					i.ContainedAt = now
				}
				if i.State == IncidentOpen {
					i.State = IncidentContained
				}
			})
	}
	return out, nil
}

// --- 3. open incident

func (w *World) planIncidentOpen(ctx context.Context, c playbook.Call) (playbook.Plan, error) {
	return playbook.Plan{Changes: []playbook.Change{{Target: "incident", To: "commander " + str(c, "commander")}},
		Notes: []string{"phase A (internal) notice to " + filepath.Join(w.cfg.Dir, IncidentsDir, "<incident>", NoticesDir) + webhookNote(w.cfg.NotifyWebhook)}}, nil
}

func (w *World) runIncidentOpen(ctx context.Context, c playbook.Call) (playbook.Outputs, error) {
	inc, err := w.incidentFor(ctx, c)
	if err != nil {
		return nil, err
	}
	commander := str(c, "commander")
	inc, err = w.incidents.update(actorCtx(ctx, c), inc.ID, "incident.commander_assigned",
		map[string]any{"commander": commander, "class": str(c, "class"), "severity": str(c, "severity")},
		func(i *Incident) { i.Commander = commander })
	if err != nil {
		return nil, err
	}
	rec, err := w.phaseANotice(ctx, c, inc)
	if err != nil {
		return nil, fmt.Errorf("phase A notice: %w", err)
	}
	return playbook.Outputs{"incident_id": inc.ID, "channel": "#" + strings.ToLower(inc.ID),
		"notice_phase_a": rec.Notice.Digest, "notices": noticeOutputs([]NoticeRecord{rec})}, nil
}

// --- 4. snapshot

func (w *World) snapshotParts() []snapshot.Part {
	st := w.inst.Store
	parts := []snapshot.Part{}
	if b, ok := st.(snapshot.SQLiteBackuper); ok {
		parts = append(parts, snapshot.SQLite{Store: b, TempDir: filepath.Join(w.cfg.Dir, "tmp")})
	}
	if pe, ok := st.(snapshot.PostgresExporter); ok {
		// pg_dump of a snapshot the store exports: a consistent image
		// while nodes keep writing elsewhere (they are gated anyway).
		parts = append(parts, snapshot.Postgres{Store: pe, URL: w.inst.StoreURL()})
	}
	parts = append(parts, snapshot.Audit{Store: st}, snapshot.KeyInventory{Store: st}, snapshot.KeyEvents{Store: st},
		snapshot.Fleet{Fleet: w.fleet})
	if w.queue != nil {
		parts = append(parts, snapshot.QueueStream{Queue: w.queue.q}, snapshot.QueuePositions{Queue: w.queue.q})
	}
	parts = append(parts, worldFlagsPart{path: FlagsPath(w.cfg.Dir), log: w.log})
	if st, err := w.fleet.Status(context.Background()); err == nil {
		seen := map[string]bool{}
		for _, p := range st {
			id := p.Release.ID
			if id == "" || seen[id] {
				continue
			}
			seen[id] = true
			if path := ReleaseFlagsPath(w.cfg.Dir, id); fileExists(path) {
				parts = append(parts, releaseFlagsPart{id: id, path: path})
			}
		}
	}
	return parts
}

func (w *World) planSnapshot(ctx context.Context, c playbook.Call) (playbook.Plan, error) {
	pl := playbook.Plan{}
	for _, p := range w.snapshotParts() {
		pl.Changes = append(pl.Changes, playbook.Change{Target: "immutable:" + w.snapshotStoreName(), To: p.Name(), Detail: p.Kind()})
	}
	return pl, nil
}

func (w *World) runSnapshot(ctx context.Context, c playbook.Call) (playbook.Outputs, error) {
	if err := os.MkdirAll(filepath.Join(w.cfg.Dir, "tmp"), 0o700); err != nil {
		return nil, err
	}
	ims, err := w.snapshotStore()
	if err != nil {
		return nil, err
	}
	inc := str(c, "incident")
	m, sum, err := snapshot.Take(ctx, snapshot.Config{Store: ims, Parts: w.snapshotParts(), IncidentID: inc,
		Release: "control", Instance: w.rec.instance, Token: c.Token, Now: w.now, Logger: w.log})
	if err != nil {
		return nil, err
	}
	if err := w.rec.Record(actorCtx(ctx, c), "snapshot.taken", "snapshot/"+m.SnapshotID, map[string]any{
		"manifest": m.ObjectName(), "manifest_sha256": sum, "incident": inc, "parts": len(m.Parts)}); err != nil {
		return nil, err
	}
	size, _ := w.inst.Store.TreeSize(ctx)
	n, err := w.inFlight(ctx)
	if err != nil {
		return nil, err
	}
	return playbook.Outputs{"manifest": m.ObjectName(), "manifest_sha256": sum, "snapshot_dir": w.snapshotStoreName(),
		"audit_checkpoint": size, "in_flight": n}, nil
}

// snapshotStore is where snapshots go: Config.SnapshotStore (e.g. an S3
// bucket under Object Lock) or the write-once directory <Dir>/snapshots.
func (w *World) snapshotStore() (snapshot.ImmutableStore, error) {
	if w.cfg.SnapshotStore != nil {
		return w.cfg.SnapshotStore, nil
	}
	return snapshot.NewWriteOnceDir(filepath.Join(w.cfg.Dir, "snapshots"))
}

func (w *World) snapshotStoreName() string {
	if s, ok := w.cfg.SnapshotStore.(fmt.Stringer); ok {
		return s.String()
	}
	if w.cfg.SnapshotStore != nil {
		return fmt.Sprintf("%T", w.cfg.SnapshotStore)
	}
	return filepath.Join(w.cfg.Dir, "snapshots")
}

// --- 5. isolate

func (w *World) planIsolate(ctx context.Context, c playbook.Call) (playbook.Plan, error) {
	pools, err := w.poolsRunning(ctx, str(c, "release"))
	if err != nil {
		return playbook.Plan{}, err
	}
	pl := playbook.Plan{}
	for _, p := range pools {
		if p == PoolStable {
			pl.Notes = append(pl.Notes, "the regressive release runs in the stable pool: it stays up behind the gate until the rollback replaces it")
			continue
		}
		chs, err := w.planWeights(ctx, map[string]int{PoolStable: 100, p: 0}, "")
		if err != nil {
			return pl, err
		}
		pl.Changes = append(pl.Changes, chs...)
		if pf, ok := w.fleet.(fleet.Planner); ok {
			fchs, err := pf.PlanDrain(ctx, p)
			if err != nil {
				return pl, fmt.Errorf("plan drain of %s: %w", p, err)
			}
			pl.Changes = append(pl.Changes, planChanges(fchs)...)
		} else {
			pl.Changes = append(pl.Changes, playbook.Change{Target: "fleet:pool/" + p, To: "drained, 0 replicas"})
		}
	}
	if str(c, "flags_off") != "false" {
		pl.Changes = append(pl.Changes, playbook.Change{Target: "flags:" + ReleaseFlagsPath(w.cfg.Dir, str(c, "release")),
			To: flags.NewSigningPath + "=off", Detail: "audited before the file changes"})
	}
	pl.Notes = append(pl.Notes, "consumers: "+sharedConsumerNote)
	return pl, nil
}

func (w *World) runIsolate(ctx context.Context, c playbook.Call) (playbook.Outputs, error) {
	ctx = actorCtx(ctx, c)
	rel := str(c, "release")
	pools, err := w.poolsRunning(ctx, rel)
	if err != nil {
		return nil, err
	}
	out := playbook.Outputs{"release": rel}
	var isolated []string
	for _, p := range pools {
		if p == PoolStable {
			// The regressive release is the stable one: it stays up behind
			// the gate until the rollback replaces it.
			out["note"] = "regressive release runs in the stable pool; isolated by the gate until rolled back"
			continue
		}
		if err := w.router.SetWeights(ctx, map[string]int{PoolStable: 100, p: 0}); err != nil {
			return nil, err
		}
		rep, err := w.fleet.Drain(ctx, p)
		if err != nil {
			return nil, fmt.Errorf("drain %s: %w", p, err)
		}
		if err := w.fleet.Scale(ctx, p, 0); err != nil {
			return nil, fmt.Errorf("scale %s to 0: %w", p, err)
		}
		if err := w.rec.Record(ctx, "fleet.isolated", "pool/"+p, map[string]any{"release": rel, "stopped": rep.Stopped, "killed": rep.Killed}); err != nil {
			return nil, err
		}
		isolated = append(isolated, p)
		out["killed"] = rep.Killed
	}
	out["pools"] = isolated
	out["consumers"] = sharedConsumerNote
	out["consumer_state"] = w.consumerState(ctx)
	if str(c, "flags_off") != "false" {
		ch, err := w.newPathOff(ctx, c, rel)
		if err != nil {
			return nil, err
		}
		out["flags"] = ch
	}
	return out, nil
}

// newPathOff pins the new signing code path off in the regressive
// release's flag file; the audit event is recorded before the file changes.
func (w *World) newPathOff(ctx context.Context, c playbook.Call, rel string) (map[string]any, error) {
	if err := validReleaseID(rel); err != nil {
		return nil, err
	}
	path := ReleaseFlagsPath(w.cfg.Dir, rel)
	if !fileExists(path) {
		return map[string]any{"file": path, "note": "release " + rel + " has no flag file here; nothing to change"}, nil
	}
	ch, err := flags.SetVariant(ctx, path, flags.NewSigningPath, "off", "playbook:"+c.RunID+"/"+c.StepID,
		"isolate regressive release "+rel+" (incident "+c.Params["incident"]+")", flagRecorder{w.rec})
	if err != nil {
		return nil, fmt.Errorf("turn %s off for %s: %w", flags.NewSigningPath, rel, err)
	}
	return map[string]any{"file": path, "flag": ch.Flag, "from": ch.FromVariant, "to": ch.ToVariant,
		"from_state": ch.FromState, "to_state": ch.ToState, "changed": ch.Changed, "sha256": ch.SHA256}, nil
}

// --- 6. roll back

// target resolves the release to roll back to.
func (w *World) target(ctx context.Context, want string) (fleet.Revision, error) {
	if want == "" || want == "last-known-good" {
		return w.fleet.LastKnownGood(ctx)
	}
	for _, pool := range []string{PoolStable, PoolCanary} {
		h, err := w.fleet.History(ctx, pool)
		if err != nil && !errors.Is(err, fleet.ErrNotFound) {
			return fleet.Revision{}, err
		}
		for i := len(h) - 1; i >= 0; i-- {
			if h[i].Release.ID == want {
				return h[i], nil
			}
		}
	}
	return fleet.Revision{}, fmt.Errorf("release %s was never deployed here", want)
}

// SchemaRefusal is the error of a rollback whose target release cannot run
// against the current schema. It carries the plan to offer instead.
type SchemaRefusal struct {
	Release        string
	Min, Max       int
	DatabaseSchema int
}

func (e *SchemaRefusal) Error() string {
	return fmt.Sprintf("refusing to roll back to %s: it runs against store schema %d..%d but the database is at schema %d, "+
		"and schemas are never downgraded (that would drop data). Plan instead: (1) forward-fix — ship a release built from %s's code "+
		"that declares schema %d (it only needs to read the expanded columns); or (2) backfill — keep the current release isolated behind "+
		"the gate, fix the regression, and deploy it as a new release. Resume the playbook after deploying the fix, with --to <release>",
		e.Release, e.Min, e.Max, e.DatabaseSchema, e.Release, e.DatabaseSchema)
}

func (w *World) planRollback(ctx context.Context, c playbook.Call) (playbook.Plan, error) {
	t, err := w.target(ctx, str(c, "release"))
	if err != nil {
		return playbook.Plan{}, err
	}
	v, err := w.inst.Store.SchemaVersion(ctx)
	if err != nil {
		return playbook.Plan{}, err
	}
	if !t.Release.SupportsSchema(v) {
		return playbook.Plan{Notes: []string{(&SchemaRefusal{t.Release.ID, t.Release.SchemaMin, t.Release.SchemaMax, v}).Error()}}, nil
	}
	detail := fmt.Sprintf("release %s = revision %d of pool %s, schema %d..%d (database at %d)", t.Release.ID, t.Number, t.Pool, t.Release.SchemaMin, t.Release.SchemaMax, v)
	pf, ok := w.fleet.(fleet.Planner)
	if !ok {
		return playbook.Plan{Changes: []playbook.Change{{Target: "fleet:pool/" + PoolCanary, To: t.Release.ID, Detail: detail}}}, nil
	}
	var chs []fleet.Change
	if t.Pool == PoolCanary {
		chs, err = pf.PlanRollback(ctx, PoolCanary, t.Number)
	} else {
		chs, err = pf.PlanDeploy(ctx, PoolCanary, t.Release, w.cfg.Replicas)
	}
	if err != nil {
		return playbook.Plan{}, fmt.Errorf("plan rollback of %s: %w", PoolCanary, err)
	}
	pl := playbook.Plan{Changes: planChanges(chs), Notes: []string{detail}}
	return pl, nil
}

func (w *World) runRollback(ctx context.Context, c playbook.Call) (playbook.Outputs, error) {
	ctx = actorCtx(ctx, c)
	t, err := w.target(ctx, str(c, "release"))
	if err != nil {
		return nil, err
	}
	v, err := w.inst.Store.SchemaVersion(ctx)
	if err != nil {
		return nil, err
	}
	if !t.Release.SupportsSchema(v) {
		ref := &SchemaRefusal{t.Release.ID, t.Release.SchemaMin, t.Release.SchemaMax, v}
		w.rec.Record(ctx, "rollback.refused", "release/"+t.Release.ID, map[string]any{"reason": "schema", "database_schema": v,
			"release_schema_min": t.Release.SchemaMin, "release_schema_max": t.Release.SchemaMax})
		return nil, ref
	}
	// Idempotent per token: if the canary pool already runs the target, it
	// was this step (or an earlier attempt of it).
	st, err := w.fleet.Status(ctx)
	if err != nil {
		return nil, err
	}
	for _, p := range st {
		if p.Pool == PoolCanary && p.Release.ID == t.Release.ID && p.Ready > 0 {
			return playbook.Outputs{"pool": PoolCanary, "release": t.Release.ID, "revision": p.Revision, "schema": v, "note": "already deployed"}, nil
		}
	}
	// A revision of the canary pool itself is rolled back to (its pod
	// template re-applied, as a new revision); a release that ran in another
	// pool is deployed into the canary pool.
	rel := t.Release.Clone()
	var rev fleet.Revision
	if t.Pool == PoolCanary {
		rev, err = w.fleet.Rollback(ctx, PoolCanary, t.Number)
	} else {
		rev, err = w.fleet.Deploy(ctx, PoolCanary, rel, w.cfg.Replicas)
	}
	if err != nil {
		return nil, err
	}
	if err := w.rec.Record(ctx, "fleet.rolled_back", "pool/"+PoolCanary, map[string]any{"release": rel.ID, "revision": rev.Number,
		"from_release": str(c, "from_release"), "schema": v}); err != nil {
		return nil, err
	}
	w.detector.Reset(PoolCanary)
	return playbook.Outputs{"pool": PoolCanary, "release": rel.ID, "revision": rev.Number, "schema": v}, nil
}

// --- 7. verify (smoke)

func (w *World) planSmoke(ctx context.Context, c playbook.Call) (playbook.Plan, error) {
	return playbook.Plan{Notes: []string{"signs cms, jws and raw through every replica of the restored pool and verifies each against keys pinned out of band; changes nothing"}}, nil
}

func (w *World) runSmoke(ctx context.Context, c playbook.Call) (playbook.Outputs, error) {
	w.checkHealth(ctx)
	seen := map[api.Format]int{}
	for round := 0; round < 20 && len(seen) < 3; round++ {
		for _, f := range w.prober.Round(ctx) {
			if f.Pool != PoolCanary {
				continue
			}
			if f.Kind != probe.KindOK {
				return nil, fmt.Errorf("smoke: %s on %s (%s) is %s: %s", f.Format, f.Endpoint, f.Release, f.Kind, f.Detail)
			}
			seen[f.Format]++
		}
		if len(seen) < 3 {
			select {
			case <-ctx.Done():
				return nil, ctx.Err()
			case <-time.After(100 * time.Millisecond):
			}
		}
	}
	if len(seen) < 3 {
		return nil, fmt.Errorf("smoke: only %d of 3 formats answered by the restored pool", len(seen))
	}
	return playbook.Outputs{"checked": seen[api.FormatCMS] + seen[api.FormatJWS] + seen[api.FormatRaw], "pool": PoolCanary}, nil
}

// --- 8. canary

func (w *World) planCanary(ctx context.Context, c playbook.Call) (playbook.Plan, error) {
	pl := playbook.Plan{}
	gchs, err := w.router.PlanGate(ctx, gateway.Gate{On: false})
	if err != nil {
		return pl, fmt.Errorf("plan gate on %s: %w", w.router, err)
	}
	pl.Changes = planChanges(gchs)
	if len(gchs) == 0 {
		// At plan time the gate may still be off; the block-ingress step
		// turns it on before this step runs.
		pl.Changes = append(pl.Changes, playbook.Change{Target: w.router.String(), Field: "gate", From: "on", To: "off"})
	}
	// Each stage's changes as they will be made: from the previous stage's
	// weights (the first from the weights isolate leaves, canary at 0).
	prev := map[string]string{}
	iso, err := w.planWeights(ctx, map[string]int{PoolStable: 100, PoolCanary: 0}, "")
	if err != nil {
		return pl, err
	}
	for _, ch := range iso {
		prev[ch.Target+" "+ch.Field] = ch.To
	}
	for _, s := range stages(c) {
		chs, err := w.planWeights(ctx, map[string]int{PoolStable: 100 - s, PoolCanary: s}, "hold "+str(c, "hold")+", every canary signature verified")
		if err != nil {
			return pl, err
		}
		for _, ch := range chs {
			key := ch.Target + " " + ch.Field
			if from, ok := prev[key]; ok {
				ch.From = from
			}
			prev[key] = ch.To
			if ch.From != ch.To {
				pl.Changes = append(pl.Changes, ch)
			}
		}
	}
	return pl, nil
}

func stages(c playbook.Call) []int {
	if v, err := c.Ints("stages"); err == nil && len(v) > 0 {
		return v
	}
	return []int{1, 10, 50, 100}
}

func (w *World) runCanary(ctx context.Context, c playbook.Call) (playbook.Outputs, error) {
	ctx = actorCtx(ctx, c)
	hold, err := time.ParseDuration(str(c, "hold"))
	if err != nil || hold <= 0 {
		hold = 2 * time.Minute
	}
	from, err := w.inst.Store.AuditSize(ctx)
	if err != nil {
		return nil, err
	}
	if _, err := w.router.SetGate(ctx, gateway.Gate{On: false}); err != nil {
		return nil, err
	}
	verified, unverifiable := 0, 0
	for _, s := range stages(c) {
		want := map[string]int{PoolStable: 100 - s, PoolCanary: s}
		if err := w.router.SetWeights(ctx, want); err != nil {
			return nil, err
		}
		// Read the weights back from what routes: a router that accepted
		// the change but routes otherwise must stop the canary here.
		got, err := w.router.State(ctx)
		if err != nil {
			return nil, fmt.Errorf("canary stage %d%%: read back %s: %w", s, w.router, err)
		}
		if got.Weights[PoolStable] != want[PoolStable] || got.Weights[PoolCanary] != want[PoolCanary] {
			w.router.SetWeights(ctx, map[string]int{PoolStable: 100, PoolCanary: 0})
			return nil, fmt.Errorf("canary stage %d%%: %s reads back weights %v after setting %v", s, w.router, got.Weights, want)
		}
		deadline := time.Now().Add(hold)
		for {
			n, u, next, err := w.verifyCanary(ctx, from)
			verified, unverifiable, from = verified+n, unverifiable+u, next
			if err != nil {
				w.router.SetWeights(ctx, map[string]int{PoolStable: 100, PoolCanary: 0})
				w.rec.Record(ctx, "canary.aborted", "pool/"+PoolCanary, map[string]any{"stage": s, "reason": err.Error()})
				return nil, fmt.Errorf("canary aborted at %d%%, weight back to 0: %w", s, err)
			}
			if time.Now().After(deadline) {
				break
			}
			select {
			case <-ctx.Done():
				return nil, ctx.Err()
			case <-time.After(250 * time.Millisecond):
			}
		}
		w.rec.note(TimelineEntry{Time: w.now(), Kind: "canary.stage", Subject: "pool/" + PoolCanary, Details: map[string]any{"weight": s, "verified": verified, "read_back": got.Weights}})
	}
	st, _ := w.fleet.Status(ctx)
	for _, p := range st {
		if p.Pool == PoolCanary && p.Revision > 0 {
			w.fleet.MarkGood(ctx, PoolCanary, p.Revision)
		}
	}
	if inc, err := w.incidentFor(ctx, c); err == nil {
		now := w.now().UTC()
		w.incidents.update(ctx, inc.ID, "incident.restored", map[string]any{"restored_at": now.Format(time.RFC3339Nano), "verified": verified},
			func(i *Incident) { i.RestoredAt, i.State = now, IncidentRestored })
	}
	return playbook.Outputs{"verified": verified, "unverifiable_from_store": unverifiable, "final_weight": 100}, nil
}

// verifyCanary independently verifies every signature the canary pool's
// instances committed since audit index from, against the stored public
// key material and the key algorithm's digest policy.
func (w *World) verifyCanary(ctx context.Context, from int64) (verified, unverifiable int, next int64, err error) {
	size, err := w.inst.Store.AuditSize(ctx)
	if err != nil {
		return 0, 0, from, err
	}
	sigs, err := w.inst.Store.Signatures(ctx, from, size, 10000)
	if err != nil {
		return 0, 0, from, err
	}
	for _, s := range sigs {
		if !strings.HasPrefix(s.Instance, PoolCanary+"-") {
			continue
		}
		if s.Format == string(api.FormatJWS) {
			unverifiable++ // a detached JWS needs the document, which is not stored; probes verify JWS end to end
			continue
		}
		if err := w.verifyStored(ctx, s); err != nil {
			return verified, unverifiable, size, fmt.Errorf("signature %s by %s (%s): %w", s.ID, s.Instance, s.Release, err)
		}
		verified++
	}
	return verified, unverifiable, size, nil
}

func (w *World) verifyStored(ctx context.Context, s store.Signature) error {
	kvs, err := w.inst.Store.KeyVersions(ctx, s.TenantID, s.KeyName)
	if err != nil {
		return err
	}
	for _, kv := range kvs {
		if kv.Version != s.KeyVersion {
			continue
		}
		alg, err := keys.ParseAlgorithm(kv.Algorithm)
		if err != nil {
			return err
		}
		h, err := sign.HashByName(s.DigestAlgorithm)
		if err != nil {
			return err
		}
		if h != alg.Hash() {
			return fmt.Errorf("metadata drift: digest %s, policy for %s is %s", s.DigestAlgorithm, alg, sign.HashName(alg.Hash()))
		}
		pub, chain, err := w.inst.Keys.VerifyMaterial(kv)
		if err != nil {
			return err
		}
		return sign.Verify(api.Format(s.Format), s.Signature, sign.Input{Digest: s.DocumentDigest, Hash: h},
			sign.VerifyKey{Public: pub, Algorithm: alg, Chain: chain})
	}
	return fmt.Errorf("key %s/%s has no version %d", s.TenantID, s.KeyName, s.KeyVersion)
}

func webhookNote(url string) string {
	if url == "" {
		return ""
	}
	return " and webhook " + url
}
