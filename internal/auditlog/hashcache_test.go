package auditlog

import (
	"context"
	"math/rand/v2"
	"slices"
	"testing"

	"golang.org/x/mod/sumdb/tlog"
)

// recordingTree records which stored hashes reach the tree.
type recordingTree struct {
	*memTree
	asked map[int64]int
}

func (r *recordingTree) TreeHashes(ctx context.Context, idx []int64) ([][32]byte, error) {
	for _, x := range idx {
		r.asked[x]++
	}
	return r.memTree.TreeHashes(ctx, idx)
}

// TestHashCacheProofs: proofs through the cache are the store's proofs,
// and each upper hash is read from the store once.
func TestHashCacheProofs(t *testing.T) {
	ctx := context.Background()
	r := rand.New(rand.NewPCG(31, 32))
	m := newMemTree(t, randomEntries(r, 5000), 700)
	rec := &recordingTree{memTree: m, asked: map[int64]int{}}
	c := newHashCache(rec)
	for range 500 {
		size := 1 + r.Int64N(5000)
		index, old := r.Int64N(size), r.Int64N(size+1)
		want, err := ProveInclusion(ctx, m, index, size)
		if err != nil {
			t.Fatal(err)
		}
		got, err := ProveInclusion(ctx, c, index, size)
		if err != nil || !slices.Equal(got, want) {
			t.Fatalf("inclusion %d in %d through the cache: %v, %v; want %v", index, size, got, err, want)
		}
		wantC, err := ProveConsistency(ctx, m, old, size)
		if err != nil {
			t.Fatal(err)
		}
		gotC, err := ProveConsistency(ctx, c, old, size)
		if err != nil || !slices.Equal(gotC, wantC) {
			t.Fatalf("consistency %d -> %d through the cache: %v, %v; want %v", old, size, gotC, err, wantC)
		}
	}
	var upper int
	for x, n := range rec.asked {
		if level, _ := tlog.SplitStoredHashIndex(x); level >= cacheMinLevel {
			upper++
			if n != 1 {
				t.Errorf("upper hash at storage index %d read %d times, want once", x, n)
			}
		}
	}
	if upper == 0 {
		t.Fatal("no upper hash was read: the test does not exercise the cache")
	}
	if _, err := c.TreeHashes(ctx, []int64{1 << 40}); err == nil {
		t.Error("a hash the store does not have was served")
	}
}

func TestHashCacheBounded(t *testing.T) {
	ctx := context.Background()
	m := newMemTree(t, randomEntries(rand.New(rand.NewPCG(1, 1)), 1<<12), 1<<12)
	c := newHashCache(m)
	c.max = 5
	var upper int
	for x, want := range m.hashes {
		got, err := c.TreeHashes(ctx, []int64{x, x})
		if err != nil || got[0] != want || got[1] != want {
			t.Fatalf("hash %d through the cache: %x, %v", x, got, err)
		}
		if len(c.hashes) > c.max {
			t.Fatalf("cache holds %d hashes, over %d", len(c.hashes), c.max)
		}
		if level, _ := tlog.SplitStoredHashIndex(x); level >= cacheMinLevel {
			upper++
		}
	}
	if upper <= c.max || len(c.hashes) == 0 {
		t.Fatalf("%d upper hashes, %d cached: the test does not fill the cache", upper, len(c.hashes))
	}
}
