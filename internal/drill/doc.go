// Package drill runs a whole incident on the embedded default and grades
// the response: it builds a world in a directory, applies steady client
// load through the gateway with the public SDK, ships a regressive release
// carrying a named fault scenario (honoured only in drill mode), lets the
// detector and the rollback playbook act with no human input (the drill
// approval policy auto-grants gates and says so in the journal), and
// measures what an auditor would ask: time to detect, contain and restore,
// requests lost and duplicated (both must be 0), audit-log consistency
// across the incident, what reconciliation found (the scenario's fault must
// show), every notice delivered (file channel and a loopback webhook whose
// HMAC the drill checks), the evidence bundle verified offline, and which
// playbook steps ran, failed or are not available in this build.
package drill
