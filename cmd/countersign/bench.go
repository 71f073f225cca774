package main

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/http/pprof"
	"os"
	"runtime"
	"strconv"
	"strings"
	"time"

	"github.com/countersign/countersign/client"
	"github.com/countersign/countersign/internal/bench"
	"github.com/countersign/countersign/internal/keys"
)

func init() {
	register("bench", "measure signing throughput against the raw crypto limit", runBench)
}

// benchReport is what `bench sign --json` prints.
type benchReport struct {
	Server      string  `json:"server"`
	Key         string  `json:"key"`
	Algorithm   string  `json:"algorithm"`
	Format      string  `json:"format"`
	Batch       int     `json:"batch"`
	Concurrency int     `json:"concurrency"`
	DurationS   float64 `json:"duration_s"`
	Signatures  int64   `json:"signatures"`
	Failed      int64   `json:"failed"`
	OpsPerS     float64 `json:"ops_per_s"`
	P50Ms       float64 `json:"p50_ms"`
	P99Ms       float64 `json:"p99_ms"`
	ServerCPUUs float64 `json:"server_cpu_per_sig_us,omitempty"`
	// ClientCPUUs is this load generator's own CPU per signature: on a
	// machine where it shares the cores with the server, what it burns is
	// not available to the server.
	ClientCPUUs   float64           `json:"client_cpu_per_sig_us,omitempty"`
	Limit         bench.CryptoLimit `json:"crypto_limit"`
	RatioParallel float64           `json:"ratio_to_parallel_limit"`
	RatioCPU      float64           `json:"server_cpu_ratio_to_crypto,omitempty"`
	// MeanCommitBatch is the server's mean group-commit batch (signatures
	// per transaction) during the run, when /metrics reports it.
	MeanCommitBatch float64 `json:"mean_commit_batch,omitempty"`
	// Durability is what the server's commits survive, as it reports it:
	// "sqlite synchronous=FULL", "postgres synchronous_commit=on".
	Durability string            `json:"durability,omitempty"`
	Machine    map[string]string `json:"machine"`
	FirstError string            `json:"first_error,omitempty"`
}

func runBench(ctx context.Context, env *cliEnv, args []string) error {
	if len(args) == 0 || args[0] != "sign" {
		return usageError("usage: countersign bench sign --server URL --token-file F --key K [flags]")
	}
	fs := newFlagSet(env, "bench sign", "--server URL --token-file F --key K [flags]")
	server := fs.String("server", "http://127.0.0.1:7300", "node or gateway URL")
	tokenFile := fs.String("token-file", "", "file holding the API token (or env COUNTERSIGN_TOKEN)")
	key := fs.String("key", "default", "key name")
	format := fs.String("format", "raw", "cms | jws | raw")
	conc := fs.Int("concurrency", 64, "concurrent closed-loop clients")
	dur := fs.Duration("duration", 10*time.Second, "how long to apply load")
	batch := fs.Int("batch", 0, "items per POST /v1/sign:batch (0: single POST /v1/sign)")
	docSize := fs.Int("doc-size", 256, "document size in bytes")
	limitDur := fs.Duration("crypto-duration", 2*time.Second, "how long to measure the raw crypto limit (each of single and all cores)")
	asJSON := fs.Bool("json", false, "print the report as JSON")
	if err := fs.Parse(args[1:]); err != nil {
		return err
	}
	token, err := readToken(env, *tokenFile)
	if err != nil {
		return err
	}
	c, err := client.New(*server, token)
	if err != nil {
		return err
	}
	kinfo, err := c.Key(ctx, *key)
	if err != nil {
		return fmt.Errorf("look up key %q: %w", *key, err)
	}
	alg := kinfo.Versions[len(kinfo.Versions)-1].Algorithm
	// The raw limit is measured first, while the server is idle: after the
	// load, requests cut off by the deadline may still be running there.
	a, err := keys.ParseAlgorithm(alg)
	if err != nil {
		return err
	}
	fmt.Fprintf(env.stderr, "measuring the raw %s signing limit (%v single core, %v all cores)...\n", alg, *limitDur, *limitDur)
	limit, err := bench.MeasureCryptoLimit(a, *limitDur)
	if err != nil {
		return err
	}
	doc := make([]byte, *docSize)
	for i := range doc {
		doc[i] = byte('a' + i%26)
	}
	// Warm up connections and the server's key cache.
	if _, err := c.Sign(ctx, client.SignRequest{Key: *key, Format: client.Format(*format), Document: doc}); err != nil {
		return fmt.Errorf("warm-up sign: %w", err)
	}
	before := scrapeServer(ctx, *server)
	cpu0, cpuOK := bench.ProcessCPU()
	var lat bench.Latencies
	run := fmt.Sprintf("%x", time.Now().UnixNano())
	// One keep-alive connection per worker, each with its request encoded
	// once (see bench.SignConn for why not net/http and encoding/json).
	conns := make([]*bench.SignConn, *conc)
	for w := range conns {
		sc, err := bench.NewSignConn(*server, token, fmt.Sprintf("bench-%s-%d-", run, w),
			client.SignRequest{Key: *key, Format: client.Format(*format), Document: doc}, *batch)
		if err != nil {
			return err
		}
		defer sc.Close()
		conns[w] = sc
	}
	ok, failed, firstErr, elapsed := bench.Load(ctx, *conc, *dur, &lat, func(ctx context.Context, w int, seq int64) error {
		return conns[w].Do(ctx)
	})
	cpu1, cpuOK1 := bench.ProcessCPU()
	after := scrapeServer(context.WithoutCancel(ctx), *server)
	perReq := int64(max(*batch, 1))
	rep := benchReport{Server: *server, Key: *key, Algorithm: alg, Format: *format, Batch: *batch, Concurrency: *conc,
		DurationS: elapsed.Seconds(), Signatures: ok * perReq, Failed: failed,
		OpsPerS: float64(ok*perReq) / elapsed.Seconds(),
		P50Ms:   float64(lat.Quantile(0.50)) / 1e6, P99Ms: float64(lat.Quantile(0.99)) / 1e6,
		Limit: limit, Machine: machine()}
	if firstErr != nil {
		rep.FirstError = firstErr.Error()
	}
	if n := ok * perReq; cpuOK && cpuOK1 && n > 0 {
		rep.ClientCPUUs = float64(cpu1-cpu0) / float64(time.Microsecond) / float64(n)
	}
	if before.ok && after.ok && after.sigs > before.sigs {
		rep.ServerCPUUs = (after.cpu - before.cpu) / (after.sigs - before.sigs) * 1e6
	}
	rep.Durability = after.durability
	if nb := after.batches - before.batches; nb > 0 {
		rep.MeanCommitBatch = (after.commits - before.commits) / nb
	}
	rep.RatioParallel = rep.OpsPerS / rep.Limit.AllCores
	if rep.ServerCPUUs > 0 {
		rep.RatioCPU = rep.ServerCPUUs / rep.Limit.CPUPerOpMicro
	}
	if *asJSON {
		b, _ := json.MarshalIndent(rep, "", "  ")
		fmt.Fprintln(env.stdout, string(b))
		return nil
	}
	w := env.stdout
	fmt.Fprintf(w, "server        %s (key %s, %s, format %s, batch %d)\n", rep.Server, rep.Key, rep.Algorithm, rep.Format, rep.Batch)
	fmt.Fprintf(w, "load          %d concurrent clients for %.1fs\n", rep.Concurrency, rep.DurationS)
	if rep.Durability != "" {
		fmt.Fprintf(w, "durability    %s (what a 200 had survived)\n", rep.Durability)
	} else {
		fmt.Fprintf(w, "durability    not reported by the server\n")
	}
	fmt.Fprintf(w, "signatures    %d ok, %d failed\n", rep.Signatures, rep.Failed)
	fmt.Fprintf(w, "throughput    %.0f signatures/s\n", rep.OpsPerS)
	fmt.Fprintf(w, "latency       p50 %.2f ms, p99 %.2f ms (per request)\n", rep.P50Ms, rep.P99Ms)
	fmt.Fprintf(w, "crypto limit  %.0f/s single core, %.0f/s on %d cores (%.1f µs CPU per signature)\n", rep.Limit.SingleCore, rep.Limit.AllCores, rep.Limit.Cores, rep.Limit.CPUPerOpMicro)
	fmt.Fprintf(w, "ratio         %.1f%% of the parallel crypto limit\n", rep.RatioParallel*100)
	if rep.ServerCPUUs > 0 {
		fmt.Fprintf(w, "server CPU    %.1f µs per durable signature = %.2f× the signature's own CPU\n", rep.ServerCPUUs, rep.RatioCPU)
	} else {
		fmt.Fprintf(w, "server CPU    not available (could not read the server's /metrics)\n")
	}
	if rep.ClientCPUUs > 0 {
		fmt.Fprintf(w, "client CPU    %.1f µs per signature in this load generator (same machine)\n", rep.ClientCPUUs)
	}
	if rep.MeanCommitBatch > 0 {
		fmt.Fprintf(w, "group commit  %.1f signatures per transaction (mean)\n", rep.MeanCommitBatch)
	}
	if rep.FirstError != "" {
		fmt.Fprintf(w, "first error   %s\n", rep.FirstError)
	}
	return nil
}

// serverCounters are the node counters the bench reads from /metrics.
type serverCounters struct {
	cpu, sigs        float64 // process CPU seconds, committed signatures
	batches, commits float64 // group-commit transactions and the writes in them
	ok               bool    // process CPU was found
	durability       string  // "sqlite synchronous=FULL", ...; "" when not exported
}

// scrapeServer reads process CPU seconds, committed signatures and the
// group committer's counters from the server's Prometheus endpoint.
func scrapeServer(ctx context.Context, base string) (c serverCounters) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, strings.TrimRight(base, "/")+"/metrics", nil)
	if err != nil {
		return c
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return c
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return c
	}
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		name, val, found := strings.Cut(line, " ")
		if !found || strings.HasPrefix(line, "#") {
			continue
		}
		v, err := strconv.ParseFloat(strings.TrimSpace(val), 64)
		if err != nil {
			continue
		}
		switch {
		case name == "process_cpu_seconds_total":
			c.cpu, c.ok = v, true
		case strings.HasPrefix(name, "countersign_signatures_total"):
			c.sigs += v
		case name == "countersign_commit_batches_total":
			c.batches = v
		case name == "countersign_commit_writes_total":
			c.commits = v
		case strings.HasPrefix(name, "countersign_store_durability_info{"):
			c.durability = durabilityLabel(name)
		}
	}
	return c
}

// durabilityLabel renders countersign_store_durability_info's labels:
// {backend="sqlite",setting="FULL"} gives "sqlite synchronous=FULL".
func durabilityLabel(series string) string {
	var backend, setting string
	_, labels, _ := strings.Cut(strings.TrimSuffix(series, "}"), "{")
	for _, kv := range strings.Split(labels, ",") {
		k, v, _ := strings.Cut(kv, "=")
		v, err := strconv.Unquote(v)
		if err != nil {
			continue
		}
		switch k {
		case "backend":
			backend = v
		case "setting":
			setting = v
		}
	}
	name := map[string]string{"sqlite": "synchronous", "postgres": "synchronous_commit"}[backend]
	if name == "" {
		name = "setting"
	}
	return backend + " " + name + "=" + setting
}

func machine() map[string]string {
	m := map[string]string{"goos": runtime.GOOS, "goarch": runtime.GOARCH, "cpus": strconv.Itoa(runtime.NumCPU()), "go": runtime.Version()}
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for _, l := range strings.Split(string(b), "\n") {
			if strings.HasPrefix(l, "model name") {
				if _, v, ok := strings.Cut(l, ":"); ok {
					m["cpu"] = strings.TrimSpace(v)
				}
				break
			}
		}
	}
	return m
}

// startPprof serves net/http/pprof on addr, which must be a loopback
// address: profiles expose memory contents and may not leave the machine.
// It returns a function that stops the listener.
func startPprof(addr string, logger *slog.Logger) (stop func(), err error) {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return nil, usageError("--pprof: %v", err)
	}
	if ip := net.ParseIP(host); host != "localhost" && (ip == nil || !ip.IsLoopback()) {
		return nil, usageError("--pprof must listen on a loopback address, not %q", addr)
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("--pprof: %w", err)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("/debug/pprof/", pprof.Index)
	mux.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
	mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
	mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
	mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	hs := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	go hs.Serve(ln)
	logger.Warn("pprof debug listener enabled", slog.String("addr", ln.Addr().String()))
	return func() { hs.Close() }, nil
}
