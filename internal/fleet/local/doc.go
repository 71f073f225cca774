// Package local is the embedded fleet: it runs each replica of a release as
// a child process of this one, on its own loopback port, and keeps the
// pool's revision history in a JSON file under the state directory.
//
// Invariants:
//   - What runs is what was verified: an artifact is copied into the state
//     directory's content-addressed store (artifacts/<sha256>/) while its
//     SHA-256 is checked, and replicas execute only that copy. A rollback
//     therefore still runs the old binary after the original path was
//     overwritten by a newer build.
//   - No replica outlives the supervisor: each runs in its own process group
//     with a parent-death signal (Linux); Close kills every group.
//   - A stop is graceful first: SIGTERM lets the node finish its in-flight
//     requests; SIGKILL follows only after Config.StopTimeout, and a drain
//     reports how many replicas had to be killed.
//
// Lock order: Fleet.ops[pool] (one operation per pool at a time), then
// Fleet.mu, then replica.mu.
package local
