package sqlite

import (
	"log/slog"
	"path/filepath"
	"testing"

	"github.com/countersign/countersign/internal/store"
	"github.com/countersign/countersign/internal/store/storetest"
)

func benchOpen(sync string) func(b *testing.B) store.Store {
	return func(b *testing.B) store.Store {
		s, err := Open(b.Context(), filepath.Join(b.TempDir(), "bench.db"), store.Options{Migrate: true, Synchronous: sync, Logger: slog.New(slog.DiscardHandler)})
		if err != nil {
			b.Fatal(err)
		}
		b.Cleanup(func() { s.Close() })
		return s
	}
}

func BenchmarkCommitSignatures(b *testing.B) {
	for _, sync := range []string{store.SyncFull, store.SyncNormal} {
		b.Run("sync="+sync, func(b *testing.B) { storetest.BenchmarkCommitSignatures(b, benchOpen(sync)) })
	}
}

func BenchmarkCommitter(b *testing.B) {
	for _, sync := range []string{store.SyncFull, store.SyncNormal} {
		b.Run("sync="+sync, func(b *testing.B) { storetest.BenchmarkCommitter(b, benchOpen(sync)) })
	}
}

func BenchmarkAppendEvents(b *testing.B) {
	for _, sync := range []string{store.SyncFull, store.SyncNormal} {
		b.Run("sync="+sync, func(b *testing.B) { storetest.BenchmarkAppendEvents(b, benchOpen(sync)) })
	}
}

func BenchmarkPutTreeHashes(b *testing.B) {
	storetest.BenchmarkPutTreeHashes(b, benchOpen(store.SyncFull))
}
