package jetstream

import (
	"archive/tar"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/countersign/countersign/internal/queue"
)

// SnapshotFormat names the archive Snapshot writes: a tar with, per stream
// S, "S/stream.json" (the server's stream config and state at snapshot
// time, as the restore API needs them) and "S/snapshot.tar.s2" (the
// server's own S2-compressed stream snapshot, messages and consumers).
const SnapshotFormat = "jetstream-snapshot/v1"

const snapshotChunk = 128 * 1024

// ErrSnapshot is wrapped by snapshot and restore protocol failures.
var ErrSnapshot = errors.New("jetstream: snapshot")

type apiError struct {
	Code        int    `json:"code"`
	ErrCode     int    `json:"err_code"`
	Description string `json:"description"`
}

type snapshotResponse struct {
	Error  *apiError       `json:"error,omitempty"`
	Config json.RawMessage `json:"config,omitempty"`
	State  json.RawMessage `json:"state,omitempty"`
}

type restoreRequest struct {
	Config json.RawMessage `json:"config"`
	State  json.RawMessage `json:"state"`
}

type restoreResponse struct {
	Error          *apiError `json:"error,omitempty"`
	DeliverSubject string    `json:"deliver_subject"`
}

func (e *apiError) err(op string) error {
	return fmt.Errorf("%w: %s: %s (code %d, err_code %d)", ErrSnapshot, op, e.Description, e.Code, e.ErrCode)
}

// Snapshot writes the work and replay streams, with their consumers, to w
// using the server's stream snapshot API; writers are not blocked.
func (q *Queue) Snapshot(ctx context.Context, w io.Writer) (queue.SnapshotInfo, error) {
	h := sha256.New()
	cw := &countWriter{w: io.MultiWriter(w, h)}
	tw := tar.NewWriter(cw)
	for _, stream := range []string{q.cfg.Stream, q.replayStream()} {
		if err := q.snapshotStream(ctx, tw, stream); err != nil {
			return queue.SnapshotInfo{}, err
		}
	}
	if err := tw.Close(); err != nil {
		return queue.SnapshotInfo{}, fmt.Errorf("%w: close archive: %w", ErrSnapshot, err)
	}
	return queue.SnapshotInfo{Format: SnapshotFormat, SHA256: hex.EncodeToString(h.Sum(nil)), Size: cw.n}, nil
}

func (q *Queue) snapshotStream(ctx context.Context, tw *tar.Writer, stream string) error {
	tmp, err := os.CreateTemp("", "countersign-jetstream-snapshot-*")
	if err != nil {
		return fmt.Errorf("%w: %w", ErrSnapshot, err)
	}
	defer func() { tmp.Close(); os.Remove(tmp.Name()) }()
	meta, err := q.fetchSnapshot(ctx, stream, tmp)
	if err != nil {
		return err
	}
	metaJSON, err := json.Marshal(meta)
	if err != nil {
		return fmt.Errorf("%w: %w", ErrSnapshot, err)
	}
	now := time.Now()
	if err := writeEntry(tw, path.Join(stream, "stream.json"), int64(len(metaJSON)), now, bytes.NewReader(metaJSON)); err != nil {
		return err
	}
	size, err := tmp.Seek(0, io.SeekCurrent)
	if err != nil {
		return fmt.Errorf("%w: %w", ErrSnapshot, err)
	}
	if _, err := tmp.Seek(0, io.SeekStart); err != nil {
		return fmt.Errorf("%w: %w", ErrSnapshot, err)
	}
	return writeEntry(tw, path.Join(stream, "snapshot.tar.s2"), size, now, tmp)
}

// fetchSnapshot runs the $JS.API.STREAM.SNAPSHOT protocol: chunks arrive
// on an inbox, each acknowledged through its reply subject; an empty
// message carrying a status header ends the transfer.
func (q *Queue) fetchSnapshot(ctx context.Context, stream string, w io.Writer) (restoreRequest, error) {
	inbox := q.nc.NewInbox()
	sub, err := q.nc.SubscribeSync(inbox)
	if err != nil {
		return restoreRequest{}, fmt.Errorf("%w: subscribe: %w", ErrSnapshot, err)
	}
	defer sub.Unsubscribe()
	req, _ := json.Marshal(map[string]any{"deliver_subject": inbox, "chunk_size": snapshotChunk})
	reply, err := q.nc.RequestWithContext(ctx, "$JS.API.STREAM.SNAPSHOT."+stream, req)
	if err != nil {
		return restoreRequest{}, fmt.Errorf("%w: request %s: %w", ErrSnapshot, stream, err)
	}
	var resp snapshotResponse
	if err := json.Unmarshal(reply.Data, &resp); err != nil {
		return restoreRequest{}, fmt.Errorf("%w: decode response: %w", ErrSnapshot, err)
	}
	if resp.Error != nil {
		return restoreRequest{}, resp.Error.err("snapshot " + stream)
	}
	for {
		msg, err := sub.NextMsgWithContext(ctx)
		if err != nil {
			return restoreRequest{}, fmt.Errorf("%w: receive %s: %w", ErrSnapshot, stream, err)
		}
		if len(msg.Data) == 0 {
			if st := msg.Header.Get("Status"); st != "" && st != "204" {
				return restoreRequest{}, fmt.Errorf("%w: %s ended with status %s %s", ErrSnapshot, stream, st, msg.Header.Get("Description"))
			}
			return restoreRequest{Config: resp.Config, State: resp.State}, nil
		}
		if _, err := w.Write(msg.Data); err != nil {
			return restoreRequest{}, fmt.Errorf("%w: write %s: %w", ErrSnapshot, stream, err)
		}
		if msg.Reply != "" {
			if err := msg.Respond(nil); err != nil {
				return restoreRequest{}, fmt.Errorf("%w: ack chunk: %w", ErrSnapshot, err)
			}
		}
	}
}

// Restore recreates the streams of a Snapshot archive, with their messages
// and consumers, on nc's server. The streams must not exist. It returns the
// restored stream names. JetStream's de-duplication table starts empty
// after a restore, which is one reason consumers must be idempotent.
func Restore(ctx context.Context, nc *nats.Conn, r io.Reader) ([]string, error) {
	tr := tar.NewReader(r)
	var (
		restored []string
		meta     restoreRequest
	)
	for {
		hdr, err := tr.Next()
		if errors.Is(err, io.EOF) {
			return restored, nil
		}
		if err != nil {
			return restored, fmt.Errorf("%w: read archive: %w", ErrSnapshot, err)
		}
		stream, file := path.Split(hdr.Name)
		stream = path.Clean(stream)
		switch file {
		case "stream.json":
			meta = restoreRequest{}
			if err := json.NewDecoder(tr).Decode(&meta); err != nil {
				return restored, fmt.Errorf("%w: %s: %w", ErrSnapshot, hdr.Name, err)
			}
		case "snapshot.tar.s2":
			if meta.Config == nil {
				return restored, fmt.Errorf("%w: %s before its stream.json", ErrSnapshot, hdr.Name)
			}
			if err := restoreStream(ctx, nc, stream, meta, tr); err != nil {
				return restored, err
			}
			restored = append(restored, stream)
			meta = restoreRequest{}
		default:
			return restored, fmt.Errorf("%w: unexpected entry %q", ErrSnapshot, hdr.Name)
		}
	}
}

func restoreStream(ctx context.Context, nc *nats.Conn, stream string, meta restoreRequest, r io.Reader) error {
	req, err := json.Marshal(meta)
	if err != nil {
		return fmt.Errorf("%w: %w", ErrSnapshot, err)
	}
	reply, err := nc.RequestWithContext(ctx, "$JS.API.STREAM.RESTORE."+stream, req)
	if err != nil {
		return fmt.Errorf("%w: restore request %s: %w", ErrSnapshot, stream, err)
	}
	var resp restoreResponse
	if err := json.Unmarshal(reply.Data, &resp); err != nil {
		return fmt.Errorf("%w: decode restore response: %w", ErrSnapshot, err)
	}
	if resp.Error != nil {
		return resp.Error.err("restore " + stream)
	}
	buf := make([]byte, snapshotChunk)
	for {
		n, rerr := io.ReadFull(r, buf)
		if n > 0 {
			if err := sendChunk(ctx, nc, resp.DeliverSubject, buf[:n]); err != nil {
				return fmt.Errorf("%w: restore %s: %w", ErrSnapshot, stream, err)
			}
		}
		if errors.Is(rerr, io.EOF) || errors.Is(rerr, io.ErrUnexpectedEOF) {
			break
		}
		if rerr != nil {
			return fmt.Errorf("%w: read %s: %w", ErrSnapshot, stream, rerr)
		}
	}
	if err := sendChunk(ctx, nc, resp.DeliverSubject, nil); err != nil {
		return fmt.Errorf("%w: finish restore %s: %w", ErrSnapshot, stream, err)
	}
	return nil
}

// sendChunk sends one restore chunk and checks the server's reply: empty
// for an accepted chunk, a JSON API response (with any error) at the end.
func sendChunk(ctx context.Context, nc *nats.Conn, subject string, chunk []byte) error {
	reply, err := nc.RequestWithContext(ctx, subject, chunk)
	if err != nil {
		return err
	}
	if len(reply.Data) == 0 {
		return nil
	}
	var resp struct {
		Error *apiError `json:"error,omitempty"`
	}
	if err := json.Unmarshal(reply.Data, &resp); err != nil {
		return fmt.Errorf("decode chunk reply: %w", err)
	}
	if resp.Error != nil {
		return resp.Error.err("chunk")
	}
	return nil
}

func writeEntry(tw *tar.Writer, name string, size int64, mod time.Time, r io.Reader) error {
	if err := tw.WriteHeader(&tar.Header{Name: name, Mode: 0o444, Size: size, ModTime: mod, Typeflag: tar.TypeReg}); err != nil {
		return fmt.Errorf("%w: %s: %w", ErrSnapshot, name, err)
	}
	if _, err := io.CopyN(tw, r, size); err != nil {
		return fmt.Errorf("%w: %s: %w", ErrSnapshot, name, err)
	}
	return nil
}

type countWriter struct {
	w io.Writer
	n int64
}

func (c *countWriter) Write(p []byte) (int, error) {
	n, err := c.w.Write(p)
	c.n += int64(n)
	return n, err
}
