package store

import (
	"errors"
	"fmt"
)

// ErrTreeShrink is returned by PutTreeHashes when the new integrated size
// is below the stored one: the Merkle log only grows.
var ErrTreeShrink = errors.New("store: integrated tree size cannot shrink")

// ErrKeyVersion is returned by PutKeyVersion when the version is not the
// next one after the key's latest (1 for a new key). A version that already
// exists is ErrExists instead.
var ErrKeyVersion = errors.New("store: key version is not the next version")

// ErrKeyState is returned for an unknown key state or a forbidden state
// change (a destroyed key version stays destroyed).
var ErrKeyState = errors.New("store: invalid key state")

// CheckKeyState validates a key state value. Backends share these rules.
func CheckKeyState(state string) error {
	switch state {
	case KeyEnabled, KeyDisabled, KeyDestroyed:
		return nil
	}
	return fmt.Errorf("%w: %q", ErrKeyState, state)
}

// CheckNextVersion enforces the next-version rule given the key's latest
// stored version (0 when the key has none).
func CheckNextVersion(name string, version, latest int) error {
	switch {
	case version >= 1 && version <= latest:
		return fmt.Errorf("store: key %s version %d: %w", name, version, ErrExists)
	case version != latest+1:
		return fmt.Errorf("%w: key %s version %d, want %d", ErrKeyVersion, name, version, latest+1)
	}
	return nil
}

// CheckKeyTransition refuses leaving the destroyed state: its private key
// is gone, and re-enabling it would point signers at nothing.
func CheckKeyTransition(name string, version int, from, to string) error {
	if from == KeyDestroyed && to != KeyDestroyed {
		return fmt.Errorf("%w: key %s version %d is destroyed and cannot become %s", ErrKeyState, name, version, to)
	}
	return nil
}

// OrderHashes returns found's hashes in the order of indexes, or an error
// wrapping ErrNotFound naming the first missing index.
func OrderHashes(indexes []int64, found map[int64][32]byte) ([][32]byte, error) {
	out := make([][32]byte, len(indexes))
	for i, x := range indexes {
		h, ok := found[x]
		if !ok {
			return nil, fmt.Errorf("store: tree hash at storage index %d: %w", x, ErrNotFound)
		}
		out[i] = h
	}
	return out, nil
}
