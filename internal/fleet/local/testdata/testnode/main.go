// Command testnode stands in for a Countersign node in fleet/local's tests:
// it serves /readyz, /whoami and /slow on --listen and, on SIGTERM, stops
// accepting, finishes in-flight requests and exits 0.
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"net/http"
	"os"
	"os/signal"
	"sync/atomic"
	"syscall"
	"time"
)

func main() {
	listen := flag.String("listen", "", "address to serve on")
	readyAfter := flag.Duration("ready-after", 0, "answer /readyz with 503 for this long after start")
	ignoreTerm := flag.Bool("ignore-term", false, "ignore SIGTERM (to test SIGKILL escalation)")
	flag.Parse()
	start := time.Now()
	var inFlight atomic.Int64

	mux := http.NewServeMux()
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, r *http.Request) {
		if time.Since(start) < *readyAfter {
			http.Error(w, "starting", http.StatusServiceUnavailable)
			return
		}
		fmt.Fprintln(w, "ok")
	})
	mux.HandleFunc("GET /whoami", func(w http.ResponseWriter, r *http.Request) {
		json.NewEncoder(w).Encode(map[string]any{
			"pid": os.Getpid(), "listen": *listen, "args": os.Args[1:],
			"release": os.Getenv("COUNTERSIGN_RELEASE"), "instance": os.Getenv("COUNTERSIGN_INSTANCE"),
			"extra": os.Getenv("TESTNODE_EXTRA"), "secret": os.Getenv("TESTNODE_SECRET"), "in_flight": inFlight.Load(),
		})
	})
	mux.HandleFunc("GET /slow", func(w http.ResponseWriter, r *http.Request) {
		inFlight.Add(1)
		defer inFlight.Add(-1)
		d, _ := time.ParseDuration(r.URL.Query().Get("d"))
		time.Sleep(d)
		fmt.Fprintln(w, "done")
	})
	srv := &http.Server{Addr: *listen, Handler: mux}

	sigs := make(chan os.Signal, 1)
	if *ignoreTerm {
		signal.Ignore(syscall.SIGTERM)
	} else {
		signal.Notify(sigs, syscall.SIGTERM)
	}
	shutdown := make(chan struct{})
	go func() {
		defer close(shutdown)
		<-sigs
		fmt.Fprintf(os.Stderr, "testnode: SIGTERM, %d in flight\n", inFlight.Load())
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		srv.Shutdown(ctx)
	}()
	fmt.Fprintf(os.Stderr, "testnode: listening on %s\n", *listen)
	if err := srv.ListenAndServe(); err != http.ErrServerClosed {
		fmt.Fprintln(os.Stderr, "testnode:", err)
		os.Exit(1)
	}
	<-shutdown // ListenAndServe returns at once; in-flight requests end here
	fmt.Fprintln(os.Stderr, "testnode: shutdown complete")
}
