// Command demo-app is the small HTTP server of the kubestrap demo: it
// answers every request with a line naming the pod and node it runs on, so a
// request over the Service shows where the pod landed, and /burn spends CPU
// so that its HorizontalPodAutoscaler has something to scale on.
//
// The same binary is the demo's client, so that the checks need no other
// image:
//
//	demo-app                                serve on :8080 (LISTEN_ADDR)
//	demo-app fetch URL                      GET URL once (retrying for up to 60 s) and print the answer
//	demo-app load URL DURATION WORKERS      GET URL from WORKERS loops (each pausing 100 ms between
//	                                        requests) for DURATION, then stop
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log"
	"net/http"
	"os"
	"os/signal"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// maxBurn caps the CPU time one /burn request may ask for.
const maxBurn = time.Second

func main() {
	if err := run(os.Args[1:]); err != nil {
		fmt.Fprintln(os.Stderr, "demo-app:", err)
		os.Exit(1)
	}
}

func run(args []string) error {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	defer stop()
	if len(args) == 0 {
		return serve(ctx)
	}
	switch {
	case args[0] == "fetch" && len(args) == 2:
		body, err := fetchRetrying(ctx, args[1], 60*time.Second)
		if err != nil {
			return err
		}
		fmt.Print(body)
		return nil
	case args[0] == "load" && len(args) == 4:
		d, err := time.ParseDuration(args[2])
		if err != nil {
			return fmt.Errorf("load: duration %q: %w", args[2], err)
		}
		workers, err := strconv.Atoi(args[3])
		if err != nil || workers < 1 || workers > 64 {
			return fmt.Errorf("load: workers %q: want 1 to 64", args[3])
		}
		ok, failed := load(ctx, args[1], d, workers)
		fmt.Printf("load: %d requests answered, %d failed in %s\n", ok, failed, d)
		return nil
	}
	return errors.New("usage: demo-app | demo-app fetch URL | demo-app load URL DURATION WORKERS")
}

func serve(ctx context.Context) error {
	addr := ":8080"
	if a := os.Getenv("LISTEN_ADDR"); a != "" {
		addr = a
	}
	pod, node := os.Getenv("POD_NAME"), os.Getenv("NODE_NAME")
	srv := &http.Server{Addr: addr, Handler: handler(pod, node), ReadHeaderTimeout: 5 * time.Second}
	go func() {
		<-ctx.Done()
		sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = srv.Shutdown(sctx)
	}()
	log.Printf("demo-app listening on %s (pod %s, node %s)", addr, pod, node)
	if err := srv.ListenAndServe(); !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}

// handler serves /healthz, /burn?ms=N (N ms of CPU, at most maxBurn) and
// everything else with the pod's greeting.
func handler(pod, node string) http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, _ *http.Request) { fmt.Fprintln(w, "ok") })
	mux.HandleFunc("/burn", func(w http.ResponseWriter, r *http.Request) {
		ms, err := strconv.Atoi(r.URL.Query().Get("ms"))
		if err != nil || ms < 0 {
			http.Error(w, "burn needs ?ms=N (milliseconds of CPU, N >= 0)", http.StatusBadRequest)
			return
		}
		d := min(time.Duration(ms)*time.Millisecond, maxBurn)
		n := burn(d)
		fmt.Fprintf(w, "burned %s (%d rounds) in pod=%s node=%s\n", d, n, pod, node)
	})
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "hello from kubestrap demo-app: pod=%s node=%s path=%s\n", pod, node, r.URL.Path)
	})
	return mux
}

// burn keeps one CPU busy for d and returns how many rounds it counted.
func burn(d time.Duration) uint64 {
	var n uint64
	for end := time.Now().Add(d); time.Now().Before(end); {
		for i := 0; i < 1000; i++ {
			n++
		}
	}
	return n
}

var client = &http.Client{Timeout: 10 * time.Second}

func fetch(ctx context.Context, url string) (string, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return "", err
	}
	resp, err := client.Do(req)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return "", err
	}
	if resp.StatusCode != http.StatusOK {
		return "", fmt.Errorf("GET %s: %s: %s", url, resp.Status, b)
	}
	return string(b), nil
}

// fetchRetrying GETs url until it answers 200 or within expires.
func fetchRetrying(ctx context.Context, url string, within time.Duration) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, within)
	defer cancel()
	for {
		body, err := fetch(ctx, url)
		if err == nil {
			return body, nil
		}
		log.Printf("fetch %s: %v", url, err)
		select {
		case <-ctx.Done():
			return "", fmt.Errorf("fetch %s: no answer within %s: %w", url, within, err)
		case <-time.After(time.Second):
		}
	}
}

// loadPause is each load loop's pause between requests: a steady trickle,
// not a flood that would starve a small cluster.
const loadPause = 100 * time.Millisecond

// load GETs url from workers loops until d has passed (or ctx ends) and
// counts the answers.
func load(ctx context.Context, url string, d time.Duration, workers int) (ok, failed int64) {
	ctx, cancel := context.WithTimeout(ctx, d)
	defer cancel()
	var wg sync.WaitGroup
	var nOK, nFailed atomic.Int64
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for ctx.Err() == nil {
				if _, err := fetch(ctx, url); err != nil {
					if ctx.Err() == nil {
						nFailed.Add(1)
						time.Sleep(loadPause)
					}
					continue
				}
				nOK.Add(1)
				select {
				case <-ctx.Done():
				case <-time.After(loadPause):
				}
			}
		}()
	}
	wg.Wait()
	return nOK.Load(), nFailed.Load()
}
