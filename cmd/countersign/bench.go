package main

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"math"
	"net"
	"net/http"
	"net/http/pprof"
	"os"
	"runtime"
	"sort"
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
	Server      string `json:"server"`
	Key         string `json:"key"`
	Algorithm   string `json:"algorithm"`
	Format      string `json:"format"`
	Batch       int    `json:"batch"`
	Concurrency int    `json:"concurrency"`
	// IdempotencyKeys is the style of the keys sent: "uuidv7" (time
	// ordered, what the client SDK sends) or "uuidv4" (random).
	IdempotencyKeys string `json:"idempotency_keys"`
	// StoreProcs are the command names --store-procs counted.
	StoreProcs string `json:"store_procs,omitempty"`
	// The figures of the one round, or the median of each over the
	// rounds (counts summed; see summarise).
	benchFigures
	Machine map[string]string `json:"machine"`
	// Rounds holds every round when there were several.
	Rounds []benchRound `json:"rounds,omitempty"`
}

// benchFigures are what a load run measured (a round's own, or a report's
// medians). JSON inlines them into both benchReport and benchRound.
type benchFigures struct {
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
	ClientCPUUs float64 `json:"client_cpu_per_sig_us,omitempty"`
	// StoreCPUUs is the CPU per signature of the store's own processes on
	// this host (--store-procs, e.g. PostgreSQL's server and backends),
	// which ServerCPUUs leaves out; RatioCPUWithStore counts both.
	StoreCPUUs        float64 `json:"store_cpu_per_sig_us,omitempty"`
	RatioCPUWithStore float64 `json:"server_and_store_cpu_ratio_to_crypto,omitempty"`
	// Limit is the mean of the measurements before and after the load
	// (with several rounds, the median of the rounds' means); CryptoDrift
	// is how far apart those measurements were, relative to their mean.
	Limit         bench.CryptoLimit `json:"crypto_limit"`
	CryptoDrift   float64           `json:"crypto_drift"`
	RatioParallel float64           `json:"ratio_to_parallel_limit"`
	RatioCPU      float64           `json:"server_cpu_ratio_to_crypto,omitempty"`
	// MeanCommitBatch is the server's mean group-commit batch (signatures
	// per transaction) during the run, when /metrics reports it.
	MeanCommitBatch float64 `json:"mean_commit_batch,omitempty"`
	// Durability is what the server's commits survive, as it reports it:
	// "sqlite synchronous=FULL", "postgres synchronous_commit=on".
	Durability string `json:"durability,omitempty"`
	FirstError string `json:"first_error,omitempty"`
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
	dur := fs.Duration("duration", 10*time.Second, "how long to apply load (per round)")
	batch := fs.Int("batch", 0, "items per POST /v1/sign:batch (0: single POST /v1/sign)")
	docSize := fs.Int("doc-size", 256, "document size in bytes")
	keyStyle := fs.String("idempotency-keys", "uuidv7", "uuidv7 (time-ordered, what the client SDK sends) | uuidv4 (random)")
	storeProcs := fs.String("store-procs", "", "comma-separated command names of the store's processes on this host (e.g. postgres): their CPU per signature is reported and added to the server's (Linux)")
	limitDur := fs.Duration("crypto-duration", 2*time.Second, "how long to measure the raw crypto limit (each of single and all cores)")
	rounds := fs.Int("rounds", 1, "load runs, each between two measurements of the raw crypto limit; the report gives the median of each figure and every round")
	asJSON := fs.Bool("json", false, "print the report as JSON")
	if err := fs.Parse(args[1:]); err != nil {
		return err
	}
	if *rounds < 1 {
		return usageError("--rounds must be at least 1")
	}
	keyStyleV, err := bench.ParseKeyStyle(*keyStyle)
	if err != nil {
		return usageError("--idempotency-keys: %v", err)
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
	a, err := keys.ParseAlgorithm(alg)
	if err != nil {
		return err
	}
	measure := func(when string) (bench.CryptoLimit, error) {
		fmt.Fprintf(env.stderr, "measuring the raw %s signing limit %s (%v single core, %v all cores)...\n", alg, when, *limitDur, *limitDur)
		return bench.MeasureCryptoLimit(a, *limitDur)
	}
	// The raw limit is measured while the server is idle: first, and again
	// after each round once the server has finished the requests the
	// deadline cut off. A machine whose speed changes during the run (a
	// shared VM) shows as drift between the two.
	limit, err := measure("before the load")
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
	// One keep-alive connection per worker, each with its request encoded
	// once (see bench.SignConn for why not net/http and encoding/json).
	conns := make([]*bench.SignConn, *conc)
	for w := range conns {
		sc, err := bench.NewSignConn(*server, token, "bench-", keyStyleV,
			client.SignRequest{Key: *key, Format: client.Format(*format), Document: doc}, *batch)
		if err != nil {
			return err
		}
		defer sc.Close()
		conns[w] = sc
	}
	perReq := int64(max(*batch, 1))
	var procs []string
	if *storeProcs != "" {
		procs = strings.Split(*storeProcs, ",")
		if _, n, err := bench.NamedProcessesCPU(procs); err != nil {
			return fmt.Errorf("--store-procs: %w", err)
		} else if n == 0 {
			return usageError("--store-procs %s: no process of that name on this host", *storeProcs)
		}
	}
	storeCPU := func() (time.Duration, int, error) {
		if procs == nil {
			return 0, 0, nil
		}
		return bench.NamedProcessesCPU(procs)
	}
	var rs []benchRound
	for r := range *rounds {
		before := scrapeServer(ctx, *server)
		cpu0, cpuOK := bench.ProcessCPU()
		st0, _, stErr := storeCPU()
		var lat bench.Latencies
		ok, failed, firstErr, elapsed := bench.Load(ctx, *conc, *dur, &lat, func(ctx context.Context, w int, seq int64) error {
			return conns[w].Do(ctx)
		})
		cpu1, cpuOK1 := bench.ProcessCPU()
		after := waitServerIdle(context.WithoutCancel(ctx), *server)
		// The store works for the requests the deadline cut off too: read
		// its CPU over the same window as the server's.
		st1, stN, stErr1 := storeCPU()
		limitAfter, err := measure(fmt.Sprintf("after round %d of %d", r+1, *rounds))
		if err != nil {
			return err
		}
		rd := benchRound{benchFigures: benchFigures{DurationS: elapsed.Seconds(), Signatures: ok * perReq, Failed: failed,
			OpsPerS: float64(ok*perReq) / elapsed.Seconds(),
			P50Ms:   float64(lat.Quantile(0.50)) / 1e6, P99Ms: float64(lat.Quantile(0.99)) / 1e6},
			LimitBefore: limit, LimitAfter: limitAfter}
		if firstErr != nil {
			rd.FirstError = firstErr.Error()
		}
		if n := ok * perReq; cpuOK && cpuOK1 && n > 0 {
			rd.ClientCPUUs = float64(cpu1-cpu0) / float64(time.Microsecond) / float64(n)
		}
		if before.ok && after.ok && after.sigs > before.sigs {
			rd.ServerCPUUs = (after.cpu - before.cpu) / (after.sigs - before.sigs) * 1e6
			if procs != nil && stErr == nil && stErr1 == nil && stN > 0 {
				rd.StoreCPUUs = float64(st1-st0) / float64(time.Microsecond) / (after.sigs - before.sigs)
			}
		}
		rd.Durability = after.durability
		if nb := after.batches - before.batches; nb > 0 {
			rd.MeanCommitBatch = (after.commits - before.commits) / nb
		}
		rd.settle()
		rs = append(rs, rd)
		limit = limitAfter
	}
	rep := summarise(rs)
	rep.Server, rep.Key, rep.Algorithm, rep.Format, rep.Batch, rep.Concurrency = *server, *key, alg, *format, *batch, *conc
	rep.IdempotencyKeys, rep.StoreProcs = keyStyleV.String(), *storeProcs
	rep.Machine = machine()
	if *asJSON {
		b, _ := json.MarshalIndent(rep, "", "  ")
		fmt.Fprintln(env.stdout, string(b))
		return nil
	}
	printBenchReport(env.stdout, &rep)
	return nil
}

// benchRound is one load run and the crypto limit measured on each side
// of it. Ratios use the mean of the two limits.
type benchRound struct {
	benchFigures
	LimitBefore bench.CryptoLimit `json:"crypto_limit_before"`
	LimitAfter  bench.CryptoLimit `json:"crypto_limit_after"`
}

// settle derives the round's limit (the mean of the measurements on each
// side), the drift between them and the ratios.
func (r *benchRound) settle() {
	b, a := r.LimitBefore, r.LimitAfter
	r.Limit = bench.CryptoLimit{Algorithm: b.Algorithm, Cores: b.Cores,
		SingleCore: (b.SingleCore + a.SingleCore) / 2, AllCores: (b.AllCores + a.AllCores) / 2,
		CPUPerOpMicro: (b.CPUPerOpMicro + a.CPUPerOpMicro) / 2}
	if r.Limit.CPUPerOpMicro > 0 {
		r.CryptoDrift = math.Abs(a.CPUPerOpMicro-b.CPUPerOpMicro) / r.Limit.CPUPerOpMicro
	}
	if r.Limit.AllCores > 0 {
		r.RatioParallel = r.OpsPerS / r.Limit.AllCores
	}
	if r.ServerCPUUs > 0 && r.Limit.CPUPerOpMicro > 0 {
		r.RatioCPU = r.ServerCPUUs / r.Limit.CPUPerOpMicro
		if r.StoreCPUUs > 0 {
			r.RatioCPUWithStore = (r.ServerCPUUs + r.StoreCPUUs) / r.Limit.CPUPerOpMicro
		}
	}
}

// summarise reports one round as it is, and several as the median of each
// figure (signature counts summed), with every round attached.
func summarise(rs []benchRound) benchReport {
	med := func(f func(*benchRound) float64) float64 {
		v := make([]float64, len(rs))
		for i := range rs {
			v[i] = f(&rs[i])
		}
		sort.Float64s(v)
		if len(v)%2 == 1 {
			return v[len(v)/2]
		}
		return (v[len(v)/2-1] + v[len(v)/2]) / 2
	}
	rep := benchReport{benchFigures: benchFigures{
		DurationS:         med(func(r *benchRound) float64 { return r.DurationS }),
		OpsPerS:           med(func(r *benchRound) float64 { return r.OpsPerS }),
		P50Ms:             med(func(r *benchRound) float64 { return r.P50Ms }),
		P99Ms:             med(func(r *benchRound) float64 { return r.P99Ms }),
		ServerCPUUs:       med(func(r *benchRound) float64 { return r.ServerCPUUs }),
		ClientCPUUs:       med(func(r *benchRound) float64 { return r.ClientCPUUs }),
		StoreCPUUs:        med(func(r *benchRound) float64 { return r.StoreCPUUs }),
		RatioCPUWithStore: med(func(r *benchRound) float64 { return r.RatioCPUWithStore }),
		Limit: bench.CryptoLimit{Algorithm: rs[0].Limit.Algorithm, Cores: rs[0].Limit.Cores,
			SingleCore:    med(func(r *benchRound) float64 { return r.Limit.SingleCore }),
			AllCores:      med(func(r *benchRound) float64 { return r.Limit.AllCores }),
			CPUPerOpMicro: med(func(r *benchRound) float64 { return r.Limit.CPUPerOpMicro })},
		CryptoDrift:     med(func(r *benchRound) float64 { return r.CryptoDrift }),
		RatioParallel:   med(func(r *benchRound) float64 { return r.RatioParallel }),
		RatioCPU:        med(func(r *benchRound) float64 { return r.RatioCPU }),
		MeanCommitBatch: med(func(r *benchRound) float64 { return r.MeanCommitBatch }),
		Durability:      rs[len(rs)-1].Durability,
	}}
	for i := range rs {
		rep.Signatures += rs[i].Signatures
		rep.Failed += rs[i].Failed
		if rep.FirstError == "" {
			rep.FirstError = rs[i].FirstError
		}
	}
	if len(rs) > 1 {
		rep.Rounds = rs
	}
	return rep
}

// driftWarning is the crypto drift above which the report says that the
// machine's speed changed during the run.
const driftWarning = 0.10

func printBenchReport(w io.Writer, rep *benchReport) {
	fmt.Fprintf(w, "server        %s (key %s, %s, format %s, batch %d)\n", rep.Server, rep.Key, rep.Algorithm, rep.Format, rep.Batch)
	fmt.Fprintf(w, "load          %d concurrent clients for %.1fs", rep.Concurrency, rep.DurationS)
	if n := len(rep.Rounds); n > 1 {
		fmt.Fprintf(w, " per round, %d rounds (figures below are medians)", n)
	}
	fmt.Fprintln(w)
	fmt.Fprintf(w, "keys          idempotency keys %s\n", rep.IdempotencyKeys)
	if rep.Durability != "" {
		fmt.Fprintf(w, "durability    %s (what a 200 had survived)\n", rep.Durability)
	} else {
		fmt.Fprintf(w, "durability    not reported by the server\n")
	}
	for i, r := range rep.Rounds {
		fmt.Fprintf(w, "round %-7d %.0f/s, p50 %.2f ms, server %.1f µs, crypto %.1f µs (drift %.0f%%), %.1f%% of limit, %.2f×\n",
			i+1, r.OpsPerS, r.P50Ms, r.ServerCPUUs, r.Limit.CPUPerOpMicro, r.CryptoDrift*100, r.RatioParallel*100, r.RatioCPU)
	}
	fmt.Fprintf(w, "signatures    %d ok, %d failed\n", rep.Signatures, rep.Failed)
	fmt.Fprintf(w, "throughput    %.0f signatures/s\n", rep.OpsPerS)
	fmt.Fprintf(w, "latency       p50 %.2f ms, p99 %.2f ms (per request)\n", rep.P50Ms, rep.P99Ms)
	fmt.Fprintf(w, "crypto limit  %.0f/s single core, %.0f/s on %d cores (%.1f µs CPU per signature; before and after the load differ by %.0f%%)\n",
		rep.Limit.SingleCore, rep.Limit.AllCores, rep.Limit.Cores, rep.Limit.CPUPerOpMicro, rep.CryptoDrift*100)
	if rep.CryptoDrift > driftWarning {
		fmt.Fprintf(w, "WARNING       the raw crypto limit moved by %.0f%% across the load: this machine's speed changed during the run, so the ratios below are uncertain by as much (use --rounds and compare medians)\n", rep.CryptoDrift*100)
	}
	fmt.Fprintf(w, "ratio         %.1f%% of the parallel crypto limit\n", rep.RatioParallel*100)
	if rep.ServerCPUUs > 0 {
		fmt.Fprintf(w, "server CPU    %.1f µs per durable signature = %.2f× the signature's own CPU\n", rep.ServerCPUUs, rep.RatioCPU)
	} else {
		fmt.Fprintf(w, "server CPU    not available (could not read the server's /metrics)\n")
	}
	if rep.StoreCPUUs > 0 {
		fmt.Fprintf(w, "store CPU     %.1f µs per signature in the store's processes (%s); server + store = %.2f× the signature's own CPU\n",
			rep.StoreCPUUs, rep.StoreProcs, rep.RatioCPUWithStore)
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
}

// waitServerIdle scrapes the server until its signature count stops
// moving (the requests the load's deadline cut off have finished), for at
// most 5 s, and returns the last scrape.
func waitServerIdle(ctx context.Context, server string) serverCounters {
	c := scrapeServer(ctx, server)
	for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); {
		time.Sleep(250 * time.Millisecond)
		n := scrapeServer(ctx, server)
		if !n.ok || n.sigs == c.sigs {
			return c
		}
		c = n
	}
	return c
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
