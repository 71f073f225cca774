// Package fleet says where releases run and how the playbook moves them:
// deploy a release into a named pool, scale, drain, roll back to an earlier
// revision, and find the last known good release.
//
// Backends: fleet/local supervises node processes on this machine; a
// Kubernetes backend maps each pool onto a Deployment, each Revision onto a
// ReplicaSet revision, MarkGood onto an annotation of that ReplicaSet, and
// Drain onto scaling to zero and waiting for the pods to terminate.
//
// Invariant: a pool's history only grows. Deploy and Rollback each add a
// revision (a rollback re-deploys an earlier release under a new number, as
// "kubectl rollout undo" does); nothing rewrites an earlier revision except
// its status and its good mark.
package fleet

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"regexp"
	"slices"
	"time"
)

// Release is one buildable, verifiable thing that can run in a pool.
type Release struct {
	ID       string `json:"id"`       // e.g. "v1.4.2"; stamped on every signature
	Artifact string `json:"artifact"` // path (local) or image reference (kube)
	SHA256   string `json:"sha256"`   // hex digest of the artifact; checked before anything starts
	// Args are the node's arguments. fleet/local renders each as a
	// text/template with the replica's .Listen, .Port, .Pool, .Replica,
	// .Release, .DataDir and .FlagsFile.
	Args      []string          `json:"args,omitempty"`
	Env       []string          `json:"env,omitempty"` // KEY=value
	FlagsFile string            `json:"flags_file,omitempty"`
	SchemaMin int               `json:"schema_min"` // oldest store schema version it runs against
	SchemaMax int               `json:"schema_max"` // newest
	Labels    map[string]string `json:"labels,omitempty"`
}

var (
	// ErrInvalid marks a malformed release or request.
	ErrInvalid = errors.New("fleet: invalid")
	// ErrNotFound marks an unknown pool or revision.
	ErrNotFound = errors.New("fleet: not found")
	// ErrNoKnownGood means no revision has been marked good.
	ErrNoKnownGood = errors.New("fleet: no known good release")
	// ErrNotReady means replicas did not become ready in time.
	ErrNotReady = errors.New("fleet: replicas not ready")
)

// ChecksumError refuses an artifact whose digest is not the release's.
type ChecksumError struct {
	Artifact  string
	Want, Got string
}

func (e *ChecksumError) Error() string {
	return fmt.Sprintf("fleet: artifact %s has sha256 %s, release says %s", e.Artifact, e.Got, e.Want)
}

var sha256RE = regexp.MustCompile(`^[0-9a-f]{64}$`)

// Validate checks that the release can be deployed at all.
func (r Release) Validate() error {
	switch {
	case r.ID == "":
		return fmt.Errorf("%w release: empty id", ErrInvalid)
	case r.Artifact == "":
		return fmt.Errorf("%w release %s: empty artifact", ErrInvalid, r.ID)
	case !sha256RE.MatchString(r.SHA256):
		return fmt.Errorf("%w release %s: sha256 must be 64 lowercase hex digits", ErrInvalid, r.ID)
	case r.SchemaMin < 0 || r.SchemaMax < r.SchemaMin:
		return fmt.Errorf("%w release %s: schema range [%d,%d]", ErrInvalid, r.ID, r.SchemaMin, r.SchemaMax)
	}
	return nil
}

// SupportsSchema reports whether the release runs against store schema v.
func (r Release) SupportsSchema(v int) bool { return v >= r.SchemaMin && v <= r.SchemaMax }

// Clone returns a deep copy.
func (r Release) Clone() Release {
	r.Args = slices.Clone(r.Args)
	r.Env = slices.Clone(r.Env)
	r.Labels = maps.Clone(r.Labels)
	return r
}

// RevisionStatus is where a revision is in its life.
type RevisionStatus string

const (
	// StatusDeploying: replicas are starting.
	StatusDeploying RevisionStatus = "deploying"
	// StatusCurrent: what the pool runs now (at most one per pool).
	StatusCurrent RevisionStatus = "current"
	// StatusSuperseded: replaced by a later revision.
	StatusSuperseded RevisionStatus = "superseded"
	// StatusFailed: never became ready; the previous revision kept running.
	StatusFailed RevisionStatus = "failed"
)

// Revision is one deployment of a release into a pool. Numbers start at 1
// and are per pool, like a Deployment's ReplicaSet revisions.
type Revision struct {
	Pool         string         `json:"pool"`
	Number       int            `json:"number"`
	Release      Release        `json:"release"`
	CreatedAt    time.Time      `json:"created_at"`
	Status       RevisionStatus `json:"status"`
	RollbackOf   int            `json:"rollback_of,omitempty"` // the revision whose release this one re-deploys
	Good         bool           `json:"good,omitempty"`
	MarkedGoodAt time.Time      `json:"marked_good_at,omitzero"`
}

// PoolStatus is what a pool runs now.
type PoolStatus struct {
	Pool      string   `json:"pool"`
	Revision  int      `json:"revision"` // current revision, 0 if none
	Release   Release  `json:"release"`
	Desired   int      `json:"desired"`
	Ready     int      `json:"ready"`
	Endpoints []string `json:"endpoints"` // base URLs of ready replicas, e.g. http://127.0.0.1:41234
	Restarts  int      `json:"restarts"`  // unasked exits of the running replicas since they were started: a crash loop shows here
}

// DrainReport says how a drain ended, replica by replica.
type DrainReport struct {
	Pool     string        `json:"pool"`
	Stopped  int           `json:"stopped"` // replicas that finished their in-flight work and exited
	Killed   int           `json:"killed"`  // replicas killed after the grace period: their in-flight work is suspect
	Duration time.Duration `json:"duration"`
}

// Fleet is what the playbook drives. Every method is safe for concurrent use.
type Fleet interface {
	// Deploy verifies rel (Validate, artifact digest) and starts it in pool
	// with the given replica count as a new revision. It returns once every
	// replica is ready; the previous revision's replicas are then stopped
	// gracefully. If the new replicas do not become ready, they are stopped,
	// the revision is marked failed, the previous one keeps serving, and the
	// error wraps ErrNotReady. A digest mismatch returns *ChecksumError and
	// records nothing.
	Deploy(ctx context.Context, pool string, rel Release, replicas int) (Revision, error)
	// Scale sets the pool's replica count and waits until it is reached:
	// new replicas ready, removed ones stopped gracefully.
	Scale(ctx context.Context, pool string, replicas int) error
	// Drain stops the pool taking new work and waits for in-flight work to
	// finish: every replica is asked to stop (SIGTERM / pod termination),
	// and is killed only after the grace period. The pool's desired count
	// becomes 0; its current revision is kept, so Scale brings it back.
	// Callers take the pool out of the gateway first.
	Drain(ctx context.Context, pool string) (DrainReport, error)
	// Status reports every pool, sorted by name.
	Status(ctx context.Context) ([]PoolStatus, error)
	// History returns the pool's revisions, oldest first.
	History(ctx context.Context, pool string) ([]Revision, error)
	// Rollback re-deploys the release of revision toRevision as a new
	// revision, with the pool's current replica count (at least 1), with
	// Deploy's semantics.
	Rollback(ctx context.Context, pool string, toRevision int) (Revision, error)
	// MarkGood marks a revision as known good (after it passed verify and
	// canary). It is idempotent.
	MarkGood(ctx context.Context, pool string, revision int) error
	// LastKnownGood returns the newest revision marked good across all
	// pools (by creation time), or ErrNoKnownGood.
	LastKnownGood(ctx context.Context) (Revision, error)
}
