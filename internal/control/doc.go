// Package control is the control plane of the embedded default: it runs the
// gateway, the local fleet of node processes, the audit-log integrator, the
// probes and detector, incidents, and the playbook engine with the built-in
// rollback actions, all on loopback on one machine. Its HTTP API (api.go,
// client.go) is what `countersign release|incident|playbook` call.
//
// It must keep working while the data plane is broken: it never signs
// through the pools it is judging except as a probe, it reads the store
// directly, and every change it makes to the world (gate, weights, deploys,
// snapshots, incidents, playbook steps) is an audit event first.
//
// Invariant: a control process may die at any moment and the next one on
// the same data directory continues. Incidents, playbook journals and the
// gateway's weights and gate are in the store, each change committed with
// its audit event; on Start every run journaled as running is resumed, so
// no completed step runs twice. The steps that leave files (reconciliation
// report, notices, evidence bundle, postmortem, under
// <data>/incidents/<id>/) write them whole and reuse them on a re-run, so a
// step resumed after a crash makes no second report, notice or bundle.
package control
