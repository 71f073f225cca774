package main

import (
	"context"
	"fmt"
	"strings"

	"github.com/countersign/countersign/internal/install"
	"github.com/countersign/countersign/internal/keys/soft"
)

func init() {
	register("init", "create a data directory: store, internal CA, audit log key (--dev: tenant, token, key)", runInit)
}

func runInit(ctx context.Context, env *cliEnv, args []string) error {
	fs := newFlagSet(env, "init", "--data DIR [--dev] [--store URL]")
	data := fs.String("data", "./data", "data directory to create")
	dev := fs.Bool("dev", false, "development setup: tenant \"dev\" with a token in DIR/dev-token, key \"default\" (ecdsa-p256), a generated passphrase in DIR/passphrase")
	storeURL := fs.String("store", "", "store URL (default sqlite:countersign.db in the data dir; or postgres://...)")
	passFile := fs.String("passphrase-file", "", "file holding the soft-key passphrase (default: $COUNTERSIGN_KEY_PASSPHRASE)")
	p11Module := fs.String("pkcs11-module", "", "PKCS#11 library to enable the pkcs11: key provider (e.g. /usr/lib/softhsm/libsofthsm2.so)")
	p11Token := fs.String("pkcs11-token", "", "PKCS#11 token label")
	p11PIN := fs.String("pkcs11-pin-file", "", "file holding the PKCS#11 user PIN")
	if err := fs.Parse(args); err != nil {
		return err
	}
	o := install.Options{Store: *storeURL, Dev: *dev, PassphraseFile: *passFile}
	if *p11Module != "" {
		if *p11Token == "" || *p11PIN == "" {
			return usageError("--pkcs11-module needs --pkcs11-token and --pkcs11-pin-file")
		}
		o.PKCS11 = &install.PKCS11Config{Module: *p11Module, Token: *p11Token, PINFile: *p11PIN}
	}
	if s := env.getenv(install.PassphraseEnv); s != "" && *passFile == "" {
		o.Passphrase = soft.NewPassphrase([]byte(s))
	}
	made, err := install.Init(ctx, *data, o)
	if err != nil {
		return err
	}
	w := env.stdout
	fmt.Fprintf(w, "initialised %s\n", made.Dir)
	fmt.Fprintf(w, "  store            %s\n", made.Store)
	fmt.Fprintf(w, "  internal CA      %s\n", made.CACert)
	fmt.Fprintf(w, "  audit log origin %s\n", made.Origin)
	fmt.Fprintf(w, "  log verifier key %s\n", made.VerifierKey)
	if made.PassphraseFile != "" {
		fmt.Fprintf(w, "  DEV passphrase   %s (development only: production takes $%s)\n", made.PassphraseFile, install.PassphraseEnv)
	}
	if made.Tenant != "" {
		fmt.Fprintf(w, "  tenant           %s\n", made.Tenant)
		fmt.Fprintf(w, "  API token        %s\n", made.TokenFile)
		fmt.Fprintf(w, "  signing key      %s (%s)\n", made.Key, made.Algorithm)
		fmt.Fprintf(w, "next: countersign node --data %s --listen 127.0.0.1:7300\n", shellQuote(*data))
	}
	return nil
}

func shellQuote(s string) string {
	if strings.ContainsAny(s, " \t'\"$`\\") {
		return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
	}
	return s
}
