// Package queueurl opens the queue an operator names by URL: a NATS
// JetStream server or cluster, or an Apache Kafka cluster. It is the one
// place that knows both backends, so the node, the control plane and the
// CLI accept the same URLs with the same meaning.
//
// # URLs
//
// NATS JetStream, as the NATS clients take them (comma-separated for a
// cluster; credentials, if any, in each URL), with one option of ours
// after the last URL:
//
//	nats://[USER:PASSWORD@]HOST:4222[,nats://HOST2:4222...][?replicas=N]
//	tls://HOST:4222        (also wss://, ws://)
//
// replicas=N makes the streams Countersign creates replicated N times (a
// cluster of three servers wants 3; default 1). The NATS client never sees
// the option.
//
// Kafka (brokers comma-separated; the optional path is the work topic):
//
//	kafka://[USER:PASSWORD@]HOST:9092[,HOST2:9092...][/TOPIC][?OPTIONS]
//
// with OPTIONS:
//
//	tls=true             connect with TLS (system roots)
//	ca=FILE              verify the brokers against this PEM bundle (implies tls)
//	sasl=plain|scram-sha-256|scram-sha-512
//	                     authenticate with USER and PASSWORD (required with sasl)
//	partitions=N         partitions of the work topic when it is created (default 1)
//	replication=N        replication factor of created topics (default: the broker's)
//
// A URL may carry a password: log or print it only through Redact.
package queueurl

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/url"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/sasl"
	"github.com/twmb/franz-go/pkg/sasl/plain"
	"github.com/twmb/franz-go/pkg/sasl/scram"

	"github.com/countersign/countersign/internal/queue"
	"github.com/countersign/countersign/internal/queue/jetstream"
	"github.com/countersign/countersign/internal/queue/kafka"
)

// Backends a URL can name.
const (
	JetStream = "jetstream"
	Kafka     = "kafka"
)

// ErrInvalid wraps every error about the URL itself (as opposed to an
// error reaching the queue).
var ErrInvalid = errors.New("queueurl: invalid queue URL")

// Target is a parsed queue URL.
type Target struct {
	// Backend is JetStream or Kafka.
	Backend string
	// raw is the URL as given.
	raw string
	// natsURLs is what the NATS client is given (raw without our options),
	// replicas the streams' replication (Backend JetStream).
	natsURLs string
	replicas int
	// kafka is the Kafka configuration (Backend Kafka).
	kafka kafka.Config
}

// Options are what the caller adds to the URL.
type Options struct {
	// AckWait is how long a delivered, unacknowledged message waits before
	// it is redelivered (JetStream; Kafka redelivers from the oldest
	// unacknowledged offset when a consumer leaves its group). 0: the
	// backend's default.
	AckWait time.Duration
	// ConnectTimeout bounds the first connection (default 5s).
	ConnectTimeout time.Duration
	// NATS are extra options for the NATS connection.
	NATS   []nats.Option
	Logger *slog.Logger
}

// Parse checks a queue URL and says which backend it names. It reads no
// file and opens no connection.
func Parse(raw string) (Target, error) {
	raw = strings.TrimSpace(raw)
	scheme, _, ok := strings.Cut(raw, "://")
	if !ok {
		return Target{}, fmt.Errorf("%w %q: want nats://HOST:PORT or kafka://HOST:PORT", ErrInvalid, Redact(raw))
	}
	switch strings.ToLower(scheme) {
	case "nats", "tls", "ws", "wss":
		return parseNATS(raw)
	case "kafka":
		kc, err := parseKafka(raw)
		if err != nil {
			return Target{}, err
		}
		return Target{Backend: Kafka, raw: raw, kafka: kc}, nil
	}
	return Target{}, fmt.Errorf("%w %q: unknown scheme %q (want nats, tls, ws, wss or kafka)", ErrInvalid, Redact(raw), scheme)
}

// Open connects to the queue the URL names and makes sure its streams or
// topics exist.
func Open(ctx context.Context, raw string, o Options) (queue.Queue, error) {
	t, err := Parse(raw)
	if err != nil {
		return nil, err
	}
	return t.Open(ctx, o)
}

// Open connects to the target.
func (t Target) Open(ctx context.Context, o Options) (queue.Queue, error) {
	timeout := o.ConnectTimeout
	if timeout <= 0 {
		timeout = 5 * time.Second
	}
	switch t.Backend {
	case JetStream:
		opts := append([]nats.Option{nats.Timeout(timeout)}, o.NATS...)
		q, err := jetstream.Dial(ctx, t.natsURLs, jetstream.Config{AckWait: o.AckWait, Replicas: t.replicas, Logger: o.Logger}, opts...)
		if err != nil {
			return nil, fmt.Errorf("queue %s: %w", Redact(t.raw), err)
		}
		return q, nil
	case Kafka:
		kc := t.kafka
		kc.Logger = o.Logger
		kc.ClientOpts = append(kc.ClientOpts, kgo.DialTimeout(timeout))
		cctx, cancel := context.WithTimeout(ctx, 3*timeout)
		defer cancel()
		q, err := kafka.New(cctx, kc)
		if err != nil {
			return nil, fmt.Errorf("queue %s: %w", Redact(t.raw), err)
		}
		return q, nil
	}
	return nil, fmt.Errorf("%w: no backend", ErrInvalid)
}

// String is the URL with its passwords redacted.
func (t Target) String() string { return Redact(t.raw) }

func parseNATS(raw string) (Target, error) {
	t := Target{Backend: JetStream, raw: raw, natsURLs: raw}
	if i := strings.LastIndex(raw, "?"); i >= 0 {
		t.natsURLs = raw[:i]
		q, err := url.ParseQuery(raw[i+1:])
		if err != nil {
			return Target{}, fmt.Errorf("%w %q: options: %v", ErrInvalid, Redact(raw), err)
		}
		for k, vs := range q {
			v := vs[len(vs)-1]
			if k != "replicas" {
				return Target{}, fmt.Errorf("%w %q: unknown option %q (want replicas)", ErrInvalid, Redact(raw), k)
			}
			n, err := strconv.Atoi(v)
			if err != nil || n < 1 || n > 5 {
				return Target{}, fmt.Errorf("%w %q: replicas=%q: want 1 to 5 (JetStream's limit)", ErrInvalid, Redact(raw), v)
			}
			t.replicas = n
		}
	}
	for _, u := range strings.Split(t.natsURLs, ",") {
		pu, err := url.Parse(strings.TrimSpace(u))
		if err != nil {
			return Target{}, fmt.Errorf("%w %q: %v", ErrInvalid, Redact(raw), redactErr(err))
		}
		if pu.Host == "" {
			return Target{}, fmt.Errorf("%w %q: %q has no HOST:PORT", ErrInvalid, Redact(raw), Redact(u))
		}
	}
	return t, nil
}

func parseKafka(raw string) (kafka.Config, error) {
	bad := func(format string, a ...any) (kafka.Config, error) {
		return kafka.Config{}, fmt.Errorf("%w %q: %s", ErrInvalid, Redact(raw), fmt.Sprintf(format, a...))
	}
	rest := raw[len("kafka://"):]
	// The user information runs to the last "@", so a password may hold
	// '/', '?' or '#' without being read as the path or the options.
	var user *url.Userinfo
	if at := strings.LastIndex(rest, "@"); at >= 0 {
		name, pass, hasPass := strings.Cut(rest[:at], ":")
		var err error
		if name, err = url.PathUnescape(name); err != nil {
			return bad("credentials: the user name is not percent-encoded correctly")
		}
		if pass, err = url.PathUnescape(pass); err != nil {
			return bad("credentials: the password is not percent-encoded correctly")
		}
		if user = url.User(name); hasPass {
			user = url.UserPassword(name, pass)
		}
		rest = rest[at+1:]
	}
	var query string
	rest, query, _ = strings.Cut(rest, "?")
	authority, path, _ := strings.Cut(rest, "/")
	var cfg kafka.Config
	for _, b := range strings.Split(authority, ",") {
		host, port, err := net.SplitHostPort(strings.TrimSpace(b))
		if err != nil || host == "" {
			return bad("broker %q is not HOST:PORT", b)
		}
		if p, err := strconv.Atoi(port); err != nil || p <= 0 || p > 65535 {
			return bad("broker %q: port %q", b, port)
		}
		cfg.Brokers = append(cfg.Brokers, net.JoinHostPort(host, port))
	}
	if path != "" {
		topic, err := url.PathUnescape(path)
		if err != nil || !validTopic(topic) {
			return bad("topic %q: want 1-200 of [a-zA-Z0-9._-]", path)
		}
		cfg.Topic = topic
	}
	q, err := url.ParseQuery(query)
	if err != nil {
		return bad("options: %v", err)
	}
	var tlsCfg *tls.Config
	var mech string
	for k, vs := range q {
		v := vs[len(vs)-1]
		switch k {
		case "tls":
			on, err := strconv.ParseBool(v)
			if err != nil {
				return bad("tls=%q: want true or false", v)
			}
			if on && tlsCfg == nil {
				tlsCfg = &tls.Config{MinVersion: tls.VersionTLS12}
			}
		case "ca":
			pem, err := os.ReadFile(v)
			if err != nil {
				return bad("ca: %v", err)
			}
			pool := x509.NewCertPool()
			if !pool.AppendCertsFromPEM(pem) {
				return bad("ca %s: no PEM certificate", v)
			}
			if tlsCfg == nil {
				tlsCfg = &tls.Config{MinVersion: tls.VersionTLS12}
			}
			tlsCfg.RootCAs = pool
		case "sasl":
			mech = strings.ToLower(v)
		case "partitions":
			n, err := strconv.ParseInt(v, 10, 32)
			if err != nil || n < 1 {
				return bad("partitions=%q: want a positive number", v)
			}
			cfg.Partitions = int32(n)
		case "replication":
			n, err := strconv.ParseInt(v, 10, 16)
			if err != nil || n < 1 {
				return bad("replication=%q: want a positive number", v)
			}
			cfg.ReplicationFactor = int16(n)
		default:
			return bad("unknown option %q (want tls, ca, sasl, partitions or replication)", k)
		}
	}
	if tlsCfg != nil {
		cfg.ClientOpts = append(cfg.ClientOpts, kgo.DialTLSConfig(tlsCfg))
	}
	switch {
	case mech == "" && user != nil:
		return bad("credentials given without sasl=plain|scram-sha-256|scram-sha-512")
	case mech == "":
	default:
		var pass string
		if user != nil {
			pass, _ = user.Password()
		}
		if user == nil || user.Username() == "" || pass == "" {
			return bad("sasl=%s needs USER:PASSWORD@ in the URL", mech)
		}
		m, err := saslMechanism(mech, user.Username(), pass)
		if err != nil {
			return bad("%v", err)
		}
		cfg.ClientOpts = append(cfg.ClientOpts, kgo.SASL(m))
	}
	return cfg, nil
}

func saslMechanism(name, user, pass string) (sasl.Mechanism, error) {
	switch name {
	case "plain":
		return plain.Auth{User: user, Pass: pass}.AsMechanism(), nil
	case "scram-sha-256":
		return scram.Auth{User: user, Pass: pass}.AsSha256Mechanism(), nil
	case "scram-sha-512":
		return scram.Auth{User: user, Pass: pass}.AsSha512Mechanism(), nil
	}
	return nil, fmt.Errorf("sasl=%q: want plain, scram-sha-256 or scram-sha-512", name)
}

// validTopic is Kafka's rule for topic names.
func validTopic(s string) bool {
	if s == "" || len(s) > 200 || s == "." || s == ".." {
		return false
	}
	for _, c := range s {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '.' || c == '_' || c == '-') {
			return false
		}
	}
	return true
}

// Redact returns the URL with every secret of its user information
// replaced by "xxxxx", for logs, errors and reports: the password of
// USER:PASSWORD, and a userinfo without a colon whole (a NATS token). It
// redacts each URL of a comma-separated NATS list on its own when the list
// is well formed, and otherwise everything from the first "://" to the
// last "@", so a password holding a comma, '/', '?' or '#' is still gone:
// it errs towards hiding too much, never too little.
func Redact(raw string) string {
	parts := strings.Split(raw, ",")
	scheme, _, _ := strings.Cut(raw, "://")
	if strings.EqualFold(scheme, "kafka") || len(parts) == 1 {
		return redactOne(raw)
	}
	for _, p := range parts[1:] {
		if !strings.Contains(p, "://") {
			return redactOne(raw) // not a list of URLs: a comma inside a userinfo, say
		}
	}
	for i, p := range parts {
		parts[i] = redactOne(p)
	}
	return strings.Join(parts, ",")
}

// redactOne redacts the user information of one URL: everything between
// its "://" and its last "@".
func redactOne(u string) string {
	at := strings.LastIndex(u, "@")
	if at < 0 {
		return u
	}
	start := strings.Index(u, "://")
	if start < 0 || start+3 > at {
		return "xxxxx" + u[at:] // no scheme before the "@": hide all of it
	}
	start += 3
	if user, _, ok := strings.Cut(u[start:at], ":"); ok && !strings.ContainsAny(user, "/?#") {
		return u[:start] + user + ":xxxxx" + u[at:]
	}
	return u[:start] + "xxxxx" + u[at:]
}

// redactErr drops the text of a url.Error, which quotes the URL it could
// not parse (password included).
func redactErr(err error) error {
	var ue *url.Error
	if errors.As(err, &ue) {
		return ue.Err
	}
	return err
}
