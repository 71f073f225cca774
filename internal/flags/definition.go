package flags

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
	"sync"

	schemas "github.com/open-feature/flagd-schemas/json"
	"github.com/open-feature/flagd/core/pkg/evaluator"
	flagdlog "github.com/open-feature/flagd/core/pkg/logger"
	flagdstore "github.com/open-feature/flagd/core/pkg/store"
	flagdsync "github.com/open-feature/flagd/core/pkg/sync"
	"github.com/santhosh-tekuri/jsonschema/v6"
	"go.uber.org/zap"
)

// ErrInvalid marks a flag file that cannot be used: not JSON, not conforming
// to the flagd schema, or naming a default variant it does not define.
var ErrInvalid = errors.New("flags: invalid flag file")

// source is the only flagd source a definition is loaded from.
const source = "file"

// definition is one loaded flag file: its exact bytes and the evaluator built
// from them. It is immutable once built; a reload builds a new one.
type definition struct {
	raw   []byte
	sum   [sha256.Size]byte
	eval  *evaluator.JSON
	flags map[string]json.RawMessage // compacted per-flag JSON, for change detection
	evals json.RawMessage            // compacted $evaluators, for change detection
}

// flagsSchema is the flagd flag-file schema, compiled once.
var flagsSchema = sync.OnceValues(func() (*jsonschema.Schema, error) {
	c := jsonschema.NewCompiler()
	for url, doc := range map[string]string{
		"https://flagd.dev/schema/v0/flags.json":     schemas.FlagSchema,
		"https://flagd.dev/schema/v0/targeting.json": schemas.TargetingSchema,
	} {
		v, err := jsonschema.UnmarshalJSON(strings.NewReader(doc))
		if err != nil {
			return nil, fmt.Errorf("flags: parse schema %s: %w", url, err)
		}
		if err := c.AddResource(url, v); err != nil {
			return nil, fmt.Errorf("flags: add schema %s: %w", url, err)
		}
	}
	return c.Compile("https://flagd.dev/schema/v0/flags.json")
})

// compile validates raw and builds an evaluator for it. The flagd evaluator
// only warns about schema violations; compile refuses them.
func compile(raw []byte) (*definition, error) {
	sch, err := flagsSchema()
	if err != nil {
		return nil, err
	}
	doc, err := jsonschema.UnmarshalJSON(bytes.NewReader(raw))
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrInvalid, err)
	}
	if err := sch.Validate(doc); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrInvalid, err)
	}
	var top struct {
		Flags      map[string]json.RawMessage `json:"flags"`
		Evaluators json.RawMessage            `json:"$evaluators"`
	}
	if err := json.Unmarshal(raw, &top); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrInvalid, err)
	}
	d := &definition{raw: bytes.Clone(raw), sum: sha256.Sum256(raw), flags: make(map[string]json.RawMessage, len(top.Flags))}
	for name, f := range top.Flags {
		d.flags[name] = compact(f)
	}
	d.evals = compact(top.Evaluators)

	// The evaluator logs through zap; evaluation outcomes are reported to
	// callers instead, so its logger is silenced.
	log := flagdlog.NewLogger(zap.NewNop(), false)
	st, err := flagdstore.NewStore(log, []string{source})
	if err != nil {
		return nil, fmt.Errorf("flags: flagd store: %w", err)
	}
	ev := evaluator.NewJSON(log, st)
	if err := ev.SetState(flagdsync.DataSync{FlagData: string(raw), Source: source}); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrInvalid, err)
	}
	d.eval = ev
	return d, nil
}

func compact(m json.RawMessage) json.RawMessage {
	if len(m) == 0 {
		return nil
	}
	var b bytes.Buffer
	if err := json.Compact(&b, m); err != nil {
		return m
	}
	return b.Bytes()
}

// SHA256 returns the hex SHA-256 of the definition's bytes.
func (d *definition) SHA256() string { return hex.EncodeToString(d.sum[:]) }

// changed lists, sorted, the flags whose definition differs between old and
// d. A change to $evaluators may alter any flag that refers to it, so it
// counts as a change to every flag.
func (d *definition) changed(old *definition) []string {
	if old == nil || !bytes.Equal(old.evals, d.evals) {
		names := slices.Collect(maps.Keys(d.flags))
		if old != nil {
			for n := range old.flags {
				if _, ok := d.flags[n]; !ok {
					names = append(names, n)
				}
			}
		}
		slices.Sort(names)
		return names
	}
	var names []string
	for n, f := range d.flags {
		if o, ok := old.flags[n]; !ok || !bytes.Equal(o, f) {
			names = append(names, n)
		}
	}
	for n := range old.flags {
		if _, ok := d.flags[n]; !ok {
			names = append(names, n)
		}
	}
	slices.Sort(names)
	return names
}
