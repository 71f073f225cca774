package main

import (
	"bytes"
	"encoding/json"
	"math"
	"strings"
	"testing"

	"github.com/countersign/countersign/internal/bench"
)

func limitOf(cpuUs, all float64) bench.CryptoLimit {
	return bench.CryptoLimit{Algorithm: "ecdsa-p256", Cores: 2, SingleCore: 1e6 / cpuUs, AllCores: all, CPUPerOpMicro: cpuUs}
}

// A round's ratios use the mean of the limits measured on each side of
// its load, and the drift says how far apart they were.
func TestBenchRoundSettle(t *testing.T) {
	r := benchRound{benchFigures: benchFigures{OpsPerS: 6000, ServerCPUUs: 200}, LimitBefore: limitOf(40, 40000), LimitAfter: limitOf(60, 30000)}
	r.settle()
	if r.Limit.CPUPerOpMicro != 50 || r.Limit.AllCores != 35000 {
		t.Fatalf("limit = %+v, want the mean of before and after (50 µs, 35000/s)", r.Limit)
	}
	if math.Abs(r.CryptoDrift-0.4) > 1e-9 {
		t.Errorf("drift = %v, want 0.4 (20 µs apart over a 50 µs mean)", r.CryptoDrift)
	}
	if r.RatioCPU != 4 || math.Abs(r.RatioParallel-6000.0/35000) > 1e-12 {
		t.Errorf("ratios = %v×, %v; want 4× and 6000/35000", r.RatioCPU, r.RatioParallel)
	}
	if r.RatioCPUWithStore != 0 {
		t.Errorf("ratio with store = %v without store CPU, want 0 (not measured)", r.RatioCPUWithStore)
	}
	// The store's own processes' CPU (--store-procs) adds to the server's.
	r.StoreCPUUs = 50
	r.settle()
	if r.RatioCPUWithStore != 5 || r.RatioCPU != 4 {
		t.Errorf("with 50 µs of store CPU: %v× with store, %v× without; want 5× and 4×", r.RatioCPUWithStore, r.RatioCPU)
	}
}

// Several rounds report the median of each figure, the summed counts and
// every round; the warning appears when the limit drifted.
func TestBenchSummariseRounds(t *testing.T) {
	var rs []benchRound
	for i, ops := range []float64{5000, 9000, 6000} {
		r := benchRound{benchFigures: benchFigures{OpsPerS: ops, Signatures: int64(ops), Failed: int64(i), ServerCPUUs: 100 + 50*float64(i),
			Durability: "sqlite synchronous=FULL"}, LimitBefore: limitOf(50, 40000), LimitAfter: limitOf([]float64{50, 52, 70}[i], 40000)}
		if i == 1 {
			r.FirstError = "boom"
		}
		r.settle()
		rs = append(rs, r)
	}
	rep := summarise(rs)
	if rep.OpsPerS != 6000 || rep.ServerCPUUs != 150 || rep.Signatures != 20000 || rep.Failed != 3 {
		t.Fatalf("summary = %.0f/s, %.0f µs, %d ok, %d failed; want medians 6000/s and 150 µs, sums 20000 and 3",
			rep.OpsPerS, rep.ServerCPUUs, rep.Signatures, rep.Failed)
	}
	if len(rep.Rounds) != 3 || rep.FirstError != "boom" || rep.Durability != "sqlite synchronous=FULL" {
		t.Fatalf("rounds %d, first error %q, durability %q", len(rep.Rounds), rep.FirstError, rep.Durability)
	}
	if want := 2.0 / 51; math.Abs(rep.CryptoDrift-want) > 1e-9 {
		t.Errorf("median drift = %v, want %v", rep.CryptoDrift, want)
	}
	// The JSON keeps its flat shape: figures at the top level and in each
	// round, beside the round's own limits.
	var flat struct {
		OpsPerS float64 `json:"ops_per_s"`
		Rounds  []struct {
			OpsPerS     float64           `json:"ops_per_s"`
			LimitBefore bench.CryptoLimit `json:"crypto_limit_before"`
		} `json:"rounds"`
	}
	if b, err := json.Marshal(rep); err != nil || json.Unmarshal(b, &flat) != nil {
		t.Fatalf("JSON round trip: %v", err)
	}
	if flat.OpsPerS != 6000 || len(flat.Rounds) != 3 || flat.Rounds[1].OpsPerS != 9000 || flat.Rounds[1].LimitBefore.CPUPerOpMicro != 50 {
		t.Errorf("JSON shape: %+v", flat)
	}
	var out bytes.Buffer
	printBenchReport(&out, &rep)
	for _, want := range []string{"3 rounds (figures below are medians)", "round 2", "throughput    6000 signatures/s", "first error   boom"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("report lacks %q:\n%s", want, out.String())
		}
	}
	if strings.Contains(out.String(), "WARNING") {
		t.Errorf("a 4%% median drift is below the warning threshold, yet:\n%s", out.String())
	}
	one := summarise(rs[2:])
	out.Reset()
	printBenchReport(&out, &one)
	if one.Rounds != nil || !strings.Contains(out.String(), "WARNING       the raw crypto limit moved by 33%") {
		t.Errorf("one round with 20 µs drift over a 60 µs mean: rounds %v, report:\n%s", one.Rounds, out.String())
	}
}
