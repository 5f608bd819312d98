package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

	awsconfig "github.com/aws/aws-sdk-go-v2/config"
	awsimds "github.com/aws/aws-sdk-go-v2/feature/ec2/imds"
	awsecr "github.com/aws/aws-sdk-go-v2/service/ecr"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"k8s.io/utils/clock"

	"github.com/kubestrap/kubestrap/internal/config"
	"github.com/kubestrap/kubestrap/internal/ecr"
	"github.com/kubestrap/kubestrap/internal/imds"
	"github.com/kubestrap/kubestrap/internal/join"
	"github.com/kubestrap/kubestrap/internal/kubeadm"
	"github.com/kubestrap/kubestrap/internal/logging"
	"github.com/kubestrap/kubestrap/internal/role"
	"github.com/kubestrap/kubestrap/internal/state"
	"github.com/kubestrap/kubestrap/internal/systemd"
	"github.com/kubestrap/kubestrap/internal/version"
)

func runAgent(parent context.Context, args []string, stderr io.Writer) error {
	fs := newFlagSet("run", stderr)
	path := fs.String("config", config.DefaultPath, "configuration file")
	logFormat := fs.String("log-format", "auto", "auto (journal when stderr is the journal), journal, console or json")
	debug := fs.Bool("debug", false, "log debug messages")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	cfg, err := loadConfig(*path)
	if err != nil {
		return err
	}
	level := zapcore.InfoLevel
	if *debug {
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
	go notifier.RunWatchdog(ctx)

	err = runRole(ctx, cfg, log, notifier)
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

func runRole(ctx context.Context, cfg *config.AgentConfig, log *zap.Logger, notifier *systemd.Notifier) error {
	clk := clock.RealClock{}
	if err := os.MkdirAll(cfg.StateDir, 0o700); err != nil {
		return fmt.Errorf("create state directory: %w", err)
	}
	reporter, err := role.NewReporter(cfg.StateDir, notifier, log, clk)
	if err != nil {
		return err
	}
	reporter.Phase(state.PhaseStarting, "reading instance identity from the instance metadata service")

	loadOpts := []func(*awsconfig.LoadOptions) error{awsconfig.WithLogger(logging.AWSLogger(log.Named("aws")))}
	if cfg.AWS.Region != "" {
		loadOpts = append(loadOpts, awsconfig.WithRegion(cfg.AWS.Region))
	}
	awsCfg, err := awsconfig.LoadDefaultConfig(ctx, loadOpts...)
	if err != nil {
		return fmt.Errorf("load AWS configuration: %w", err)
	}
	identity, err := imds.WaitForIdentity(ctx, awsimds.NewFromConfig(awsCfg), cfg.AWS.IMDSTimeout.Duration, log)
	if err != nil {
		if ctx.Err() != nil || cfg.AWS.Region == "" {
			return err
		}
		log.Warn("continuing without instance identity: aws.region is set in the config", zap.Error(err))
		identity = &imds.Identity{Region: cfg.AWS.Region}
	}
	if awsCfg.Region == "" {
		awsCfg.Region = identity.Region
	}
	node := kubeadm.Node{Name: cfg.NodeName, IP: identity.PrivateIP}
	if node.Name == "" {
		host, err := os.Hostname()
		if err != nil {
			return fmt.Errorf("node name: %w", err)
		}
		node.Name = strings.ToLower(host)
	}
	log = log.With(zap.String("node", node.Name))
	reporter.Log = log
	reporter.Update(func(s *state.State) {
		s.Role, s.Cluster, s.NodeName = string(cfg.Role), cfg.Cluster, node.Name
	})
	log.Info("instance identity", zap.String("instanceID", identity.InstanceID), zap.String("region", awsCfg.Region),
		zap.String("privateIP", identity.PrivateIP))

	var wg sync.WaitGroup
	defer wg.Wait()
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var refresher *ecr.Refresher
	if cfg.ECR.Enabled {
		refresher = ecr.NewRefresher(ecr.Refresher{
			Client: awsecr.NewFromConfig(awsCfg), RegistryIDs: cfg.ECR.RegistryIDs, Path: cfg.ECR.ConfigPath,
			Clock: clk, Log: log.Named("ecr"),
			OnUpdate: func(creds *ecr.Credentials, err error) {
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
		wg.Add(1)
		go func() {
			defer wg.Done()
			_ = refresher.Run(ctx)
		}()
	}

	s3Client := s3.NewFromConfig(awsCfg, func(o *s3.Options) { o.UsePathStyle = cfg.AWS.S3UsePathStyle })
	store := &join.Store{Client: s3Client, Bucket: cfg.Bucket, Key: join.Key(cfg.Cluster), KMSKeyID: cfg.ControlPlane.KMSKeyID}
	runner := &kubeadm.Runner{Path: cfg.Kubeadm.Path, Log: log.Named("kubeadm")}
	switch cfg.Role {
	case config.RoleControlPlane:
		cp := &role.ControlPlane{Config: cfg, Node: node, Store: store, Kubeadm: runner, Clock: clk, Reporter: reporter, Log: log,
			AdminKubeconfig: filepath.Join(cfg.Kubeadm.ConfigDir, "admin.conf"),
			CACert:          filepath.Join(cfg.Kubeadm.ConfigDir, "pki", "ca.crt")}
		err = cp.Run(ctx)
	case config.RoleWorker:
		w := &role.Worker{Config: cfg, Node: node, Source: store, Kubeadm: runner, Clock: clk, Reporter: reporter, Log: log,
			KubeletKubeconfig: filepath.Join(cfg.Kubeadm.ConfigDir, "kubelet.conf")}
		if refresher != nil {
			w.OnJoined = refresher.Kick
		}
		err = w.Run(ctx)
	default:
		err = fmt.Errorf("unknown role %q", cfg.Role)
	}
	if errors.Is(err, context.Canceled) {
		return nil
	}
	return err
}
