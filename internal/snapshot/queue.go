package snapshot

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"

	"github.com/countersign/countersign/internal/queue"
)

// QueueSnapshotter is what the queue stream part needs (queue.Queue).
type QueueSnapshotter interface {
	Snapshot(ctx context.Context, w io.Writer) (queue.SnapshotInfo, error)
}

// QueuePositioner is what the queue positions part needs (queue.Queue).
type QueuePositioner interface {
	Positions(ctx context.Context) (queue.Positions, error)
}

// QueueStream snapshots the queue's streams with the backend's own
// archive (JetStream: the server's stream snapshots, messages and consumer
// state, restorable into a fresh server). The digest the backend reports
// is checked against the bytes received.
type QueueStream struct {
	Queue QueueSnapshotter
	// PartName defaults to "queue.archive".
	PartName string
}

// Name implements Part.
func (p QueueStream) Name() string { return orDefault(p.PartName, "queue.archive") }

// Kind implements Part.
func (p QueueStream) Kind() string { return KindQueueStream }

// Write implements Part.
func (p QueueStream) Write(ctx context.Context, w io.Writer) (map[string]any, error) {
	h := sha256.New()
	info, err := p.Queue.Snapshot(ctx, io.MultiWriter(w, h))
	if err != nil {
		return nil, err
	}
	if got := hex.EncodeToString(h.Sum(nil)); info.SHA256 != "" && info.SHA256 != got {
		return nil, fmt.Errorf("queue snapshot: backend reports sha256 %s, received %s", info.SHA256, got)
	}
	return map[string]any{"format": info.Format, "size": info.Size}, nil
}

// QueuePositions records where the queue stands: stream sequences,
// consumer delivered and ack-floor sequences (JetStream) or partition and
// committed offsets (Kafka), as a JSON document; the same positions are
// copied into the manifest's metadata.
type QueuePositions struct {
	Queue QueuePositioner
	// PartName defaults to "queue-positions.json".
	PartName string
}

// Name implements Part.
func (p QueuePositions) Name() string { return orDefault(p.PartName, "queue-positions.json") }

// Kind implements Part.
func (p QueuePositions) Kind() string { return KindQueuePositions }

// Write implements Part.
func (p QueuePositions) Write(ctx context.Context, w io.Writer) (map[string]any, error) {
	pos, err := p.Queue.Positions(ctx)
	if err != nil {
		return nil, err
	}
	b, err := writeJSON(w, pos)
	if err != nil {
		return nil, err
	}
	var meta map[string]any
	if err := json.Unmarshal(b, &meta); err != nil {
		return nil, fmt.Errorf("queue positions: %w", err)
	}
	return meta, nil
}

// writeJSON writes v as indented JSON with a final newline and returns
// the bytes written.
func writeJSON(w io.Writer, v any) ([]byte, error) {
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return nil, fmt.Errorf("encode: %w", err)
	}
	b = append(b, '\n')
	if _, err := w.Write(b); err != nil {
		return nil, err
	}
	return b, nil
}
