// Package probe is the control plane's detection: synthetic probes that sign
// through every pool and verify each answer independently, passive checks of
// signatures produced by real traffic, and a detector that turns findings
// into incident alerts.
//
// Invariant: a signature is judged only against material the probed node
// cannot influence. Public keys and certificate chains come from a TrustSet
// pinned at start from an out-of-band source (the key inventory in the
// store, or a trusted base URL), and the expected algorithm, digest, OIDs,
// key versions and formats come from a Policy. A node serving another key,
// or a key version nobody pinned, is drift; nothing the node says is ever
// absorbed into the trust set. Re-pinning after a legitimate rotation is an
// explicit Prober.SetTrustSet.
//
// # Probing
//
// Every Interval (250 ms by default) the Prober asks Targets for the pools
// (so it follows deploys and rollbacks) and, for every endpoint × probed key
// × allowed format, signs a fresh random document with a unique
// Idempotency-Key, one attempt, no retries (a retry would hide exactly the
// failure the probe exists to see). Each answer becomes a Finding:
//
//	ok           verified against the pinned key; metadata as the policy says
//	invalid      sign.ErrInvalidSignature, ErrMalformed or ErrUntrusted: the
//	             artifact is not a valid signature by the pinned key
//	drift        a genuine signature (or key) whose algorithm, digest, OIDs,
//	             key version, format, release or instance differ from the
//	             policy, the pinned trust set, the request, or the fleet
//	             (sign.AlgorithmMismatchError, an unpinned key version, the
//	             release header not the fleet's release, ...)
//	unavailable  no answer, timeout, 5xx or 429
//	error        the node answered but not with a usable signature (4xx, an
//	             undecodable body), or the check itself could not run
//
// Each (pool, endpoint, key, format) is a slot with at most one request in
// flight: a hung endpoint never piles up requests and never delays the
// probes of other pools, so a corrupt canary is seen within one interval
// even while the stable pool times out. Every KeyCheckEvery rounds each
// endpoint's GET /v1/keys/{name} is compared with the trust set.
//
// # Detection rules and why
//
//   - One invalid or drift finding raises a corruption alert at once. A
//     signature that does not verify against the pinned key, or was made
//     with other parameters, is never a transient network effect: networks
//     lose or delay answers, they do not forge valid-looking ones. Waiting
//     for a second sample would only spend the 2 s containment budget; with
//     the default interval the first bad signature is alerted on within one
//     interval (250 ms) plus one request.
//   - Availability needs persistence. An endpoint must fail in
//     ConsecutiveRounds (3) consecutive rounds — counted in rounds, not
//     requests, because one network blip fails every format of a round at
//     once — or FailureRatio (50 %) of the pool's last Window (20) results
//     must have failed. One transient 503 or one lost round never alerts;
//     a dead replica alerts after about 3 intervals (~750 ms); a pool that
//     fails every other request alerts once the window is full.
//   - Performance: the p99 of the last LatencyWindow answered probes over
//     LatencyP99 (1 s), judged once LatencyMinSamples are in, so one slow
//     answer is not an incident.
//   - Hysteresis: a pool raises at most one alert per incident, until
//     Detector.Reset (called when the incident closes); the only exception
//     is one escalation to a more severe class (performance < availability
//     < corruption), because a corruption seen during an availability
//     incident changes what the playbook must do.
//   - Passive findings (Checker.CheckSignature, CheckStored: real traffic,
//     e.g. every canary signature during a ramp) feed only the corruption
//     rule: their timing says nothing about availability.
//
// Time is injected (Config.Now, DetectorConfig.Now); latency is measured on
// the monotonic clock because it is a measurement, not a schedule.
package probe
