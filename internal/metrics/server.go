package metrics

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"strings"
	"time"

	"go.uber.org/zap"

	"github.com/kubestrap/kubestrap/internal/progress"
)

// Timeouts of the listener: a scraper or health checker that is slow to send
// its request or read the answer is cut off.
const (
	readHeaderTimeout = 5 * time.Second
	readTimeout       = 10 * time.Second
	writeTimeout      = 10 * time.Second
	idleTimeout       = time.Minute
	shutdownTimeout   = 5 * time.Second
)

// ReadyFunc reports whether the role is in its steady state and says why in
// words.
type ReadyFunc func(ctx context.Context) (ready bool, why string)

// Server serves /metrics, /healthz and /readyz on one address.
type Server struct {
	// Address is host:port (config metrics.address).
	Address string
	Metrics *Metrics
	// Stale returns the parts whose promised progress is overdue
	// (progress.Board.Stale: the watchdog's signal).
	Stale func() []string
	// Ready is the /readyz check.
	Ready ReadyFunc
	Log   *zap.Logger
	// OnListen, when set, hears the outcome of the listen: nil once the
	// listener is up, the error when it could not listen or stopped
	// serving.
	OnListen func(err error)

	// listening, in tests, hears the bound address.
	listening func(net.Addr)
}

// Handler returns the mux of the three endpoints.
func (s *Server) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.Handle("/metrics", s.Metrics.Handler())
	mux.HandleFunc("/healthz", s.healthz)
	mux.HandleFunc("/readyz", s.readyz)
	return mux
}

func plain(w http.ResponseWriter, status int, body string) {
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	_, _ = fmt.Fprintln(w, body)
}

// healthz answers 200 while every part of the agent keeps its promise of
// progress, 503 naming the overdue parts otherwise. It makes no remote call.
func (s *Server) healthz(w http.ResponseWriter, _ *http.Request) {
	if stale := s.Stale(); len(stale) > 0 {
		plain(w, http.StatusServiceUnavailable, fmt.Sprintf(
			"unhealthy: no progress from %s within its promised time (the systemd watchdog is not fed)", strings.Join(stale, ", ")))
		return
	}
	plain(w, http.StatusOK, "ok: every part of the agent is making progress")
}

// readyz answers 200 in the role's steady state, 503 otherwise; the body
// says why.
func (s *Server) readyz(w http.ResponseWriter, r *http.Request) {
	ok, why := s.Ready(r.Context())
	if !ok {
		plain(w, http.StatusServiceUnavailable, "not ready: "+why)
		return
	}
	plain(w, http.StatusOK, "ready: "+why)
}

// Run is a supervised part (supervisor.RunFunc): it serves until ctx ends,
// then shuts the listener down. The listener is not watched by the
// watchdog: hb is taken off the board at once. When it cannot listen (the
// port is taken, the address is not this node's) or stops serving, it logs
// the error, tells OnListen, and idles until ctx ends: the agent's work does
// not depend on its metrics.
func (s *Server) Run(ctx context.Context, hb *progress.Heartbeat) error {
	hb.Done()
	log := s.Log
	if log == nil {
		log = zap.NewNop()
	}
	report := func(err error) {
		if s.OnListen != nil {
			s.OnListen(err)
		}
	}
	var lc net.ListenConfig
	ln, err := lc.Listen(ctx, "tcp", s.Address)
	if err != nil {
		err = fmt.Errorf("listen on %s for /metrics, /healthz and /readyz: %w", s.Address, err)
		log.Error("cannot serve metrics and health endpoints; the agent goes on without them", zap.Error(err))
		report(err)
		<-ctx.Done()
		return ctx.Err()
	}
	if s.listening != nil {
		s.listening(ln.Addr())
	}
	srv := &http.Server{
		Handler:           s.Handler(),
		ReadHeaderTimeout: readHeaderTimeout,
		ReadTimeout:       readTimeout,
		WriteTimeout:      writeTimeout,
		IdleTimeout:       idleTimeout,
		MaxHeaderBytes:    16 << 10,
		BaseContext:       func(net.Listener) context.Context { return ctx },
		ErrorLog:          zap.NewStdLog(log.Named("http")),
	}
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ln) }()
	log.Info("serving /metrics, /healthz and /readyz", zap.String("address", ln.Addr().String()))
	report(nil)
	select {
	case err := <-served:
		err = fmt.Errorf("serve /metrics, /healthz and /readyz on %s: %w", s.Address, err)
		log.Error("metrics and health endpoints stopped; the agent goes on without them", zap.Error(err))
		report(err)
		<-ctx.Done()
		return ctx.Err()
	case <-ctx.Done():
	}
	sctx, cancel := context.WithTimeout(context.Background(), shutdownTimeout)
	defer cancel()
	if err := srv.Shutdown(sctx); err != nil {
		_ = srv.Close()
	}
	if err := <-served; err != nil && !errors.Is(err, http.ErrServerClosed) {
		log.Warn("metrics listener ended with an error", zap.Error(err))
	}
	return ctx.Err()
}
