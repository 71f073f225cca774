package notify

import "time"

// ExampleInput is a complete input (every field set) for one fictional
// incident with two affected tenants. LoadTemplates renders it through
// every template, so a template that refers to a field the model lacks is
// refused at load; `countersign notify example` prints it as a starting
// point for an incident file.
func ExampleInput() Input {
	t0 := time.Date(2026, 3, 2, 9, 14, 5, 0, time.UTC)
	at := func(d time.Duration) time.Time { return t0.Add(d) }
	return Input{
		Incident: Incident{ID: "INC-1", Classification: "signature-corruption", State: "closed", Release: "v2",
			LastGoodRelease: "v1", Pool: "canary", Commander: "oncall", Summary: "Release v2 produced signatures that do not verify.",
			FirstBadAt: t0, DetectedAt: at(4 * time.Second), ContainedAt: at(5 * time.Second), RestoredAt: at(90 * time.Second),
			ClosedAt: at(26 * time.Hour), RunID: "run-1"},
		Impact: Impact{Summary: "Signatures made by v2 on the canary pool do not verify.", WindowFrom: t0, WindowTo: at(5 * time.Second),
			Tenants: []Tenant{{ID: "example-a", Name: "Example A", Documents: 2, LegallyBinding: 1, Refused: 3},
				{ID: "example-b", Name: "Example B", Documents: 1, Refused: 1}}},
		Containment: []Action{{Time: at(5 * time.Second), Action: "ingress blocked", Detail: "503 + Retry-After"}},
		Timeline: []Entry{{Time: t0, Kind: "release.first_bad", Subject: "release/v2"},
			{Time: at(4 * time.Second), Kind: "incident.opened", Subject: "incident/INC-1", Detail: "probe failure"},
			{Time: at(10 * time.Second), Kind: "remediation.planned", Subject: "document/doc-1", Tenant: "example-a"}},
		Signals: []Signal{{Time: at(3 * time.Second), Source: "probe", Kind: "invalid-signature", Detail: "verify failed", Algorithm: "ES256"}},
		Steps: []Step{{ID: "classify", State: "succeeded", StartedAt: at(4 * time.Second), FinishedAt: at(4 * time.Second)},
			{ID: "notify", State: "failed", StartedAt: at(80 * time.Second), FinishedAt: at(81 * time.Second), Error: "smtp: 554"}},
		Requests: Requests{Sent: 100, Accepted: 90, Refused: 4, Replayed: 6},
		Remediations: []Remediation{
			{Tenant: "example-a", Document: "doc-1", Signature: "sig-1", Algorithm: "ES256", Release: "v2", SignedAt: at(time.Second),
				LegallyBinding: true, Finding: "signature does not verify", Action: ReSign, Status: "planned"},
			{Tenant: "example-a", Document: "doc-2", Signature: "sig-2", Algorithm: "ES256", Release: "v2", SignedAt: at(2 * time.Second),
				Finding: "signature does not verify", Action: VoidAndReissue, Status: "planned"},
			{Tenant: "example-b", Document: "doc-3", Signature: "sig-3", Algorithm: "ES256", Release: "v2", SignedAt: at(3 * time.Second),
				Finding: "signature does not verify", Action: Attest, Status: "done"}},
		Reconciliation: Reconciliation{Verified: 87, Invalid: 3, Replayed: 6, Consistent: true,
			ProofSummary: "checkpoint 100 → 190 consistent (RFC 6962)", Report: "reconcile/INC-1.json"},
		Evidence:     Evidence{Bundle: "evidence/INC-1.bundle", Digest: "sha256:00", Checkpoint: "example.org/log\n190\n"},
		Expectations: []string{"Affected documents will be re-signed."},
	}
}
