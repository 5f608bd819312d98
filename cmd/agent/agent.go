package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"path/filepath"
	"runtime/debug"
	"strings"
	"syscall"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	awsconfig "github.com/aws/aws-sdk-go-v2/config"
	"github.com/aws/aws-sdk-go-v2/credentials/ec2rolecreds"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	awsecr "github.com/aws/aws-sdk-go-v2/service/ecr"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"k8s.io/utils/clock"

	"github.com/kubestrap/kubestrap/internal/addons"
	"github.com/kubestrap/kubestrap/internal/certs"
	"github.com/kubestrap/kubestrap/internal/config"
	"github.com/kubestrap/kubestrap/internal/ecr"
	"github.com/kubestrap/kubestrap/internal/events"
	"github.com/kubestrap/kubestrap/internal/imds"
	"github.com/kubestrap/kubestrap/internal/join"
	"github.com/kubestrap/kubestrap/internal/kubeadm"
	"github.com/kubestrap/kubestrap/internal/leave"
	"github.com/kubestrap/kubestrap/internal/logging"
	"github.com/kubestrap/kubestrap/internal/metrics"
	"github.com/kubestrap/kubestrap/internal/progress"
	"github.com/kubestrap/kubestrap/internal/role"
	"github.com/kubestrap/kubestrap/internal/state"
	"github.com/kubestrap/kubestrap/internal/supervisor"
	"github.com/kubestrap/kubestrap/internal/systemd"
	"github.com/kubestrap/kubestrap/internal/version"
)

func runAgent(parent context.Context, args []string, stderr io.Writer) error {
	// systemd's watchdog ends a stuck agent with SIGABRT. By default Go
	// prints every goroutine and exits with status 2, which is the exit
	// code of an invalid configuration (RestartPreventExitStatus=2): the
	// stuck agent would never be restarted. With "crash" it dies by the
	// signal itself, after the same dump, and systemd restarts it; an
	// unrecovered panic too.
	debug.SetTraceback("crash")
	fs := newFlagSet("run", stderr)
	path := fs.String("config", config.DefaultPath, "configuration file")
	logFormat := fs.String("log-format", "auto", "auto (journal when stderr is the journal), journal, console or json")
	debugLog := fs.Bool("debug", false, "log debug messages")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	cfg, err := loadConfig(*path)
	if err != nil {
		return err
	}
	level := zapcore.InfoLevel
	if *debugLog {
		level = zapcore.DebugLevel
	}
	log, err := logging.New(logging.Options{Format: *logFormat, Level: level, Writer: stderr})
	if err != nil {
		return usageError{err}
	}
	defer func() { _ = log.Sync() }()
	log = log.With(zap.String("role", string(cfg.Role)), zap.String("cluster", cfg.Cluster))
	log.Info("kubestrap starting", zap.String("version", version.Version), zap.String("commit", version.Commit),
		zap.String("config", *path))

	ctx, stop := signal.NotifyContext(parent, syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	notifier := systemd.NewNotifier(func(err error) { log.Warn("cannot notify systemd", zap.Error(err)) })
	// Every long-running part promises progress on the board; the watchdog
	// is fed only while none of them is overdue.
	board := progress.NewBoard(clock.RealClock{})
	go notifier.RunWatchdog(ctx, board.Stale, log.Named("watchdog"))

	err = runRole(ctx, cfg, log, notifier, board)
	if ctx.Err() != nil {
		notifier.Stopping()
		log.Info("kubestrap stopped")
		return nil
	}
	if err != nil {
		notifier.Status("failed: " + err.Error())
		log.Error("kubestrap failed", zap.Error(err))
	}
	return err
}

// partStart is a part's first promise of progress: the local work before
// its first hb.Within.
const partStart = time.Minute

// runRole reads the instance identity, then runs the agent's long-running
// parts under one supervisor: the role lifecycle ("control-plane" or
// "worker") and, when enabled, the ECR refresher ("ecr"), the add-ons
// installer ("addons") and the metrics listener ("metrics"). Each promises
// progress on board; the first part to stop stops the others.
func runRole(ctx context.Context, cfg *config.AgentConfig, log *zap.Logger, notifier *systemd.Notifier, board *progress.Board) error {
	clk := clock.RealClock{}
	if err := os.MkdirAll(cfg.StateDir, 0o700); err != nil {
		return fmt.Errorf("create state directory: %w", err)
	}
	// One agent process per node, for its whole life: the control plane's
	// init election relies on it (lease.Lock.ReclaimOwn).
	agentLock, err := role.LockAgent(cfg.StateDir)
	if err != nil {
		return err
	}
	defer func() { _ = agentLock.Close() }()
	reporter, err := role.NewReporter(cfg.StateDir, notifier, log, clk)
	if err != nil {
		return err
	}
	reporter.Phase(state.PhaseStarting, "reading instance identity from the instance metadata service")

	// The role's start-up: both parts need the region and the node's IP
	// before they start. imds.WaitForIdentity gives up after IMDSTimeout,
	// which is the role's first promise.
	hb := board.Part(string(cfg.Role), cfg.AWS.IMDSTimeout.Duration)
	awsCfg, node, err := identify(ctx, cfg, log)
	hb.Done()
	if err != nil {
		return err
	}
	log = log.With(zap.String("node", node.Name))
	reporter.Log = log
	reporter.Update(func(s *state.State) {
		s.Role, s.Cluster, s.NodeName = string(cfg.Role), cfg.Cluster, node.Name
	})

	parts := supervisor.New(board)
	m := metrics.New(version.Version, string(cfg.Role))
	if cfg.Metrics.Address != "" {
		srv := &metrics.Server{Address: cfg.Metrics.Address, Metrics: m, Stale: board.Stale, Log: log.Named("metrics"),
			Ready: metrics.Readiness(cfg.Role, reporter.State, metrics.KubeletHealthzURL, nil),
			OnListen: func(err error) {
				msg := ""
				if err != nil {
					msg = err.Error()
				}
				if reporter.State().MetricsError != msg {
					reporter.Update(func(s *state.State) { s.MetricsError = msg })
				}
			},
		}
		parts.Add("metrics", partStart, srv.Run)
	}
	var refresher *ecr.Refresher
	if cfg.ECR.Enabled {
		refresher = ecr.NewRefresher(ecr.Refresher{
			Client: awsecr.NewFromConfig(awsCfg), RegistryIDs: cfg.ECR.RegistryIDs, Path: cfg.ECR.ConfigPath,
			Clock: clk, Log: log.Named("ecr"),
			OnUpdate: func(creds *ecr.Credentials, err error) {
				if err == nil {
					m.SetECRExpiry(creds.ExpiresAt)
				}
				// The first error of an outage is kept: a retry's error
				// differs only by request ID and would rewrite state.json
				// at every attempt.
				if err != nil && reporter.State().ECRError != "" {
					return
				}
				reporter.Update(func(s *state.State) {
					if err != nil {
						s.ECRError = err.Error()
						return
					}
					s.ECRError, s.ECRExpiresAt, s.ECRRefreshedAt = "", creds.ExpiresAt.UTC(), time.Now().UTC()
					s.ECRRegistries = creds.Hosts()
				})
			},
		})
		parts.Add("ecr", partStart, func(ctx context.Context, hb *progress.Heartbeat) error {
			refresher.Progress = hb
			return refresher.Run(ctx)
		})
	}

	s3Client := s3.NewFromConfig(awsCfg, func(o *s3.Options) {
		o.UsePathStyle = cfg.AWS.S3UsePathStyle
		o.APIOptions = append(o.APIOptions, m.AddS3Middleware) // every S3 request counts
	})
	store := &join.Store{Client: s3Client, Bucket: cfg.Bucket, Key: join.Key(cfg.Cluster), KMSKeyID: cfg.ControlPlane.KMSKeyID}
	// One lock serializes every kubeadm run, also across agent processes.
	lock := &kubeadm.Lock{Path: filepath.Join(cfg.StateDir, kubeadm.LockFile)}
	runner := &kubeadm.Runner{Path: cfg.Kubeadm.Path, Log: log.Named("kubeadm"), Lock: lock}
	paths := kubeadm.Paths{Dir: cfg.Kubeadm.ConfigDir}
	switch cfg.Role {
	case config.RoleControlPlane:
		ec2Client := ec2.NewFromConfig(awsCfg)
		ev := newNodeEvents(node.Name, paths.Admin(), events.NewRecorder(paths.Admin(), events.Options{Clock: clk}), clk, log.Named("events"))
		reporter.OnWarning = ev.onWarning
		parts.Add("events", partStart, ev.run)
		cp := &role.ControlPlane{Config: cfg, Node: node, Store: store, Kubeadm: runner, Clock: clk, Reporter: reporter, Log: log,
			Lock: lock, AdminKubeconfig: paths.Admin(), CACert: paths.CACert(),
			Observer: &controlPlaneEvents{ControlPlaneObserver: m, ev: ev, bucket: store.URL()},
			Election: newElection(cfg, node, s3Client, ec2Client, agentLock.Held, paths.Admin(), log)}
		parts.Add(string(cfg.Role), partStart, func(ctx context.Context, hb *progress.Heartbeat) error {
			cp.Progress = hb
			return cp.Run(ctx)
		})
		initialized := func() bool { return !reporter.State().InitializedAt.IsZero() }
		rn := &certs.Renewer{Paths: paths, Kubeadm: runner, Clock: clk, Log: log.Named("certs"),
			Threshold: cfg.ControlPlane.Certificates.RenewBefore.Duration,
			Interval:  cfg.ControlPlane.Certificates.CheckInterval.Duration,
			OnChecked: func(expiries map[string]time.Time) {
				var earliest time.Time
				for name, t := range expiries {
					m.SetCertificateExpiry(name, t)
					if !certs.IsCA(name) && (earliest.IsZero() || t.Before(earliest)) {
						earliest = t
					}
				}
				if !earliest.Equal(reporter.State().CertificatesExpireAt) {
					reporter.Update(func(s *state.State) { s.CertificatesExpireAt = earliest.UTC() })
				}
			},
			OnRenewed: func(before, after time.Time) {
				ev.add(events.Normal, "CertificatesRenewed", fmt.Sprintf(
					"kubestrap renewed the control plane's certificates (kubeadm certs renew all) and restarted its static pods; "+
						"the earliest expiry moved from %s to %s", before.UTC().Format(time.RFC3339), after.UTC().Format(time.RFC3339)))
				reporter.Update(func(s *state.State) { s.CertificatesRenewedAt = clk.Now().UTC() })
			},
		}
		parts.Add("certs", partStart, func(ctx context.Context, hb *progress.Heartbeat) error {
			rn.Progress = hb
			// The certificates exist once kubeadm init wrote them.
			for !initialized() {
				if err := wait(ctx, clk, hb, 2*time.Second); err != nil {
					return err
				}
			}
			return rn.Run(ctx)
		})
		if cfg.ControlPlane.NodeCleanup.Enabled {
			addNodeCleanup(parts, cfg, paths.Admin(), node, ec2Client, s3Client, initialized, cp.HoldsUploaderLock, ev, m, clk,
				log.Named("nodecleanup"))
		}
		if len(cfg.ControlPlane.Addons) > 0 {
			objs, err := addons.Load(cfg.ControlPlane.Addons, cfg.Kubeadm.PodSubnet)
			if err != nil {
				return usageError{fmt.Errorf("controlPlane.addons: %w", err)}
			}
			in := &addons.Installer{Objects: objs, Clock: clk, Log: log.Named("addons"),
				Initialized: initialized,
				Connect: func() (addons.Target, error) {
					return addons.NewApplier(paths.Admin(), role.RemoteCallTimeout)
				},
				OnResult: func(at time.Time, err error) {
					m.SetAddonsApplied(err == nil)
					if err == nil {
						ev.add(events.Normal, "AddonsApplied", fmt.Sprintf("kubestrap applied the add-on manifests (%s) with server-side apply",
							strings.Join(cfg.ControlPlane.Addons, ", ")))
					}
					reporter.Update(func(s *state.State) {
						s.AddonsAppliedAt, s.AddonsError = at, ""
						if err != nil {
							s.AddonsError = err.Error()
						}
					})
				},
			}
			parts.Add("addons", partStart, func(ctx context.Context, hb *progress.Heartbeat) error {
				in.Progress = hb
				return in.Run(ctx)
			})
		}
	case config.RoleWorker:
		rec := events.NewRecorder(paths.Kubelet(), events.Options{Clock: clk})
		ev := newNodeEvents(node.Name, paths.Kubelet(), rec, clk, log.Named("events"))
		reporter.OnWarning = ev.onWarning
		parts.Add("events", partStart, ev.run)
		if cfg.Leave.Enabled {
			addLeaveParts(parts, &leaveParts{cfg: cfg.Leave, awsCfg: awsCfg, node: node.Name,
				instanceID: node.ProviderID[strings.LastIndex(node.ProviderID, "/")+1:], kubeconfig: paths.Kubelet(),
				events: rec, status: reporter, clock: clk, log: log.Named("leave"), observe: m.Left,
				records: &leave.RecordStore{Client: s3Client, Bucket: cfg.Bucket, Cluster: cfg.Cluster}})
		}
		w := &role.Worker{Config: cfg, Node: node, Source: store, Kubeadm: runner, Clock: clk, Reporter: reporter, Log: log,
			Lock: lock, KubeletKubeconfig: paths.Kubelet(), Observer: &workerEvents{WorkerObserver: m, ev: ev}}
		if refresher != nil {
			w.OnJoined = refresher.Kick
		}
		parts.Add(string(cfg.Role), partStart, func(ctx context.Context, hb *progress.Heartbeat) error {
			w.Progress = hb
			return w.Run(ctx)
		})
	default:
		return fmt.Errorf("unknown role %q", cfg.Role)
	}
	err = parts.Run(ctx)
	if errors.Is(err, context.Canceled) {
		return nil
	}
	return err
}

// identify loads the AWS configuration and reads the instance identity, and
// returns the configuration with its region set and the node's name and IP.
// Without IMDS, a region in the config is enough to go on.
func identify(ctx context.Context, cfg *config.AgentConfig, log *zap.Logger) (aws.Config, kubeadm.Node, error) {
	loadOpts := []func(*awsconfig.LoadOptions) error{awsconfig.WithLogger(logging.AWSLogger(log.Named("aws")))}
	if cfg.AWS.Region != "" {
		loadOpts = append(loadOpts, awsconfig.WithRegion(cfg.AWS.Region))
	}
	awsCfg, err := awsconfig.LoadDefaultConfig(ctx, loadOpts...)
	if err != nil {
		return aws.Config{}, kubeadm.Node{}, fmt.Errorf("load AWS configuration: %w", err)
	}
	// IMDSv2 only, for the identity and for the instance role's
	// credentials: the SDK would otherwise fall back to IMDSv1 when the
	// token request fails. The second load hands the credentials provider
	// the same client (the first one resolved its endpoint settings).
	imdsClient := imds.NewClient(awsCfg)
	loadOpts = append(loadOpts, awsconfig.WithEC2RoleCredentialOptions(func(o *ec2rolecreds.Options) { o.Client = imdsClient }))
	if awsCfg, err = awsconfig.LoadDefaultConfig(ctx, loadOpts...); err != nil {
		return aws.Config{}, kubeadm.Node{}, fmt.Errorf("load AWS configuration: %w", err)
	}
	identity, err := imds.WaitForIdentity(ctx, imdsClient, cfg.AWS.IMDSTimeout.Duration, log)
	if err != nil {
		if ctx.Err() != nil || cfg.AWS.Region == "" {
			return aws.Config{}, kubeadm.Node{}, err
		}
		log.Warn("continuing without instance identity: aws.region is set in the config", zap.Error(err))
		identity = &imds.Identity{Region: cfg.AWS.Region}
	}
	if awsCfg.Region == "" {
		awsCfg.Region = identity.Region
	}
	node := kubeadm.Node{Name: cfg.NodeName, IP: identity.PrivateIP, ProviderID: identity.ProviderID()}
	if node.Name == "" {
		host, err := os.Hostname()
		if err != nil {
			return aws.Config{}, kubeadm.Node{}, fmt.Errorf("node name: %w", err)
		}
		node.Name = strings.ToLower(host)
	}
	log.Info("instance identity", zap.String("node", node.Name), zap.String("instanceID", identity.InstanceID),
		zap.String("region", awsCfg.Region), zap.String("privateIP", identity.PrivateIP))
	return awsCfg, node, nil
}
