package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"os"

	"github.com/countersign/countersign/internal/control"
)

func init() {
	register("release", "ship a release into a pool of the running world: release deploy --release v2 --canary 10", runRelease)
}

// dialControl returns a client of the world `countersign up` runs in data,
// acting as --as (default $USER).
func dialControl(env *cliEnv, data, as string) (*control.Client, error) {
	if as == "" {
		as = env.getenv("USER")
	}
	if as == "" {
		as = "operator"
	}
	return control.Dial(data, as)
}

// parseInterspersed parses flags that may come before or after positional
// arguments and returns the positional ones.
func parseInterspersed(fs *flag.FlagSet, args []string) ([]string, error) {
	var pos []string
	for {
		if err := fs.Parse(args); err != nil {
			return nil, err
		}
		if fs.NArg() == 0 {
			return pos, nil
		}
		pos = append(pos, fs.Arg(0))
		args = fs.Args()[1:]
	}
}

func printJSON(env *cliEnv, v any) error {
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return err
	}
	_, err = fmt.Fprintln(env.stdout, string(b))
	return err
}

func runRelease(ctx context.Context, env *cliEnv, args []string) error {
	if len(args) == 0 || args[0] != "deploy" {
		return usageError("usage: countersign release deploy --data DIR --release ID [--canary PERCENT] [flags]")
	}
	fs := newFlagSet(env, "release deploy", "--data DIR --release ID [--canary PERCENT] [flags]")
	data := fs.String("data", "./world", "data directory of the running world")
	id := fs.String("release", "", "release id to ship (required)")
	pool := fs.String("pool", control.PoolCanary, "pool to ship into: canary (weight --canary, the stable pool keeps the rest) or stable")
	canary := fs.Int("canary", 10, "traffic share of the canary pool after the deploy, percent")
	fault := fs.String("fault", "", "drill fault scenario the release injects (worlds started with 'up --drill' only): invalid-signatures | metadata-drift | hsm-timeouts | partial-persist | irreversible-migration")
	faultRate := fs.Float64("fault-rate", 1, "share of the release's requests the fault hits")
	schemaMin := fs.Int("schema-min", 0, "override the lowest store schema the release declares it runs against")
	schemaMax := fs.Int("schema-max", 0, "override the highest store schema the release declares it runs against")
	flagsFile := fs.String("flags", "", "flagd-format flag file of the release (stored as DATA/releases/<id>.flagd.json; default: a copy of DATA/flags.flagd.json)")
	replicas := fs.Int("replicas", 0, "node processes (default: the world's)")
	as := fs.String("as", "", "who deploys (audit actor; default $USER)")
	asJSON := fs.Bool("json", false, "print the new fleet revision as JSON")
	if err := fs.Parse(args[1:]); err != nil {
		return err
	}
	if *id == "" {
		return usageError("--release is required")
	}
	if *canary < 0 || *canary > 100 {
		return usageError("--canary must be 0..100")
	}
	var flagsData []byte
	if *flagsFile != "" {
		b, err := os.ReadFile(*flagsFile)
		if err != nil {
			return usageError("--flags: %v", err)
		}
		if !json.Valid(b) {
			return usageError("--flags: %s is not JSON", *flagsFile)
		}
		flagsData = b
	}
	c, err := dialControl(env, *data, *as)
	if err != nil {
		return err
	}
	spec := control.ReleaseSpec{ID: *id, Pool: *pool, Fault: *fault, FaultRate: *faultRate, SchemaMin: *schemaMin,
		SchemaMax: *schemaMax, Replicas: *replicas, Flags: flagsData}
	if *pool == control.PoolCanary {
		spec.Weight = *canary
	}
	rev, err := c.Deploy(ctx, spec)
	if err != nil {
		return err
	}
	if *asJSON {
		return printJSON(env, rev)
	}
	fmt.Fprintf(env.stdout, "deployed %s to pool %s as revision %d (schema %d..%d)\n", rev.Release.ID, rev.Pool, rev.Number,
		rev.Release.SchemaMin, rev.Release.SchemaMax)
	if *pool == control.PoolCanary {
		fmt.Fprintf(env.stdout, "weights: %s %d%%, %s %d%%\n", control.PoolStable, 100-*canary, control.PoolCanary, *canary)
	}
	fmt.Fprintf(env.stdout, "flags: %s\n", control.ReleaseFlagsPath(*data, rev.Release.ID))
	if *fault != "" {
		fmt.Fprintf(env.stdout, "DRILL fault %q at rate %g\n", *fault, *faultRate)
	}
	return nil
}
