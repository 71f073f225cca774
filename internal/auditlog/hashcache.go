package auditlog

import (
	"context"
	"fmt"
	"sync"

	"golang.org/x/mod/sumdb/tlog"
)

// Defaults for the upper-hash cache behind the proof endpoints.
const (
	// cacheMinLevel is the lowest tree level whose hashes are cached: level
	// 8 and up is 1/256 of the stored hashes (the hashes of tiles of level
	// 1 and up), but two thirds of an inclusion proof's reads at 1,000,000
	// entries, and the B-tree pages they sit on are scattered; the rest of
	// a proof lies within the leaf's own tile, a few adjacent rows.
	cacheMinLevel = TileHeight
	// cacheMaxHashes bounds the cache (about 5 MB): enough for every
	// upper hash of a 30,000,000-entry log. When full it is emptied and
	// refilled by use.
	cacheMaxHashes = 1 << 17
)

// hashCache is a Reader that keeps the stored hashes at levels >=
// cacheMinLevel in memory. A stored hash never changes once written (the
// tree only grows, and the store ignores rewrites of an index), so a cached
// hash stays right for as long as the store is the one the node started on
// (CheckFork). Were the database swapped under a running node, a cached
// hash could make a proof fail verification against the signed checkpoint;
// it cannot make a wrong proof verify. Safe for concurrent use.
type hashCache struct {
	Reader
	max    int // cacheMaxHashes
	mu     sync.RWMutex
	hashes map[int64][32]byte
}

func newHashCache(r Reader) *hashCache {
	return &hashCache{Reader: r, max: cacheMaxHashes, hashes: map[int64][32]byte{}}
}

// TreeHashes serves cached upper hashes from memory and reads the rest
// (and upper hashes not yet cached) from the store in one call.
func (c *hashCache) TreeHashes(ctx context.Context, idx []int64) ([][32]byte, error) {
	out := make([][32]byte, len(idx))
	var miss []int64
	var missAt []int
	c.mu.RLock()
	for i, x := range idx {
		if h, ok := c.hashes[x]; ok {
			out[i] = h
			continue
		}
		miss = append(miss, x)
		missAt = append(missAt, i)
	}
	c.mu.RUnlock()
	if len(miss) == 0 {
		return out, nil
	}
	hs, err := c.Reader.TreeHashes(ctx, miss)
	if err != nil {
		return nil, err
	}
	if len(hs) != len(miss) {
		return nil, fmt.Errorf("auditlog: store returned %d tree hashes for %d indexes", len(hs), len(miss))
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	for j, h := range hs {
		out[missAt[j]] = h
		if level, _ := tlog.SplitStoredHashIndex(miss[j]); level >= cacheMinLevel {
			if len(c.hashes) >= c.max {
				clear(c.hashes)
			}
			c.hashes[miss[j]] = h
		}
	}
	return out, nil
}
