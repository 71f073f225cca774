package queue

import (
	"errors"
	"fmt"
	"time"

	"golang.org/x/time/rate"
)

// Positions is where a queue stands, as recorded in an incident snapshot.
// Only the fields of the backend in use are set.
type Positions struct {
	Backend    string    `json:"backend"`
	CapturedAt time.Time `json:"captured_at"`
	// JetStream.
	Streams   []StreamPosition   `json:"streams,omitempty"`
	Consumers []ConsumerPosition `json:"consumers,omitempty"`
	// Kafka.
	Partitions []PartitionPosition `json:"partitions,omitempty"`
}

// StreamPosition is a JetStream stream's sequence range.
type StreamPosition struct {
	Stream   string `json:"stream"`
	FirstSeq uint64 `json:"first_seq"`
	LastSeq  uint64 `json:"last_seq"`
	Messages uint64 `json:"messages"`
}

// ConsumerPosition is a JetStream consumer's progress through its stream.
type ConsumerPosition struct {
	Stream            string `json:"stream"`
	Consumer          string `json:"consumer"`
	DeliveredStream   uint64 `json:"delivered_stream_seq"`
	DeliveredConsumer uint64 `json:"delivered_consumer_seq"`
	AckFloorStream    uint64 `json:"ack_floor_stream_seq"`
	AckFloorConsumer  uint64 `json:"ack_floor_consumer_seq"`
	NumPending        uint64 `json:"num_pending"`
	NumAckPending     int    `json:"num_ack_pending"`
	NumRedelivered    int    `json:"num_redelivered"`
	Paused            bool   `json:"paused"`
}

// PartitionPosition is a Kafka partition's offsets and, when Group is set,
// that consumer group's committed offset (-1 when it has none).
type PartitionPosition struct {
	Topic     string `json:"topic"`
	Partition int32  `json:"partition"`
	Start     int64  `json:"start_offset"`
	End       int64  `json:"end_offset"`
	Group     string `json:"group,omitempty"`
	Committed int64  `json:"committed_offset"`
}

// NewReplayLimiter validates opts and returns the limiter a backend uses
// to pace a replay: Rate events per second with a burst of one, so that
// n deliveries take at least (n-1)/Rate seconds.
func NewReplayLimiter(opts ReplayOptions) (*rate.Limiter, error) {
	if opts.Rate <= 0 {
		return nil, fmt.Errorf("queue: replay rate %v must be > 0", opts.Rate)
	}
	if !opts.DryRun && opts.Handler == nil {
		return nil, errors.New("queue: replay needs a handler")
	}
	return rate.NewLimiter(rate.Limit(opts.Rate), 1), nil
}
