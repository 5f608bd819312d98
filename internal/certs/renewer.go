package certs

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"time"

	"go.uber.org/zap"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/utils/clock"
	"sigs.k8s.io/yaml"

	"github.com/kubestrap/kubestrap/internal/backoff"
	"github.com/kubestrap/kubestrap/internal/kubeadm"
	"github.com/kubestrap/kubestrap/internal/progress"
)

// Defaults of the Renewer's knobs.
const (
	DefaultInterval      = 24 * time.Hour
	DefaultThreshold     = 30 * 24 * time.Hour
	DefaultStopTimeout   = 2 * time.Minute
	DefaultStartTimeout  = 5 * time.Minute
	DefaultVerifyTimeout = 2 * time.Minute
	DefaultPollInterval  = 2 * time.Second
	// CallTimeout bounds one observation (a /proc scan, a probe, a TLS dial).
	CallTimeout = 10 * time.Second
)

// Components are the static control-plane pods restarted after a renewal,
// in this order: the API server first (it serves the certificate the
// renewal is verified with), etcd last (while it restarts the API server
// cannot serve).
var Components = []string{"kube-apiserver", "kube-controller-manager", "kube-scheduler", "etcd"}

// Kubeadm renews the certificates (a *kubeadm.Runner).
type Kubeadm interface {
	CertsRenewAll(ctx context.Context) error
}

// Lock makes renewals one node at a time in an HA control plane: the
// Renewer holds it from `kubeadm certs renew all` until the restarted API
// server was verified. Nil means no lock (a single control-plane node).
// An HA implementation (a Lease in kube-system, or an S3 object written
// with If-None-Match: *) must expire on its own, so that a node that dies
// while holding it does not block the others for ever.
type Lock interface {
	Acquire(ctx context.Context) (release func(), err error)
}

// Observer tells the Renewer what the kubelet did with a static pod.
type Observer interface {
	// Instance identifies the running instance of component: it changes
	// when the kubelet stops and starts it again, and is "" while none runs.
	Instance(ctx context.Context, component string) (string, error)
	// Ready returns nil when component serves again.
	Ready(ctx context.Context, component string) error
}

// Renewer checks the certificates at start and every Interval, and renews
// them when the earliest non-CA certificate expires within Threshold:
// `kubeadm certs renew all`, then each static control-plane pod restarted
// in turn (its manifest moved out of the manifests directory until the
// kubelet stopped it, then back until it runs and is ready again: the way
// the kubeadm documentation gives), then a check that the API server serves
// the renewed pki/apiserver.crt. Failures are retried with backoff.
//
// kubeadm also renews the client certificates embedded in admin.conf and
// the other kubeconfig files; the old ones stay valid until they expire,
// so whatever reads admin.conf must read it again after a renewal (the
// Renewer itself reads every file afresh each time).
type Renewer struct {
	Paths   kubeadm.Paths
	Kubeadm Kubeadm
	// Observer watches the static pods (default: a ProcObserver on Paths).
	Observer Observer
	// Lock, when set, is held for a whole renewal (HA; see Lock).
	Lock     Lock
	Clock    clock.Clock
	Log      *zap.Logger
	Progress *progress.Heartbeat

	// Interval between checks (default DefaultInterval).
	Interval time.Duration
	// Threshold: renew when the earliest certificate expires within it
	// (default DefaultThreshold).
	Threshold time.Duration
	// Backoff spaces retries after a failed renewal (default 1m doubling to 1h).
	Backoff *backoff.Backoff
	// StopTimeout bounds the wait for the kubelet to stop a pod whose
	// manifest was moved out; StartTimeout the wait for it to run and be
	// ready again; VerifyTimeout the wait for the API server to serve the
	// new certificate; PollInterval spaces the observations.
	StopTimeout, StartTimeout, VerifyTimeout, PollInterval time.Duration
	// APIServerAddress is the host:port the served certificate is read
	// from (default: the advertise address kubeadm wrote into the
	// kube-apiserver manifest, else the server of admin.conf).
	APIServerAddress string
	// HoldDir is where a manifest waits while its pod is stopped (default
	// <Paths.Dir>/tmp/kubestrap-restart, on the same file system as the
	// manifests so that moves are renames). The kubelet reads every file in
	// the manifests directory, so a manifest cannot wait next to it.
	HoldDir string

	// OnChecked hears the expiry of every certificate read, after each check.
	OnChecked func(expiries map[string]time.Time)
	// OnRenewed hears about a completed renewal (restarts and verification
	// included): the earliest non-CA expiry before and after.
	OnRenewed func(before, after time.Time)

	// pending is a renewal whose restarts or verification have not
	// succeeded yet: retries restart the pods without renewing again.
	pending *renewal
}

type renewal struct{ before, after time.Time }

func (r *Renewer) defaults() {
	if r.Interval <= 0 {
		r.Interval = DefaultInterval
	}
	if r.Threshold <= 0 {
		r.Threshold = DefaultThreshold
	}
	if r.Backoff == nil {
		r.Backoff = backoff.New(time.Minute, time.Hour)
	}
	if r.StopTimeout <= 0 {
		r.StopTimeout = DefaultStopTimeout
	}
	if r.StartTimeout <= 0 {
		r.StartTimeout = DefaultStartTimeout
	}
	if r.VerifyTimeout <= 0 {
		r.VerifyTimeout = DefaultVerifyTimeout
	}
	if r.PollInterval <= 0 {
		r.PollInterval = DefaultPollInterval
	}
	if r.HoldDir == "" {
		r.HoldDir = filepath.Join(r.Paths.Dir, "tmp", "kubestrap-restart")
	}
	if r.Observer == nil {
		r.Observer = &ProcObserver{Paths: r.Paths}
	}
	if r.Clock == nil {
		r.Clock = clock.RealClock{}
	}
	if r.Log == nil {
		r.Log = zap.NewNop()
	}
}

func (r *Renewer) manifestsDir() string { return filepath.Join(r.Paths.Dir, "manifests") }

// Run checks and renews until ctx ends.
func (r *Renewer) Run(ctx context.Context) error {
	r.defaults()
	r.restoreManifests()
	for {
		wait := r.Once(ctx)
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if err := r.sleep(ctx, wait); err != nil {
			return err
		}
	}
}

// Once checks the certificates, renews them when due (or finishes a
// renewal an earlier attempt left half done) and returns when to check next.
func (r *Renewer) Once(ctx context.Context) time.Duration {
	r.defaults()
	certs, err := Check(r.Paths)
	if err != nil {
		r.Log.Warn("some kubeadm certificates cannot be read", zap.Error(err))
	}
	if r.OnChecked != nil {
		r.OnChecked(Expiries(certs))
	}
	now := r.Clock.Now()
	earliest, ok := Earliest(certs)
	if !ok {
		r.Log.Warn("no kubeadm certificate found to watch", zap.String("dir", r.Paths.Dir))
		return r.Interval
	}
	left := earliest.NotAfter.Sub(now)
	due := left <= r.Threshold
	if !due && r.pending == nil {
		r.Log.Info("kubeadm certificates checked", zap.String("earliest", earliest.Name),
			zap.Time("expiresAt", earliest.NotAfter), zap.Duration("renewBelow", r.Threshold))
		r.Backoff.Reset()
		// Check again daily, or when the threshold is reached if sooner.
		return min(r.Interval, max(left-r.Threshold, r.PollInterval))
	}
	if err := r.renew(ctx, earliest, due); err != nil {
		if ctx.Err() != nil {
			return 0
		}
		delay := r.Backoff.Next()
		r.Log.Warn("certificate renewal failed; retrying", zap.Duration("retryIn", delay), zap.Error(err))
		return delay
	}
	r.Backoff.Reset()
	return r.Interval
}

// renew runs kubeadm (when due; a pending renewal only needs the rest),
// restarts the static pods and verifies the served certificate, holding
// the Lock throughout.
func (r *Renewer) renew(ctx context.Context, earliest Cert, due bool) error {
	if r.Lock != nil {
		r.Progress.Within(r.StopTimeout)
		release, err := r.Lock.Acquire(ctx)
		if err != nil {
			return fmt.Errorf("acquire the renewal lock: %w", err)
		}
		defer release()
	}
	if due {
		r.Log.Info("renewing kubeadm certificates", zap.String("earliest", earliest.Name),
			zap.Time("expiresAt", earliest.NotAfter), zap.Duration("renewBelow", r.Threshold))
		r.Progress.Within(kubeadm.CertsRenewTimeout + kubeadm.GracePeriod)
		if err := r.Kubeadm.CertsRenewAll(ctx); err != nil {
			return fmt.Errorf("kubeadm certs renew all: %w", err)
		}
		certs, err := Check(r.Paths)
		if err != nil {
			r.Log.Warn("some kubeadm certificates cannot be read after the renewal", zap.Error(err))
		}
		if r.OnChecked != nil {
			r.OnChecked(Expiries(certs))
		}
		after, _ := Earliest(certs)
		if r.Clock.Now().Add(r.Threshold).After(after.NotAfter) {
			return fmt.Errorf("kubeadm certs renew all succeeded but %s still expires at %s, within %s",
				after.Name, after.NotAfter.Format(time.RFC3339), r.Threshold)
		}
		r.pending = &renewal{before: earliest.NotAfter, after: after.NotAfter}
	}
	for _, c := range Components {
		if err := r.restart(ctx, c); err != nil {
			return err
		}
	}
	if err := r.verify(ctx); err != nil {
		return err
	}
	done := r.pending
	r.pending = nil
	r.Log.Info("kubeadm certificates renewed and loaded by the control plane",
		zap.Time("before", done.before), zap.Time("after", done.after))
	if r.OnRenewed != nil {
		r.OnRenewed(done.before, done.after)
	}
	return nil
}

// restart has the kubelet stop and start component's static pod: its
// manifest goes to HoldDir until the pod's instance is gone, then back
// until a new instance runs and is ready. A component without a manifest
// (external etcd) is skipped. The manifest is put back whatever happens.
func (r *Renewer) restart(ctx context.Context, component string) (err error) {
	manifest := filepath.Join(r.manifestsDir(), component+".yaml")
	if _, err := os.Stat(manifest); errors.Is(err, fs.ErrNotExist) {
		r.Log.Info("no static pod manifest; not restarting", zap.String("component", component))
		return nil
	}
	log := r.Log.With(zap.String("component", component))
	old, err := r.instance(ctx, component)
	if err != nil {
		return fmt.Errorf("restart %s: %w", component, err)
	}
	if err := os.MkdirAll(r.HoldDir, 0o700); err != nil {
		return fmt.Errorf("restart %s: %w", component, err)
	}
	held := filepath.Join(r.HoldDir, component+".yaml")
	if err := os.Rename(manifest, held); err != nil {
		return fmt.Errorf("restart %s: move its manifest out: %w", component, err)
	}
	log.Info("moved the static pod manifest out; waiting for the kubelet to stop the pod", zap.String("heldAt", held))
	back := false
	moveBack := func() error {
		if back {
			return nil
		}
		if err := os.Rename(held, manifest); err != nil {
			return fmt.Errorf("restart %s: move its manifest back from %s: %w", component, held, err)
		}
		back = true
		return nil
	}
	defer func() {
		if mbErr := moveBack(); mbErr != nil {
			log.Error("cannot put the static pod manifest back; move it back by hand", zap.String("from", held), zap.Error(mbErr))
			err = errors.Join(err, mbErr)
		}
	}()
	if err := r.waitFor(ctx, r.StopTimeout, func(ctx context.Context) error {
		inst, err := r.instance(ctx, component)
		if err != nil {
			return err
		}
		if old != "" && inst == old {
			return fmt.Errorf("%s still runs", component)
		}
		return nil
	}); err != nil {
		return fmt.Errorf("restart %s: the kubelet did not stop it within %s: %w", component, r.StopTimeout, err)
	}
	if err := moveBack(); err != nil {
		return err
	}
	log.Info("moved the static pod manifest back; waiting for the pod to run and be ready")
	if err := r.waitFor(ctx, r.StartTimeout, func(ctx context.Context) error {
		inst, err := r.instance(ctx, component)
		if err != nil {
			return err
		}
		if inst == "" || inst == old {
			return fmt.Errorf("%s has not started again", component)
		}
		return r.Observer.Ready(ctx, component)
	}); err != nil {
		return fmt.Errorf("restart %s: not running and ready within %s: %w", component, r.StartTimeout, err)
	}
	log.Info("static pod restarted")
	return nil
}

func (r *Renewer) instance(ctx context.Context, component string) (string, error) {
	r.Progress.Within(CallTimeout)
	cctx, cancel := context.WithTimeout(ctx, CallTimeout)
	defer cancel()
	return r.Observer.Instance(cctx, component)
}

// verify waits until the API server serves the renewed pki/apiserver.crt.
func (r *Renewer) verify(ctx context.Context) error {
	addr := r.APIServerAddress
	if addr == "" {
		var err error
		if addr, err = apiServerAddress(r.Paths); err != nil {
			return fmt.Errorf("verify the served certificate: %w", err)
		}
	}
	file := filepath.Join(r.Paths.Dir, "pki", "apiserver.crt")
	if err := r.waitFor(ctx, r.VerifyTimeout, func(ctx context.Context) error {
		return VerifyServing(ctx, addr, file)
	}); err != nil {
		return fmt.Errorf("the API server does not serve the renewed certificate within %s: %w", r.VerifyTimeout, err)
	}
	return nil
}

// waitFor calls check (each call bounded by CallTimeout) every
// PollInterval until it returns nil, ctx ends or timeout passed on the
// Renewer's clock; it returns check's last error then.
func (r *Renewer) waitFor(ctx context.Context, timeout time.Duration, check func(context.Context) error) error {
	deadline := r.Clock.Now().Add(timeout)
	for {
		r.Progress.Within(CallTimeout)
		cctx, cancel := context.WithTimeout(ctx, CallTimeout)
		err := check(cctx)
		cancel()
		if err == nil {
			return nil
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if !r.Clock.Now().Before(deadline) {
			return err
		}
		if err := r.sleep(ctx, r.PollInterval); err != nil {
			return err
		}
	}
}

func (r *Renewer) sleep(ctx context.Context, d time.Duration) error {
	r.Progress.Within(d)
	t := r.Clock.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C():
		return nil
	}
}

// restoreManifests puts back manifests a killed agent left in HoldDir:
// without them the kubelet would not run the control plane.
func (r *Renewer) restoreManifests() {
	entries, err := os.ReadDir(r.HoldDir)
	if err != nil {
		return
	}
	for _, e := range entries {
		held := filepath.Join(r.HoldDir, e.Name())
		target := filepath.Join(r.manifestsDir(), e.Name())
		if _, err := os.Stat(target); err == nil {
			r.Log.Warn("a static pod manifest left aside by an interrupted restart is also in the manifests directory; "+
				"leaving both", zap.String("held", held), zap.String("manifest", target))
			continue
		}
		if err := os.Rename(held, target); err != nil {
			r.Log.Error("cannot put back a static pod manifest left aside by an interrupted restart; move it back by hand",
				zap.String("held", held), zap.String("manifest", target), zap.Error(err))
			continue
		}
		r.Log.Warn("put back a static pod manifest left aside by an interrupted restart", zap.String("manifest", target))
	}
}

// VerifyServing reads the certificate the server at addr (host:port)
// presents and returns nil when it is the one in certFile (the same DER
// bytes, so the same serial and NotAfter). The chain is not verified: the
// comparison with the file is the check.
func VerifyServing(ctx context.Context, addr, certFile string) error {
	want, err := ReadCert(certFile)
	if err != nil {
		return fmt.Errorf("read %s: %w", certFile, err)
	}
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return fmt.Errorf("API server address %q: %w", addr, err)
	}
	d := tls.Dialer{Config: &tls.Config{ServerName: host, InsecureSkipVerify: true, MinVersion: tls.VersionTLS12}} // the leaf is compared with the file below
	conn, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return fmt.Errorf("TLS dial %s: %w", addr, err)
	}
	defer conn.Close()
	peer := conn.(*tls.Conn).ConnectionState().PeerCertificates
	if len(peer) == 0 {
		return fmt.Errorf("%s presented no certificate", addr)
	}
	got := peer[0]
	if !bytes.Equal(got.Raw, want.Raw) {
		return fmt.Errorf("%s serves certificate serial %s expiring %s, not %s's serial %s expiring %s",
			addr, got.SerialNumber, got.NotAfter.UTC().Format(time.RFC3339), certFile,
			want.SerialNumber, want.NotAfter.UTC().Format(time.RFC3339))
	}
	return nil
}

// advertiseAnnotation is where kubeadm writes the API server's advertise
// address and port on its static pod.
const advertiseAnnotation = "kubeadm.kubernetes.io/kube-apiserver.advertise-address.endpoint"

// apiServerAddress is this node's API server: the advertise endpoint in
// its manifest, else the server of admin.conf (the control-plane endpoint,
// which in HA may be a load balancer).
func apiServerAddress(paths kubeadm.Paths) (string, error) {
	if pod, err := readManifest(paths.APIServerManifest()); err == nil {
		if ep := pod.Annotations[advertiseAnnotation]; ep != "" {
			return ep, nil
		}
	}
	b, err := os.ReadFile(paths.Admin())
	if err != nil {
		return "", err
	}
	var kc struct {
		Clusters []struct {
			Cluster struct {
				Server string `json:"server"`
			} `json:"cluster"`
		} `json:"clusters"`
	}
	if err := yaml.Unmarshal(b, &kc); err != nil || len(kc.Clusters) == 0 {
		return "", fmt.Errorf("%s names no API server", paths.Admin())
	}
	u, err := url.Parse(kc.Clusters[0].Cluster.Server)
	if err != nil || u.Host == "" {
		return "", fmt.Errorf("%s: API server URL %q", paths.Admin(), kc.Clusters[0].Cluster.Server)
	}
	if u.Port() == "" {
		return net.JoinHostPort(u.Hostname(), "443"), nil
	}
	return u.Host, nil
}

func readManifest(path string) (*corev1.Pod, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var pod corev1.Pod
	if err := yaml.Unmarshal(b, &pod); err != nil {
		return nil, fmt.Errorf("parse static pod manifest %s: %w", path, err)
	}
	return &pod, nil
}
