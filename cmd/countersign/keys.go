package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/user"
	"sort"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/countersign/countersign/internal/install"
	"github.com/countersign/countersign/internal/keys"
	"github.com/countersign/countersign/internal/keys/soft"
	"github.com/countersign/countersign/internal/store"
)

func init() {
	register("keys", "manage signing keys: create, list, rotate, disable, enable, destroy, import, freeze, unfreeze, status", runKeys)
}

const keysUsage = `<subcommand> --data DIR [flags]

subcommands:
  create    --tenant T --name N --alg ALG [--provider soft|pkcs11]
  list      --tenant T [--name N]
  rotate    --tenant T --name N [--alg ALG] [--provider soft|pkcs11]
  disable   --tenant T --name N --version V
  enable    --tenant T --name N --version V
  destroy   --tenant T --name N --version V --yes   (deletes the key material)
  import    --tenant T --name N --alg ALG --uri URI --chain chain.pem
  cert      --tenant T --name N [--version V]   (print the PEM certificate chain, for offline verify)
  freeze    --reason R   (stop every key change: an incident is open)
  unfreeze  --reason R
  status    (are key operations frozen?)

Every change is an audit event with actor "cli:<user>". While keys are frozen
a change needs --compromise INCIDENT (a declared key compromise).`

func runKeys(ctx context.Context, env *cliEnv, args []string) error {
	if len(args) == 0 || args[0] == "-h" || args[0] == "--help" || args[0] == "help" {
		fmt.Fprintf(env.stderr, "usage: countersign keys %s\n", keysUsage)
		if len(args) == 0 {
			return usageError("keys: missing subcommand")
		}
		return nil
	}
	sub, rest := args[0], args[1:]
	switch sub {
	case "create", "list", "rotate", "disable", "enable", "destroy", "import", "freeze", "unfreeze", "status", "cert":
	default:
		return usageError("keys: unknown subcommand %q\nusage: countersign keys %s", sub, keysUsage)
	}
	kc := &keysCmd{env: env, sub: sub}
	fs := newFlagSet(env, "keys "+sub, "--data DIR [flags]")
	fs.StringVar(&kc.data, "data", "./data", "data directory made by 'countersign init'")
	fs.StringVar(&kc.passFile, "passphrase-file", "", "file holding the soft-key passphrase (default: $COUNTERSIGN_KEY_PASSPHRASE, or the dev passphrase file)")
	fs.StringVar(&kc.compromise, "compromise", "", "declare a key compromise under this incident id: allows the change while keys are frozen")
	switch sub {
	case "create", "rotate", "disable", "enable", "destroy", "import", "list", "cert":
		fs.StringVar(&kc.tenant, "tenant", "", "tenant id")
		fs.StringVar(&kc.name, "name", "", "key name")
	}
	switch sub {
	case "create", "rotate", "import":
		fs.StringVar(&kc.alg, "alg", "", "algorithm: "+algorithmNames())
	}
	switch sub {
	case "create", "rotate":
		fs.StringVar(&kc.provider, "provider", "", "key provider: soft | pkcs11 (create: default soft; rotate: default the latest version's)")
	case "disable", "enable", "destroy":
		fs.IntVar(&kc.version, "version", 0, "key version")
	case "cert":
		fs.IntVar(&kc.version, "version", 0, "key version (default: the newest)")
	case "import":
		fs.StringVar(&kc.uri, "uri", "", "provider URI of the existing key (e.g. pkcs11:token=...;id=...)")
		fs.StringVar(&kc.chain, "chain", "", "PEM certificate chain of the key, leaf first")
	case "freeze", "unfreeze":
		fs.StringVar(&kc.reason, "reason", "", "why (recorded in the audit event)")
	}
	if sub == "destroy" {
		fs.BoolVar(&kc.yes, "yes", false, "confirm: destroying deletes the key material for good (old signatures still verify)")
	}
	if err := fs.Parse(rest); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return err
		}
		return &exitError{code: 2, err: err}
	}
	if fs.NArg() > 0 {
		return usageError("keys %s: unexpected arguments %q", sub, fs.Args())
	}
	if err := kc.check(); err != nil {
		return err
	}
	return kc.run(ctx)
}

// keysCmd is one parsed `countersign keys` invocation.
type keysCmd struct {
	env                         *cliEnv
	sub                         string
	data, passFile, compromise  string
	tenant, name, alg, provider string
	uri, chain, reason          string
	version                     int
	yes                         bool
}

// check validates the flags a subcommand needs (exit status 2 when missing).
func (kc *keysCmd) check() error {
	need := func(ok bool, flag string) error {
		if !ok {
			return usageError("keys %s: %s is required", kc.sub, flag)
		}
		return nil
	}
	var errs []error
	switch kc.sub {
	case "create", "rotate", "disable", "enable", "destroy", "import", "cert":
		errs = append(errs, need(kc.tenant != "", "--tenant"), need(kc.name != "", "--name"))
	case "list":
		errs = append(errs, need(kc.tenant != "", "--tenant"))
	case "freeze", "unfreeze":
		errs = append(errs, need(kc.reason != "", "--reason"))
	}
	switch kc.sub {
	case "create", "import":
		errs = append(errs, need(kc.alg != "", "--alg"))
	case "disable", "enable", "destroy":
		errs = append(errs, need(kc.version > 0, "--version (1 or more)"))
	}
	if kc.sub == "import" {
		errs = append(errs, need(kc.uri != "", "--uri"), need(kc.chain != "", "--chain"))
	}
	if kc.sub == "destroy" && !kc.yes {
		errs = append(errs, usageError("keys destroy deletes the key material of %s v%d for good; add --yes to confirm", kc.name, kc.version))
	}
	for _, err := range errs {
		if err != nil {
			return err
		}
	}
	if kc.alg != "" {
		if _, err := keys.ParseAlgorithm(kc.alg); err != nil {
			return usageError("--alg: %v", err)
		}
	}
	switch kc.provider {
	case "", soft.Scheme, "pkcs11":
	default:
		return usageError("--provider must be soft or pkcs11, not %q", kc.provider)
	}
	return nil
}

func (kc *keysCmd) run(ctx context.Context) error {
	o := install.OpenOptions{Release: envOr(kc.env, "COUNTERSIGN_RELEASE", ""), Instance: "cli",
		Logger: slog.New(slog.NewTextHandler(kc.env.stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))}
	switch {
	case kc.passFile != "":
		p, err := soft.PassphraseFromFile(kc.passFile)
		if err != nil {
			return err
		}
		o.Passphrase = p
	case kc.env.getenv(install.PassphraseEnv) != "":
		o.Passphrase = soft.NewPassphrase([]byte(kc.env.getenv(install.PassphraseEnv)))
	}
	inst, err := install.Open(ctx, kc.data, o)
	if err != nil {
		return err
	}
	defer inst.Close()
	if kc.compromise != "" {
		ctx = keys.WithCompromise(ctx, kc.compromise)
	}
	err = kc.do(ctx, inst)
	if errors.Is(err, keys.ErrFrozen) {
		return fmt.Errorf("%w\nkey operations are frozen because an incident is open. Either lift the freeze:\n"+
			"  countersign keys unfreeze --data %s --reason \"...\"\n"+
			"or, if a key is compromised, declare it and proceed under the incident:\n"+
			"  countersign keys %s ... --compromise INCIDENT", err, shellQuote(kc.data), kc.sub)
	}
	return err
}

func (kc *keysCmd) do(ctx context.Context, inst *install.Installation) error {
	w := kc.env.stdout
	actor := cliActor()
	m := inst.Keys
	switch kc.sub {
	case "create":
		scheme := kc.provider
		if scheme == "" {
			scheme = soft.Scheme
		}
		kv, err := m.Create(ctx, kc.tenant, kc.name, keys.Algorithm(kc.alg), scheme, actor)
		if err != nil {
			return err
		}
		return printKeyVersion(w, "created", kv)
	case "rotate":
		kv, err := m.RotateTo(ctx, kc.tenant, kc.name, keys.Algorithm(kc.alg), kc.provider, actor)
		if err != nil {
			return err
		}
		return printKeyVersion(w, "rotated", kv)
	case "disable", "enable", "destroy":
		state := map[string]string{"disable": store.KeyDisabled, "enable": store.KeyEnabled, "destroy": store.KeyDestroyed}[kc.sub]
		kv, err := m.SetState(ctx, kc.tenant, kc.name, kc.version, state, actor)
		if err != nil {
			return err
		}
		return printKeyVersion(w, kv.State, kv)
	case "import":
		chain, err := os.ReadFile(kc.chain)
		if err != nil {
			return err
		}
		kv, err := m.Import(ctx, kc.tenant, kc.name, keys.Algorithm(kc.alg), kc.uri, string(chain), actor)
		if err != nil {
			return err
		}
		return printKeyVersion(w, "imported", kv)
	case "freeze":
		if err := m.Freeze(ctx, actor, kc.reason); err != nil {
			return err
		}
		fmt.Fprintf(w, "key operations frozen by %s: %s\n", actor, kc.reason)
		return nil
	case "unfreeze":
		if err := m.Unfreeze(ctx, actor, kc.reason); err != nil {
			return err
		}
		fmt.Fprintf(w, "key operations unfrozen by %s: %s\n", actor, kc.reason)
		return nil
	case "status":
		frozen, err := m.Frozen(ctx)
		if err != nil {
			return err
		}
		if frozen {
			fmt.Fprintln(w, "key operations: FROZEN (an incident is open; `countersign keys unfreeze` lifts it)")
		} else {
			fmt.Fprintln(w, "key operations: not frozen")
		}
		return nil
	case "list":
		return kc.list(ctx, inst)
	case "cert":
		return kc.cert(ctx, inst)
	}
	return usageError("keys: unknown subcommand %q", kc.sub)
}

func (kc *keysCmd) list(ctx context.Context, inst *install.Installation) error {
	var kvs []store.KeyVersion
	var err error
	if kc.name != "" {
		kvs, err = inst.Store.KeyVersions(ctx, kc.tenant, kc.name)
	} else {
		kvs, err = inst.Store.ListKeys(ctx, kc.tenant)
	}
	if err != nil && !errors.Is(err, store.ErrNotFound) {
		return err
	}
	if len(kvs) == 0 {
		if kc.name != "" {
			return fmt.Errorf("tenant %q has no key %q", kc.tenant, kc.name)
		}
		fmt.Fprintf(kc.env.stderr, "tenant %q has no keys\n", kc.tenant)
		return nil
	}
	sort.Slice(kvs, func(i, j int) bool {
		if kvs[i].Name != kvs[j].Name {
			return kvs[i].Name < kvs[j].Name
		}
		return kvs[i].Version < kvs[j].Version
	})
	tw := tabwriter.NewWriter(kc.env.stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "NAME\tVERSION\tALGORITHM\tSTATE\tPROVIDER\tCREATED")
	for _, kv := range kvs {
		scheme, _ := keys.Scheme(kv.ProviderURI)
		fmt.Fprintf(tw, "%s\t%d\t%s\t%s\t%s\t%s\n", kv.Name, kv.Version, kv.Algorithm, kv.State, scheme, kv.CreatedAt.UTC().Format(time.RFC3339))
	}
	return tw.Flush()
}

// cert prints a version's certificate chain (public material only).
func (kc *keysCmd) cert(ctx context.Context, inst *install.Installation) error {
	vs, err := inst.Store.KeyVersions(ctx, kc.tenant, kc.name)
	if errors.Is(err, store.ErrNotFound) {
		return fmt.Errorf("tenant %q has no key %q", kc.tenant, kc.name)
	}
	if err != nil {
		return err
	}
	kv := vs[len(vs)-1]
	if kc.version > 0 {
		if kv, err = inst.Keys.Version(ctx, kc.tenant, kc.name, kc.version); err != nil {
			return err
		}
	}
	if kv.CertChainPEM == "" {
		return fmt.Errorf("%s has no certificate chain; its public key is:\n%s", keys.Subject(kc.tenant, kc.name, kv.Version), kv.PublicKeyPEM)
	}
	_, err = io.WriteString(kc.env.stdout, kv.CertChainPEM)
	return err
}

func printKeyVersion(w io.Writer, what string, kv store.KeyVersion) error {
	scheme, _ := keys.Scheme(kv.ProviderURI)
	_, err := fmt.Fprintf(w, "%s: tenant %s key %s v%d (%s, %s provider, %s)\n", what, kv.TenantID, kv.Name, kv.Version, kv.Algorithm, scheme, kv.State)
	return err
}

// cliActor names the operator in audit events: "cli:<login name>".
func cliActor() string {
	if u, err := user.Current(); err == nil && u.Username != "" {
		return "cli:" + u.Username
	}
	if n := os.Getenv("USER"); n != "" {
		return "cli:" + n
	}
	return fmt.Sprintf("cli:uid-%d", os.Getuid())
}

func algorithmNames() string {
	names := make([]string, len(keys.Algorithms))
	for i, a := range keys.Algorithms {
		names[i] = string(a)
	}
	return strings.Join(names, " | ")
}
