// Package notify writes and delivers the incident communications of the
// rollback playbook: the four notice phases (A internal, B customers,
// C regulators and partners, D remediation reports), their delivery to
// webhook, Slack-compatible, SMTP, PagerDuty Events v2 and file channels,
// "next update at" reminders, and the postmortem draft written at close.
//
// The data the templates render is the plain Input model (model.go): the
// control plane fills it from its incident, the playbook status and the
// reconciliation report; `countersign notify preview` reads it as JSON.
//
// Invariants:
//   - A tenant-scoped notice (phases B and D) is rendered from a view that
//     holds only that tenant's data, and is refused if its text names any
//     other tenant (CrossTenantError).
//   - A notice's Digest covers everything a recipient reads; an approval
//     is bound to a digest, so changed text needs a new sign-off.
//   - Delivery is idempotent: a delivery's ID is
//     sha256(incident, phase, tenant, channel, revision), so a retried send
//     of the same notice carries the same ID to webhook receivers and is
//     written at most once by the file channel.
//   - Every delivery attempt that ends (delivered or failed) is reported to
//     the Recorder as a notice.sent or notice.failed audit event carrying
//     the digest, the channel and the result.
package notify
