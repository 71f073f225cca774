// Package control is the control plane of the embedded default: it runs the
// gateway, the local fleet of node processes, the audit-log integrator, the
// probes and detector, incidents, and the playbook engine with the built-in
// rollback actions, all on loopback on one machine.
//
// It must keep working while the data plane is broken: it never signs
// through the pools it is judging except as a probe, it reads the store
// directly, and every change it makes to the world (gate, weights, deploys,
// snapshots, incidents, playbook steps) is an audit event first.
package control
