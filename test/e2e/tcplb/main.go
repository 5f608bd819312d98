// Command tcplb stands in for the internal Network Load Balancer in front of
// the control planes in the HA end-to-end run (make e2e-ha): it listens on
// one TCP address, health-checks each backend the way the NLB's target
// group does (HTTPS GET /readyz, any certificate: the check proves the API
// server is ready, not who it is), and forwards each connection to a
// healthy backend, round robin; with no healthy backend it tries them all
// (an NLB fails open too). It logs every change of a backend's health.
//
//	tcplb -listen 10.200.0.2:6443 -backends 10.200.0.10:6443,10.200.0.8:6443
package main

import (
	"context"
	"crypto/tls"
	"errors"
	"flag"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

func main() {
	if err := run(); err != nil {
		log.Printf("tcplb: %v", err)
		os.Exit(1)
	}
}

type backend struct {
	addr    string
	healthy atomic.Bool
}

func run() error {
	listen := flag.String("listen", "", "address to listen on (host:port)")
	list := flag.String("backends", "", "comma-separated backend addresses (host:port)")
	interval := flag.Duration("interval", 2*time.Second, "health check interval")
	flag.Parse()
	if *listen == "" || *list == "" {
		return errors.New("-listen and -backends are required")
	}
	var backends []*backend
	for _, a := range strings.Split(*list, ",") {
		if a = strings.TrimSpace(a); a != "" {
			backends = append(backends, &backend{addr: a})
		}
	}
	ln, err := net.Listen("tcp", *listen)
	if err != nil {
		return err
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	go func() { <-ctx.Done(); _ = ln.Close() }()
	for _, b := range backends {
		go check(ctx, b, *interval)
	}
	log.Printf("tcplb: listening on %s for %d backends", *listen, len(backends))
	var next atomic.Uint64
	for {
		c, err := ln.Accept()
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return err
		}
		go forward(c, pick(backends, next.Add(1)))
	}
}

// pick returns the backends to try for one connection, in order: the
// healthy ones from the round-robin position, then (failing open) the rest.
func pick(backends []*backend, n uint64) []string {
	var healthy, other []string
	for i := range backends {
		b := backends[(int(n)+i)%len(backends)]
		if b.healthy.Load() {
			healthy = append(healthy, b.addr)
		} else {
			other = append(other, b.addr)
		}
	}
	if len(healthy) > 0 {
		return healthy
	}
	return other
}

// forward connects c to the first of addrs that answers and copies both
// ways until either side closes.
func forward(c net.Conn, addrs []string) {
	defer c.Close()
	var up net.Conn
	for _, a := range addrs {
		var err error
		if up, err = net.DialTimeout("tcp", a, 2*time.Second); err == nil {
			break
		}
	}
	if up == nil {
		return
	}
	defer up.Close()
	var wg sync.WaitGroup
	wg.Add(2)
	pipe := func(dst, src net.Conn) {
		defer wg.Done()
		_, _ = io.Copy(dst, src)
		if tc, ok := dst.(*net.TCPConn); ok {
			_ = tc.CloseWrite()
		}
	}
	go pipe(up, c)
	go pipe(c, up)
	wg.Wait()
}

// check probes b every interval: healthy after 2 successes in a row,
// unhealthy after 2 failures (an NLB uses 3 and 10 s; shorter here).
func check(ctx context.Context, b *backend, interval time.Duration) {
	client := &http.Client{Timeout: 2 * time.Second, Transport: &http.Transport{
		TLSClientConfig:   &tls.Config{InsecureSkipVerify: true}, //nolint:gosec // a health check, as the NLB's
		DisableKeepAlives: true,
	}}
	ok, bad := 0, 0
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		err := probe(ctx, client, b.addr)
		if err == nil {
			ok, bad = ok+1, 0
		} else {
			ok, bad = 0, bad+1
		}
		switch {
		case ok == 2 && !b.healthy.Load():
			b.healthy.Store(true)
			log.Printf("tcplb: %s healthy", b.addr)
		case bad == 2 && b.healthy.Load():
			b.healthy.Store(false)
			log.Printf("tcplb: %s unhealthy: %v", b.addr, err)
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

func probe(ctx context.Context, client *http.Client, addr string) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "https://"+addr+"/readyz", nil)
	if err != nil {
		return err
	}
	resp, err := client.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	_, _ = io.Copy(io.Discard, resp.Body)
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("/readyz answered %d", resp.StatusCode)
	}
	return nil
}
