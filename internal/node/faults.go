package node

import (
	"bytes"
	"context"
	"crypto"
	"encoding/base64"
	"errors"
	"fmt"
	"math/rand/v2"
	"sync"
	"time"

	"github.com/countersign/countersign/internal/api"
	"github.com/countersign/countersign/internal/sign"
	"github.com/countersign/countersign/internal/store"
)

// Drill fault scenarios. A node honours them only when started in drill mode
// (the CLI refuses --fault without --drill), and says so in every log line.
const (
	FaultInvalidSignatures = "invalid-signatures" // artifacts corrupted after signing
	FaultMetadataDrift     = "metadata-drift"     // valid signatures over an unexpected digest algorithm
	FaultHSMTimeouts       = "hsm-timeouts"       // the key provider stalls, then fails
	FaultPartialPersist    = "partial-persist"    // signed, then the commit fails
	// FaultIrreversibleMigration is a release that applies an expand
	// migration (schema SchemaVersion+1) when it starts and then corrupts
	// signatures: rolling back to a release that cannot read the new schema
	// must be refused. The migration is applied by the node command; at
	// run time it behaves as invalid-signatures.
	FaultIrreversibleMigration = "irreversible-migration"
)

// DrillMigration is the expand-only migration an irreversible-migration
// release applies: one new table, nothing dropped.
func DrillMigration() store.Migration {
	return store.Migration{Version: store.SchemaVersion + 1, Name: "drill_irreversible_expand",
		SQL: "CREATE TABLE drill_release_v2_expansion (id INTEGER PRIMARY KEY, note TEXT NOT NULL)"}
}

// FaultScenarios lists the scenarios a node can inject.
var FaultScenarios = []string{FaultInvalidSignatures, FaultMetadataDrift, FaultHSMTimeouts, FaultPartialPersist}

// errInjected marks failures a drill fault caused.
var errInjected = errors.New("drill fault injected")

// Faults injects one drill scenario into the sign path.
type Faults struct {
	Scenario string
	// Rate is the fraction of requests affected, in (0, 1].
	Rate float64
	// Stall is how long an hsm-timeouts fault blocks before failing.
	Stall time.Duration

	mu  sync.Mutex
	rng *rand.Rand // f.mu must be held
}

// NewFaults validates a scenario. seed makes the affected requests
// reproducible in tests.
func NewFaults(scenario string, rate float64, seed uint64) (*Faults, error) {
	known := false
	for _, s := range FaultScenarios {
		known = known || s == scenario
	}
	if scenario == FaultIrreversibleMigration {
		known, scenario = true, FaultInvalidSignatures
	}
	if !known {
		return nil, fmt.Errorf("node: unknown fault scenario %q (known: %v, %s)", scenario, FaultScenarios, FaultIrreversibleMigration)
	}
	if rate <= 0 || rate > 1 {
		return nil, fmt.Errorf("node: fault rate %v outside (0, 1]", rate)
	}
	return &Faults{Scenario: scenario, Rate: rate, Stall: 200 * time.Millisecond, rng: rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))}, nil
}

func (f *Faults) hit(scenario string) bool {
	if f.Scenario != scenario {
		return false
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.rng.Float64() < f.Rate
}

func (f *Faults) beforeSign(ctx context.Context, format api.Format, k sign.Key, in sign.Input) (sign.Key, sign.Input, error) {
	switch {
	case f.hit(FaultHSMTimeouts):
		t := time.NewTimer(f.Stall)
		defer t.Stop()
		select {
		case <-t.C:
		case <-ctx.Done():
		}
		return k, in, fmt.Errorf("%w: key provider timed out after %v", errInjected, f.Stall)
	case in.Document != nil && format != api.FormatJWS && f.hit(FaultMetadataDrift):
		// A "harmless refactor" that picks the wrong digest: the signature
		// verifies, but not with the hash policy expects. (JWS fixes the
		// digest by its algorithm, so the refactor cannot reach it.)
		in.Hash = crypto.SHA512
		if k.Algorithm.Hash() == crypto.SHA512 {
			in.Hash = crypto.SHA256
		}
	}
	return k, in, nil
}

func (f *Faults) afterSign(format api.Format, res sign.Result) sign.Result {
	if !f.hit(FaultInvalidSignatures) || len(res.Artifact) == 0 {
		return res
	}
	a := append([]byte(nil), res.Artifact...)
	if format == api.FormatJWS {
		// Corrupt the signature segment but keep the JWS well-formed.
		if i := bytes.LastIndexByte(a, '.'); i >= 0 {
			if sig, err := base64.RawURLEncoding.DecodeString(string(a[i+1:])); err == nil && len(sig) > 0 {
				sig[len(sig)/2] ^= 0x01
				a = append(a[:i+1], base64.RawURLEncoding.EncodeToString(sig)...)
			}
		}
	} else {
		// The last bytes of a CMS SignedData (no unsigned attributes) and of
		// a raw signature are the signature value itself.
		a[len(a)-1] ^= 0x01
	}
	res.Artifact = a
	return res
}

func (f *Faults) beforeCommit() error {
	if f.hit(FaultPartialPersist) {
		return fmt.Errorf("%w: persisting the signature failed after signing", errInjected)
	}
	return nil
}
