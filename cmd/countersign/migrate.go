package main

import (
	"context"
	"fmt"

	"github.com/countersign/countersign/internal/install"
	"github.com/countersign/countersign/internal/store"
)

func init() {
	register("migrate", "apply pending store migrations (expand only; never downgrades)", runMigrate)
}

func runMigrate(ctx context.Context, env *cliEnv, args []string) error {
	fs := newFlagSet(env, "migrate", "--data DIR [--store URL]")
	data := fs.String("data", "./data", "data directory made by 'countersign init'")
	storeURL := fs.String("store", "", "override the data directory's store URL")
	if err := fs.Parse(args); err != nil {
		return err
	}
	st, err := install.OpenStore(ctx, *data, install.OpenOptions{Migrate: true, StoreURL: *storeURL})
	if err != nil {
		return err
	}
	defer st.Close()
	v, err := st.SchemaVersion(ctx)
	if err != nil {
		return err
	}
	fmt.Fprintf(env.stdout, "store schema version %d (this binary knows up to %d)\n", v, store.SchemaVersion)
	return nil
}
