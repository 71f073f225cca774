package bench

import (
	"bufio"
	"context"
	"encoding/base64"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/countersign/countersign/internal/api"
	"github.com/countersign/countersign/internal/keys"
	"github.com/countersign/countersign/internal/store/postgres/pgtest"
)

var floorDuration = flag.Duration("floor.duration", 8*time.Second, "BenchmarkFloor: load per mode and shape")

func TestMain(m *testing.M) {
	if mode := os.Getenv(floorEnvMode); mode != "" {
		if err := runFloorServer(mode, os.Getenv(floorEnvStore)); err != nil {
			fmt.Fprintln(os.Stderr, "floor server:", err)
			os.Exit(1)
		}
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// floorProc is a floor server running as a child of the test binary, so
// that its CPU is counted apart from the load generator's.
type floorProc struct {
	cmd    *exec.Cmd
	stdin  io.WriteCloser
	url    string
	pubPEM []byte
}

func startFloor(tb testing.TB, mode, storeURL string) *floorProc {
	tb.Helper()
	exe, err := os.Executable()
	if err != nil {
		tb.Fatal(err)
	}
	cmd := exec.Command(exe, "-test.run=^$")
	cmd.Env = append(os.Environ(), floorEnvMode+"="+mode, floorEnvStore+"="+storeURL)
	cmd.Stderr = os.Stderr
	stdin, err := cmd.StdinPipe()
	if err != nil {
		tb.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		tb.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		tb.Fatal(err)
	}
	p := &floorProc{cmd: cmd, stdin: stdin}
	tb.Cleanup(func() {
		stdin.Close() // the server stops when its stdin closes
		if err := cmd.Wait(); err != nil {
			tb.Errorf("floor server (%s): %v", mode, err)
		}
	})
	line, err := bufio.NewReader(stdout).ReadString('\n')
	if err != nil {
		tb.Fatalf("floor server (%s) did not start: %v", mode, err)
	}
	f := strings.Fields(line)
	if len(f) != 3 || f[0] != "listening" {
		tb.Fatalf("floor server (%s) said %q", mode, line)
	}
	p.url = "http://" + f[1]
	if p.pubPEM, err = base64.StdEncoding.DecodeString(f[2]); err != nil {
		tb.Fatal(err)
	}
	return p
}

// cpu is the server's CPU time so far (user + system, from /proc).
func (p *floorProc) cpu(tb testing.TB) time.Duration {
	stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", p.cmd.Process.Pid))
	if err != nil {
		tb.Fatal(err)
	}
	t, err := statCPUTicks(stat)
	if err != nil {
		tb.Fatal(err)
	}
	return time.Duration(t) * time.Second / clockTicks
}

// count is how many signatures the server has answered.
func (p *floorProc) count(tb testing.TB) int64 {
	resp, err := http.Get(p.url + "/count")
	if err != nil {
		tb.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		tb.Fatal(err)
	}
	n, err := strconv.ParseInt(string(b), 10, 64)
	if err != nil {
		tb.Fatal(err)
	}
	return n
}

// floorStore returns the store argument for a durable mode: a fresh SQLite
// file, or a fresh PostgreSQL schema (dropped afterwards).
func floorStore(tb testing.TB, mode string) string {
	switch mode {
	case "sqlite":
		return filepath.Join(tb.TempDir(), "floor.db")
	case "postgres":
		return pgtest.SchemaURL(tb, "floor")
	}
	return ""
}

var floorModes = []string{"http", "sign", "sqlite", "postgres"}

// TestFloorServers runs every floor mode briefly through the load
// generator and checks what it answers: signatures that verify, and for
// the durable modes, every answered signature counted.
func TestFloorServers(t *testing.T) {
	if testing.Short() {
		t.Skip("starts four servers")
	}
	for _, mode := range floorModes {
		t.Run(mode, func(t *testing.T) {
			p := startFloor(t, mode, floorStore(t, mode))
			req := api.SignRequest{Key: "default", Format: "raw", Document: []byte("floor document")}
			for _, batch := range []int{0, 10} {
				sc, err := NewSignConn(p.url, floorToken, "floor-", KeysUUIDv7, req, batch)
				if err != nil {
					t.Fatal(err)
				}
				defer sc.Close()
				for range 5 {
					if err := sc.Do(t.Context()); err != nil {
						t.Fatalf("batch=%d: %v", batch, err)
					}
				}
				if batch == 0 && mode != "http" {
					if err := checkFloorSignature(sc.Body(), p.pubPEM); err != nil {
						t.Fatalf("signature: %v\n%s", err, sc.Body())
					}
				}
			}
			if n := p.count(t); n != 5+50 {
				t.Fatalf("server counted %d signatures, want 55", n)
			}
			sc, err := NewSignConn(p.url, "wrong-token", "floor-", KeysUUIDv7, req, 0)
			if err != nil {
				t.Fatal(err)
			}
			defer sc.Close()
			if err := sc.Do(t.Context()); err == nil {
				t.Fatal("a wrong token was accepted")
			}
		})
	}
}

// BenchmarkFloor measures the floor modes as `countersign bench sign`
// measures a node: closed-loop load (64 single signs, or 8 batches of 100),
// the server's CPU per signature, and the same ratios against the raw
// ecdsa-p256 limit measured in the same run. Run it once per mode:
//
//	go test -run '^$' -bench Floor -benchtime 1x ./internal/bench/
func BenchmarkFloor(b *testing.B) {
	limit, err := MeasureCryptoLimit(keys.ECDSAP256, 2*time.Second)
	if err != nil {
		b.Fatal(err)
	}
	shapes := []struct {
		name         string
		batch, conns int
	}{{"single_c64", 0, 64}, {"batch100_c8", 100, 8}}
	for _, shape := range shapes {
		for _, mode := range floorModes {
			b.Run(shape.name+"/"+mode, func(b *testing.B) {
				p := startFloor(b, mode, floorStore(b, mode))
				req := api.SignRequest{Key: "default", Format: "raw", Document: make([]byte, 256)}
				conns := make([]*SignConn, shape.conns)
				for i := range conns {
					sc, err := NewSignConn(p.url, floorToken, "floor-", KeysUUIDv7, req, shape.batch)
					if err != nil {
						b.Fatal(err)
					}
					defer sc.Close()
					conns[i] = sc
				}
				// PostgreSQL runs beside the server on the same cores: its
				// processes' CPU is counted too, as bench sign --store-procs
				// does.
				storeCPU := func() time.Duration {
					if mode != "postgres" {
						return 0
					}
					d, _, err := NamedProcessesCPU([]string{"postgres"})
					if err != nil {
						b.Fatal(err)
					}
					return d
				}
				// sigs counts answered signatures (the rate); made, every
				// signature the server made, including those whose answers
				// the deadline cut off, which the CPU is divided by.
				var secs, sigs, made, cpuUS, storeUS float64
				for b.Loop() {
					n0, c0, s0 := p.count(b), p.cpu(b), storeCPU()
					var lat Latencies
					ok, failed, firstErr, elapsed := Load(b.Context(), len(conns), *floorDuration, &lat, func(ctx context.Context, w int, _ int64) error {
						return conns[w].Do(ctx)
					})
					if failed > 0 {
						b.Fatalf("%d requests failed: %v", failed, firstErr)
					}
					// Let the requests the deadline cut off finish: the CPU
					// they cost is counted, and so are their signatures.
					n1 := p.count(b)
					for range 50 {
						time.Sleep(20 * time.Millisecond)
						if n := p.count(b); n == n1 {
							break
						} else {
							n1 = n
						}
					}
					c1, s1 := p.cpu(b), storeCPU()
					secs += elapsed.Seconds()
					sigs += float64(ok * int64(max(shape.batch, 1)))
					made += float64(n1 - n0)
					cpuUS += float64(c1-c0) / float64(time.Microsecond)
					storeUS += float64(s1-s0) / float64(time.Microsecond)
				}
				rate := sigs / secs
				perSig := cpuUS / made
				b.ReportMetric(rate, "sigs/s")
				b.ReportMetric(perSig, "server-µs/sig")
				b.ReportMetric(perSig/limit.CPUPerOpMicro, "x-crypto")
				b.ReportMetric(100*rate/limit.AllCores, "%-of-limit")
				if mode == "postgres" {
					b.ReportMetric(storeUS/made, "store-µs/sig")
					b.ReportMetric((cpuUS+storeUS)/made/limit.CPUPerOpMicro, "x-crypto-with-store")
				}
			})
		}
	}
}
