package node

import (
	"crypto/rand"
	"encoding/base32"
	"encoding/binary"
	"time"
)

var idEncoding = base32.NewEncoding("0123456789abcdefghjkmnpqrstvwxyz").WithPadding(base32.NoPadding)

// newID returns prefix + a 26-character, time-ordered, random identifier
// (48 bits of milliseconds, 80 random bits), like a ULID.
func newID(prefix string, now time.Time) string {
	var b [16]byte
	binary.BigEndian.PutUint64(b[:8], uint64(now.UnixMilli())<<16)
	if _, err := rand.Read(b[6:]); err != nil {
		panic("node: crypto/rand failed: " + err.Error()) // the runtime guarantees Read does not fail
	}
	return prefix + idEncoding.EncodeToString(b[:])
}
