// Package kube is the Kubernetes fleet: it implements fleet.Fleet and
// fleet.Planner on Deployments and ReplicaSets through client-go typed
// clients and server-side apply (field manager "countersign-control",
// Force=true, so the control plane takes the fields it sets, such as
// spec.replicas after a "kubectl apply").
//
// # Mapping
//
//   - A pool is the Deployment "countersign-node-<pool>" in
//     Config.Namespace (Config.DeploymentName overrides the name). The
//     manifests create pool Deployments; this package never creates one
//     (its Role has no "create" on deployments), so deploying into a
//     missing pool fails with fleet.ErrNotFound.
//   - A release is a pod template: container "node" runs the image
//     Release.Artifact, which must be pinned by digest
//     (repo@sha256:<hex>, the hex equal to Release.SHA256, else
//     *fleet.ChecksumError and nothing is applied), with Release.Args
//     rendered as text/template (.Listen "0.0.0.0:7300", .Port 7300, .Pool,
//     .Release, .Instance "$(POD_NAME)" from the downward API, .DataDir,
//     .FlagsFile) and Release.Env after the COUNTERSIGN_* variables
//     fleet/local also sets. Release.FlagsFile, a file on the control
//     machine, becomes the immutable ConfigMap
//     "countersign-flags-<release id>" mounted read-only into the pod.
//     Template annotations (countersign.dev/release, schema-min,
//     schema-max, artifact-sha256, flags-configmap, flags-sha256,
//     release-spec, revision, rollback-of) let every ReplicaSet say which
//     release it runs.
//   - A revision is a ReplicaSet of the pool's Deployment, numbered by
//     deployment.kubernetes.io/revision. Its status is derived: the newest
//     is current once its rollout is complete (deploying before), an
//     earlier one is superseded, and one annotated countersign.dev/failed
//     is failed. MarkGood sets countersign.dev/known-good (RFC 3339 time)
//     on the ReplicaSet.
//
// # History only grows
//
// Every Deploy and Rollback stamps the template with
// countersign.dev/revision (the next revision number), so each one creates
// a new ReplicaSet. A rollback copies revision n's pod template and adds
// countersign.dev/rollback-of=n; unlike "kubectl rollout undo", which
// re-activates revision n's ReplicaSet and renumbers it (revision n
// disappears from history), revision n stays where it was and the rollback
// is a new revision. When a Deploy's rollout is not complete within
// Config.ReadyTimeout, its ReplicaSet is annotated countersign.dev/failed and
// the previous template is restored the same way, as a new revision, so the
// previous release keeps (or goes back to) serving.
//
// Server-side apply never removes fields another manager owns: a field added
// to the template by someone else after revision n stays on a rollback to n.
// The plan (fleet.Planner, computed from a server-side dry run) shows it.
//
// # Operations
//
//   - Deploy and Rollback wait as "kubectl rollout status" does: the
//     controller observed the new generation, every desired replica is
//     updated and available, and no pod of an earlier template is left,
//     terminating ones included.
//   - Scale applies spec.replicas alone (the fields this manager owns are
//     extracted and re-applied, or server-side apply would drop them) and
//     waits until exactly that many pods exist, all ready.
//   - Drain scales to 0 and waits until the pool has no pod, counted by
//     listing pods (.status.replicas is omitted at 0). A pod still present
//     KillSlack after its deletionTimestamp (deletion time plus its grace
//     period) counts as killed, the others as stopped. Callers take the
//     pool out of routing first.
//   - Status reports readyReplicas, the container restarts of the pool's
//     pods, and Config.Endpoint(pool) (the pool's Service) when a pod is
//     ready.
//   - The plans send the same apply configurations as dry runs (DryRun=All:
//     validated, admitted and authorized, never stored) and list every
//     field whose value would change, ConfigMap data as digests.
//
// # Causes
//
// Every write sets the cause of fleet.CauseFrom(ctx) as annotations
// countersign.dev/incident, run-id, step and actor, plus
// kubernetes.io/change-cause, on the objects' metadata (Deployment,
// ConfigMap). The deployment controller copies the Deployment's annotations
// onto its newest ReplicaSet, so "kubectl rollout history" shows them. It
// would also overwrite those keys on that ReplicaSet, so MarkGood records
// its cause under countersign.dev/known-good-cause and a failure under
// countersign.dev/failed-reason instead.
//
// # Permissions
//
// The package uses only the verbs of the control plane's Role:
// get/list/watch/patch on deployments and replicasets, get/list/watch on
// pods, and get/list/watch/create/patch on configmaps. Readiness, drains and
// restarts are read from pods; the rest from Deployments and ReplicaSets.
//
// Lock order: one operation per pool at a time in this process
// (Fleet.ops[pool]); concurrent writers in other processes are resolved by
// the API server (server-side apply with Force wins field conflicts).
package kube
