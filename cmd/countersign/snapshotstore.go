package main

import (
	"context"
	"log/slog"
	"strings"

	"github.com/countersign/countersign/internal/snapshot"
	"github.com/countersign/countersign/internal/snapshot/s3lock"
)

// openSnapshotStore opens the immutable store of --snapshot-store; nil for
// the default write-once directory.
func openSnapshotStore(ctx context.Context, raw string, logger *slog.Logger) (snapshot.ImmutableStore, error) {
	if raw == "" {
		return nil, nil
	}
	if !strings.HasPrefix(raw, "s3://") {
		return nil, usageError("--snapshot-store: want s3://BUCKET[/PREFIX]?... (or nothing for DIR/snapshots)")
	}
	cfg, err := s3lock.ParseURL(raw)
	if err != nil {
		return nil, err
	}
	cfg.Logger = logger
	return s3lock.New(ctx, cfg)
}
