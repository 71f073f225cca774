package auditlog

import (
	"bytes"
	"errors"
	"testing"

	"golang.org/x/mod/sumdb/tlog"
)

func TestTilePaths(t *testing.T) {
	for _, tc := range []struct {
		tile tlog.Tile
		path string
	}{
		{tlog.Tile{H: 8, L: 0, N: 0, W: 256}, "tile/0/000"},
		{tlog.Tile{H: 8, L: 0, N: 1234067, W: 256}, "tile/0/x001/x234/067"},
		{tlog.Tile{H: 8, L: 2, N: 5, W: 1}, "tile/2/005.p/1"},
		{tlog.Tile{H: 8, L: -1, N: 273, W: 112}, "tile/entries/273.p/112"},
		{tlog.Tile{H: 8, L: -1, N: 1000, W: 256}, "tile/entries/x001/000"},
	} {
		t.Run(tc.path, func(t *testing.T) {
			if got := tilePath(tc.tile); got != tc.path {
				t.Errorf("tilePath = %q, want %q", got, tc.path)
			}
			got, err := parseTilePath(tc.path)
			if err != nil || got != tc.tile {
				t.Errorf("parseTilePath = %+v, %v; want %+v", got, err, tc.tile)
			}
		})
	}
	for _, bad := range []string{"tile/0/0", "tile/0/x000/001", "tile/00/000", "tile/0/000.p/256", "tile/0/000.p/0", "tile/data/000", "tile/8/0/000", "checkpoint"} {
		if _, err := parseTilePath(bad); !errors.Is(err, ErrNotFound) {
			t.Errorf("parseTilePath(%q) = %v, want ErrNotFound", bad, err)
		}
	}
}

func TestBundleRoundTrip(t *testing.T) {
	entries := [][]byte{[]byte(`{"v":1}`), {}, bytes.Repeat([]byte("x"), 300)}
	b, err := EncodeBundle(entries)
	if err != nil {
		t.Fatal(err)
	}
	if b[0] != 0 || b[1] != 7 {
		t.Fatalf("length prefix %x, want big-endian 7", b[:2])
	}
	got, err := DecodeBundle(b)
	if err != nil || len(got) != 3 || !bytes.Equal(got[2], entries[2]) {
		t.Fatalf("DecodeBundle = %q, %v", got, err)
	}
	if _, err := DecodeBundle(b[:len(b)-1]); !errors.Is(err, ErrVerify) {
		t.Errorf("truncated bundle: %v", err)
	}
	if _, err := EncodeBundle([][]byte{make([]byte, 1<<16)}); err == nil {
		t.Error("EncodeBundle accepted a 64 KiB entry")
	}
}

func TestParseCheckpoint(t *testing.T) {
	for _, tc := range []struct {
		name, text string
		ok         bool
	}{
		{"plain", "example.com/log\n12\nAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=\n", true},
		{"extension line", "example.com/log\n12\nAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=\next\n", true},
		{"leading zero", "example.com/log\n012\nAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=\n", false},
		{"short hash", "example.com/log\n12\nAAAA\n", false},
		{"two lines", "example.com/log\n12\n", false},
		{"no final newline", "example.com/log\n12\nAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, err := ParseCheckpoint(tc.text)
			if (err == nil) != tc.ok {
				t.Fatalf("err = %v, want ok=%v", err, tc.ok)
			}
			if tc.ok && (c.Size != 12 || c.Origin != "example.com/log") {
				t.Fatalf("parsed %+v", c)
			}
		})
	}
}

func TestCheckEntry(t *testing.T) {
	good := testEvent(t, 3).Entry
	if err := CheckEntry(good); err != nil {
		t.Fatalf("canonical entry: %v", err)
	}
	for _, bad := range [][]byte{
		append([]byte(" "), good...),
		[]byte(`{"type":"x","v":1,"time":"","actor":""}`),
		[]byte(`{"v":1,"type":"x","time":"","actor":"","extra":1}`),
		[]byte(`{"v":2,"type":"x","time":"","actor":""}`),
	} {
		if err := CheckEntry(bad); err == nil {
			t.Errorf("CheckEntry(%s) accepted a non-canonical entry", bad)
		}
	}
}
