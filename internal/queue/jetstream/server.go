package jetstream

import (
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
)

// ServerConfig configures the embedded, in-process NATS server.
type ServerConfig struct {
	// StoreDir holds the JetStream file store. Required.
	StoreDir string
	// Listen makes the server accept TCP clients on Host:Port (Port -1
	// picks a free port). When false the server does not listen at all and
	// only in-process connections reach it.
	Listen bool
	Host   string // default 127.0.0.1
	Port   int    // default -1 (random)
	// SyncAlways fsyncs the file store on every write, so an accepted
	// message survives a machine crash; see the package documentation
	// for the cost.
	SyncAlways bool
	// ReadyTimeout bounds start-up; default 10s.
	ReadyTimeout time.Duration
}

// Server is an embedded NATS server with JetStream enabled.
type Server struct {
	ns *server.Server
}

// ErrServerNotReady is returned when the embedded server did not start in
// time.
var ErrServerNotReady = errors.New("jetstream: embedded server not ready")

// StartServer starts an embedded server and waits until it accepts
// connections.
func StartServer(cfg ServerConfig) (*Server, error) {
	if cfg.StoreDir == "" {
		return nil, errors.New("jetstream: ServerConfig.StoreDir is required")
	}
	opts := &server.Options{
		ServerName: "countersign-embedded",
		JetStream:  true,
		StoreDir:   cfg.StoreDir,
		SyncAlways: cfg.SyncAlways,
		DontListen: !cfg.Listen,
		Host:       cfg.Host,
		Port:       cfg.Port,
		NoSigs:     true,
		NoLog:      true,
	}
	if opts.Host == "" {
		opts.Host = "127.0.0.1"
	}
	if opts.Port == 0 {
		opts.Port = -1
	}
	ns, err := server.NewServer(opts)
	if err != nil {
		return nil, fmt.Errorf("jetstream: new embedded server: %w", err)
	}
	ns.Start()
	wait := cfg.ReadyTimeout
	if wait == 0 {
		wait = 10 * time.Second
	}
	if !ns.ReadyForConnections(wait) {
		ns.Shutdown()
		return nil, fmt.Errorf("%w after %s", ErrServerNotReady, wait)
	}
	return &Server{ns: ns}, nil
}

// Connect opens an in-process client connection.
func (s *Server) Connect(opts ...nats.Option) (*nats.Conn, error) {
	opts = append([]nats.Option{nats.InProcessServer(s.ns), nats.Name("countersign")}, opts...)
	nc, err := nats.Connect("", opts...)
	if err != nil {
		return nil, fmt.Errorf("jetstream: connect in-process: %w", err)
	}
	return nc, nil
}

// ClientURL is the TCP URL of a listening server, "" otherwise.
func (s *Server) ClientURL() string {
	if s.ns.Addr() == nil {
		return ""
	}
	return s.ns.ClientURL()
}

// Shutdown stops the server and waits for it to finish.
func (s *Server) Shutdown() {
	s.ns.Shutdown()
	s.ns.WaitForShutdown()
}

// LogValue describes the server without its internals.
func (s *Server) LogValue() slog.Value {
	return slog.GroupValue(slog.String("name", s.ns.Name()), slog.Bool("jetstream", s.ns.JetStreamEnabled()))
}
