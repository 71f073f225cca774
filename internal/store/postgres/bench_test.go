package postgres

import (
	"log/slog"
	"testing"

	"github.com/countersign/countersign/internal/store"
	"github.com/countersign/countersign/internal/store/storetest"
)

func benchOpen(b *testing.B) store.Store {
	return openTest(b, store.Options{Migrate: true, Logger: slog.New(slog.DiscardHandler)})
}

func BenchmarkCommitSignatures(b *testing.B) { storetest.BenchmarkCommitSignatures(b, benchOpen) }

func BenchmarkCommitter(b *testing.B) { storetest.BenchmarkCommitter(b, benchOpen) }

func BenchmarkAppendEvents(b *testing.B) { storetest.BenchmarkAppendEvents(b, benchOpen) }

func BenchmarkPutTreeHashes(b *testing.B) { storetest.BenchmarkPutTreeHashes(b, benchOpen) }
