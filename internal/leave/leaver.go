package leave

import (
	"context"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"maps"
	"os"
	"sort"
	"strings"
	"sync"
	"time"

	"go.uber.org/zap"
	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	"k8s.io/utils/clock"

	"github.com/kubestrap/kubestrap/internal/progress"
)

// Events records a Kubernetes Event about a Node (an *events.Recorder).
type Events interface {
	Node(ctx context.Context, node, eventType, reason, msg string) error
}

// Lifecycle is the Auto Scaling lifecycle action that holds the instance
// while it leaves (ASGLifecycle is the AWS one).
type Lifecycle interface {
	// Heartbeat extends the hook's timeout by its heartbeat timeout.
	Heartbeat(ctx context.Context) error
	// Complete ends the wait with result (CONTINUE or ABANDON).
	Complete(ctx context.Context, result string) error
}

// LifecycleContinue is the lifecycle action result the Leaver sends.
const LifecycleContinue = "CONTINUE"

// Event types (core/v1).
const (
	eventNormal  = corev1.EventTypeNormal
	eventWarning = corev1.EventTypeWarning
)

// Leaver defaults.
const (
	// DefaultRequestTimeout bounds each API server request.
	DefaultRequestTimeout = 10 * time.Second
	// DefaultRetryInterval is the wait between evictions refused with 429
	// (PodDisruptionBudget), the interval kubectl drain uses too.
	DefaultRetryInterval = 5 * time.Second
	// DefaultPollInterval is how often the evicted pods are looked for.
	DefaultPollInterval = 2 * time.Second
	// DefaultGraceMargin is kept between a capped grace period and the deadline.
	DefaultGraceMargin = 5 * time.Second
	// DefaultConcurrency bounds the evictions in flight.
	DefaultConcurrency = 8
	// DefaultLifecycleHeartbeat is the interval between lifecycle heartbeats:
	// a third of a 300 s hook heartbeat timeout.
	DefaultLifecycleHeartbeat = 100 * time.Second
	// defaultPodGrace is a pod's grace period when its spec has none (the API default).
	defaultPodGrace = 30
	// listPageSize and maxListPages bound a pod list.
	listPageSize = 500
	maxListPages = 100
	// completeAttempts bounds the CompleteLifecycleAction attempts.
	completeAttempts = 3
)

// MirrorPodAnnotation marks a static pod's mirror on the API server.
const MirrorPodAnnotation = corev1.MirrorPodAnnotationKey

var (
	gvrNodes = schema.GroupVersionResource{Version: "v1", Resource: "nodes"}
	gvrPods  = schema.GroupVersionResource{Version: "v1", Resource: "pods"}
)

// Options tune a Leaver; the zero value is the defaults.
type Options struct {
	// Clock times the retries and waits (default: the real clock).
	Clock clock.Clock
	// Log gets each step (default: none).
	Log *zap.Logger
	// Heartbeat is promised before every request and every wait (may be nil).
	Heartbeat *progress.Heartbeat
	// Events records the leave on the Node (nil: no Events).
	Events Events
	// Lifecycle is heartbeaten and completed on an ASG notice (nil: none).
	Lifecycle Lifecycle
	// LifecycleHeartbeat is the interval between lifecycle heartbeats while
	// draining (default DefaultLifecycleHeartbeat); a third of the hook's
	// heartbeat timeout is right.
	LifecycleHeartbeat time.Duration
	// RequestTimeout bounds each API server request (default DefaultRequestTimeout).
	RequestTimeout time.Duration
	// RetryInterval is the wait before retrying a refused (429) or failed
	// request (default DefaultRetryInterval).
	RetryInterval time.Duration
	// PollInterval is how often the evicted pods are looked for (default DefaultPollInterval).
	PollInterval time.Duration
	// GraceMargin is kept between a capped grace period and the deadline
	// (default DefaultGraceMargin).
	GraceMargin time.Duration
	// Concurrency bounds the evictions in flight (default DefaultConcurrency).
	Concurrency int
	// Credentials names the identity used, for the Result (default: read
	// from the REST config's client certificate).
	Credentials string
}

func (o *Options) defaults() {
	if o.Clock == nil {
		o.Clock = clock.RealClock{}
	}
	if o.Log == nil {
		o.Log = zap.NewNop()
	}
	if o.LifecycleHeartbeat <= 0 {
		o.LifecycleHeartbeat = DefaultLifecycleHeartbeat
	}
	if o.RequestTimeout <= 0 {
		o.RequestTimeout = DefaultRequestTimeout
	}
	if o.RetryInterval <= 0 {
		o.RetryInterval = DefaultRetryInterval
	}
	if o.PollInterval <= 0 {
		o.PollInterval = DefaultPollInterval
	}
	if o.GraceMargin <= 0 {
		o.GraceMargin = DefaultGraceMargin
	}
	if o.Concurrency <= 0 {
		o.Concurrency = DefaultConcurrency
	}
}

// Leaver takes this node out of the cluster on a notice: Event, cordon,
// evictions, lifecycle action. See the package documentation for what the
// node's own credentials allow.
type Leaver struct {
	client dynamic.Interface
	rest   rest.Interface
	node   string
	opts   Options
}

// NewFromKubeconfig returns a Leaver for node with the credentials of the
// kubeconfig file at path (/etc/kubernetes/kubelet.conf on a worker).
func NewFromKubeconfig(path, node string, opts Options) (*Leaver, error) {
	cfg, err := clientcmd.BuildConfigFromFlags("", path)
	if err != nil {
		return nil, fmt.Errorf("leave: kubeconfig %s: %w", path, err)
	}
	if opts.Credentials == "" {
		opts.Credentials = describeCredentials(cfg) + " from " + path
	}
	return New(cfg, node, opts)
}

// New returns a Leaver for node with a REST config.
func New(cfg *rest.Config, node string, opts Options) (*Leaver, error) {
	if node == "" {
		return nil, errors.New("leave: no node name")
	}
	opts.defaults()
	cfg = rest.CopyConfig(cfg)
	if cfg.UserAgent == "" {
		cfg.UserAgent = "kubestrap"
	}
	if cfg.QPS == 0 && cfg.RateLimiter == nil {
		// The kubelet's own client limits (kubeAPIQPS, kubeAPIBurst); the
		// default 5/10 would throttle the evictions and their retries.
		cfg.QPS, cfg.Burst = 50, 100
	}
	if opts.Credentials == "" {
		opts.Credentials = describeCredentials(cfg)
	}
	hc, err := rest.HTTPClientFor(cfg)
	if err != nil {
		return nil, fmt.Errorf("leave: HTTP client: %w", err)
	}
	client, err := dynamic.NewForConfigAndClient(cfg, hc)
	if err != nil {
		return nil, fmt.Errorf("leave: API client: %w", err)
	}
	// Evictions are posted with a plain REST client: the dynamic client
	// cannot turn off client-go's own retries, which on a 429 with
	// Retry-After (the Eviction API's PDB answer says 10 s) would wait and
	// post again, up to 10 times, inside one request.
	rcfg := dynamic.ConfigFor(cfg)
	rcfg.ContentType = "application/json"
	rc, err := rest.UnversionedRESTClientForConfigAndClient(rcfg, hc)
	if err != nil {
		return nil, fmt.Errorf("leave: REST client: %w", err)
	}
	return &Leaver{client: client, rest: rc, node: node, opts: opts}, nil
}

// Result is what a leave did, for STATUS and the journal.
type Result struct {
	Notice Notice
	Node   string
	// Credentials names the identity every request was made with.
	Credentials string
	// Cordoned: spec.unschedulable was set.
	Cordoned bool
	// Evicted lists the pods (namespace/name) whose eviction was accepted
	// and that were gone before the deadline.
	Evicted []string
	// Left lists the pods still on the node when the leave ended,
	// "namespace/name: why".
	Left []string
	// Skipped lists the pods not evicted on purpose, "namespace/name: why"
	// (DaemonSet, mirror, already terminating or finished, already gone).
	Skipped []string
	// DeadlineHit: the deadline cut the leave short.
	DeadlineHit bool
	// Interrupted: the caller's context ended first (the agent is stopping);
	// the lifecycle action was then not completed.
	Interrupted bool
	// LifecycleHeartbeats counts the lifecycle heartbeats sent.
	LifecycleHeartbeats int
	// LifecycleCompleted: CompleteLifecycleAction (CONTINUE) was accepted.
	LifecycleCompleted bool
	// Started and Finished bound the leave.
	Started, Finished time.Time
}

// Summary is the result in one line, for STATUS.
func (r *Result) Summary() string {
	var b strings.Builder
	fmt.Fprintf(&b, "%s: ", r.Notice)
	if r.Cordoned {
		b.WriteString("cordoned")
	} else {
		b.WriteString("NOT cordoned")
	}
	if r.Notice.Terminates() {
		fmt.Fprintf(&b, ", %d pods evicted, %d left, %d skipped", len(r.Evicted), len(r.Left), len(r.Skipped))
	}
	if r.DeadlineHit {
		b.WriteString(", deadline hit")
	}
	if r.Interrupted {
		b.WriteString(", interrupted")
	}
	if r.Notice.Kind == ASGTermination {
		if r.LifecycleCompleted {
			b.WriteString(", lifecycle action completed")
		} else {
			b.WriteString(", lifecycle action NOT completed")
		}
	}
	fmt.Fprintf(&b, " (as %s)", r.Credentials)
	return b.String()
}

// Leave acts on n and returns what it did; the Result is never nil.
//
// For every notice it records an Event on the Node and cordons it (PATCH
// spec.unschedulable). For a termination (spot, ASG) it then lists the pods
// bound to the node, evicts each one that is not a DaemonSet pod, a mirror
// pod, terminating or finished, through the Eviction API (PDBs honoured: a
// 429 is retried every RetryInterval; grace periods capped by the time left
// before n.Deadline minus GraceMargin; at most Concurrency at a time) and
// waits until the evicted pods are gone. At n.Deadline it stops whatever is
// left. For an ASG notice it sends lifecycle heartbeats every
// LifecycleHeartbeat while it works and completes the lifecycle action
// (CONTINUE) at the end, also when the deadline cut the leave short, but not
// when ctx ended first (the agent is stopping: the agent that starts next
// sees the notice again, and the hook's own timeout is the backstop).
//
// The error joins what failed (cordon refused, pods not listed, lifecycle
// not completed); pods left are in the Result, not in the error.
func (l *Leaver) Leave(ctx context.Context, n Notice) (*Result, error) {
	clk := l.opts.Clock
	res := &Result{Notice: n, Node: l.node, Credentials: l.opts.Credentials, Started: clk.Now()}
	deadline := n.Deadline
	if deadline.IsZero() {
		deadline = res.Started.Add(DefaultSpotBudget)
	}
	dctx, cancel := context.WithTimeout(ctx, deadline.Sub(res.Started))
	defer cancel()
	log := l.opts.Log.With(zap.String("notice", string(n.Kind)), zap.Time("deadline", deadline))
	log.Info("leaving the cluster", zap.String("credentials", l.opts.Credentials))

	var stopBeats func() int
	if n.Kind == ASGTermination && l.opts.Lifecycle != nil {
		stopBeats = l.lifecycleHeartbeats(dctx, log)
	}

	// The Event is recorded alongside the cordon, so that a slow Event
	// never delays it.
	eventDone := make(chan struct{})
	go func() {
		defer close(eventDone)
		typ, reason, msg := eventNormal, "RebalanceRecommendation", n.String()+": cordoning the node (kubestrap)"
		if n.Terminates() {
			typ, reason, msg = eventWarning, string(n.Kind), n.String()+": cordoning the node and evicting its pods (kubestrap)"
		}
		l.event(ctx, log, typ, reason, msg)
	}()

	var errs []error
	if err := l.retry(dctx, "cordon", l.cordon); err != nil {
		errs = append(errs, fmt.Errorf("cordon node %s: %w", l.node, err))
		log.Error("cordon failed", zap.Error(err))
	} else {
		res.Cordoned = true
		log.Info("cordoned")
	}
	if n.Terminates() {
		if err := l.drain(dctx, deadline, res, log); err != nil {
			errs = append(errs, err)
		}
	}
	// The deadline cut the leave short when it came with work undone.
	if dctx.Err() != nil && ctx.Err() == nil && (len(res.Left) > 0 || !res.Cordoned) {
		res.DeadlineHit = true
	}
	if ctx.Err() != nil {
		res.Interrupted = true
	}
	if stopBeats != nil {
		res.LifecycleHeartbeats = stopBeats()
	}
	<-eventDone

	if n.Kind == ASGTermination && l.opts.Lifecycle != nil {
		if err := l.complete(ctx, log); err != nil {
			errs = append(errs, err)
		} else {
			res.LifecycleCompleted = true
		}
	}
	res.Finished = clk.Now()
	if n.Terminates() {
		if len(res.Left) == 0 {
			l.event(ctx, log, eventNormal, "Drained", fmt.Sprintf("evicted %d pods before the deadline (kubestrap)", len(res.Evicted)))
		} else {
			l.event(ctx, log, eventWarning, "DrainIncomplete", fmt.Sprintf("evicted %d pods; left %s (kubestrap)", len(res.Evicted), strings.Join(res.Left, "; ")))
		}
	}
	log.Info("leave done", zap.String("summary", res.Summary()), zap.Strings("evicted", res.Evicted),
		zap.Strings("left", res.Left), zap.Strings("skipped", res.Skipped))
	return res, errors.Join(errs...)
}

// event records an Event, bounded by the request timeout; a failure is logged only.
func (l *Leaver) event(ctx context.Context, log *zap.Logger, typ, reason, msg string) {
	if l.opts.Events == nil || ctx.Err() != nil {
		return
	}
	l.opts.Heartbeat.Within(l.opts.RequestTimeout)
	ectx, cancel := context.WithTimeout(ctx, l.opts.RequestTimeout)
	defer cancel()
	if err := l.opts.Events.Node(ectx, l.node, typ, reason, msg); err != nil {
		log.Warn("cannot record the leave Event on the Node", zap.String("reason", reason), zap.Error(err))
	}
}

// cordon sets spec.unschedulable on the Node (a JSON merge patch, which
// touches no other field: NodeRestriction refuses a node's change of its
// own taints, labels outside its allowed set or ownerReferences).
func (l *Leaver) cordon(ctx context.Context) error {
	_, err := l.client.Resource(gvrNodes).Patch(ctx, l.node, types.MergePatchType,
		[]byte(`{"spec":{"unschedulable":true}}`), metav1.PatchOptions{})
	return err
}

// retry calls f (each call bounded by the request timeout) until it
// succeeds, fails for good (not transient), or ctx ends.
func (l *Leaver) retry(ctx context.Context, what string, f func(context.Context) error) error {
	for {
		l.opts.Heartbeat.Within(l.opts.RequestTimeout)
		rctx, cancel := context.WithTimeout(ctx, l.opts.RequestTimeout)
		err := f(rctx)
		cancel()
		if err == nil || !transient(err) {
			return err
		}
		l.opts.Log.Warn("API server request failed; retrying", zap.String("what", what), zap.Error(err))
		if !l.sleep(ctx, l.opts.RetryInterval) {
			return fmt.Errorf("%w (last error: %v)", context.Cause(ctx), err)
		}
	}
}

// sleep waits d on the clock; false when ctx ended first.
func (l *Leaver) sleep(ctx context.Context, d time.Duration) bool {
	l.opts.Heartbeat.Within(d)
	t := l.opts.Clock.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C():
		return true
	}
}

// transient says whether a failed request is worth retrying: overload,
// timeouts, server errors, and errors that are no API status at all
// (connection refused or reset).
func transient(err error) bool {
	var status apierrors.APIStatus
	if !errors.As(err, &status) {
		return !errors.Is(err, context.Canceled)
	}
	return apierrors.IsTooManyRequests(err) || apierrors.IsServerTimeout(err) || apierrors.IsTimeout(err) ||
		apierrors.IsInternalError(err) || apierrors.IsServiceUnavailable(err) || apierrors.IsUnexpectedServerError(err)
}

// listPods lists the pods bound to the node. The spec.nodeName field
// selector is what the Node authorizer requires of a node's pod list.
func (l *Leaver) listPods(ctx context.Context) ([]corev1.Pod, error) {
	opts := metav1.ListOptions{FieldSelector: fields.OneTermEqualSelector("spec.nodeName", l.node).String(), Limit: listPageSize}
	var pods []corev1.Pod
	for page := 0; page < maxListPages; page++ {
		l.opts.Heartbeat.Within(l.opts.RequestTimeout)
		rctx, cancel := context.WithTimeout(ctx, l.opts.RequestTimeout)
		list, err := l.client.Resource(gvrPods).List(rctx, opts)
		cancel()
		if err != nil {
			return nil, err
		}
		for i := range list.Items {
			var p corev1.Pod
			if err := runtime.DefaultUnstructuredConverter.FromUnstructured(list.Items[i].Object, &p); err != nil {
				return nil, fmt.Errorf("decode pod %s/%s: %w", list.Items[i].GetNamespace(), list.Items[i].GetName(), err)
			}
			pods = append(pods, p)
		}
		if opts.Continue = list.GetContinue(); opts.Continue == "" {
			return pods, nil
		}
	}
	return nil, fmt.Errorf("more than %d pages of pods", maxListPages)
}

// skipReason says why p is not evicted, or "".
func skipReason(p *corev1.Pod) string {
	switch {
	case p.Annotations[MirrorPodAnnotation] != "":
		return "mirror pod (a static pod the kubelet runs)"
	case isDaemonSetPod(p):
		// Decided from the controllerRef alone: kubectl drain GETs the
		// DaemonSet, which a node's credentials may not do.
		return "DaemonSet pod"
	case p.DeletionTimestamp != nil:
		return "already terminating"
	case p.Status.Phase == corev1.PodSucceeded || p.Status.Phase == corev1.PodFailed:
		return "finished (" + string(p.Status.Phase) + ")"
	}
	return ""
}

// isDaemonSetPod: p's controller is an apps DaemonSet (kubectl drain's
// isControllerRefDaemonSet test).
func isDaemonSetPod(p *corev1.Pod) bool {
	ref := metav1.GetControllerOf(p)
	if ref == nil || ref.Kind != "DaemonSet" {
		return false
	}
	gv, err := schema.ParseGroupVersion(ref.APIVersion)
	return err == nil && gv.Group == "apps"
}

func podKey(p *corev1.Pod) string { return p.Namespace + "/" + p.Name }

// evictOutcome is what became of one pod's eviction.
type evictOutcome struct {
	accepted bool
	// gone: the pod was gone before its eviction was accepted.
	gone bool
	why  string
}

// drain lists, evicts and waits, filling res.
func (l *Leaver) drain(ctx context.Context, deadline time.Time, res *Result, log *zap.Logger) error {
	var pods []corev1.Pod
	err := l.retry(ctx, "list pods", func(rctx context.Context) error {
		var err error
		pods, err = l.listPods(rctx)
		return err
	})
	if err != nil {
		log.Error("cannot list the node's pods; nothing evicted", zap.Error(err))
		return fmt.Errorf("list pods on node %s: %w", l.node, err)
	}
	var evict []*corev1.Pod
	for i := range pods {
		if why := skipReason(&pods[i]); why != "" {
			res.Skipped = append(res.Skipped, podKey(&pods[i])+": "+why)
			continue
		}
		evict = append(evict, &pods[i])
	}
	log.Info("evicting pods", zap.Int("pods", len(evict)), zap.Int("skipped", len(res.Skipped)))

	// The evictions run at most Concurrency at a time; meanwhile the pods
	// whose eviction was accepted are looked for until they are gone.
	outcomes := make([]evictOutcome, len(evict))
	accepted := &acceptedPods{uids: map[string]types.UID{}}
	sem := make(chan struct{}, l.opts.Concurrency)
	var wg sync.WaitGroup
	for i, p := range evict {
		wg.Add(1)
		go func() {
			defer wg.Done()
			select {
			case sem <- struct{}{}:
				defer func() { <-sem }()
				outcomes[i] = l.evict(ctx, deadline, p, log)
				if outcomes[i].accepted {
					accepted.add(podKey(p), p.UID)
				}
			case <-ctx.Done():
				outcomes[i] = evictOutcome{why: "not evicted: " + stopped(ctx)}
			}
		}()
	}
	evictionsDone := make(chan struct{})
	go func() {
		wg.Wait()
		close(evictionsDone)
	}()
	gone := l.waitGone(ctx, accepted, evictionsDone, log)
	<-evictionsDone // every eviction ends with ctx at the latest

	for i, p := range evict {
		key := podKey(p)
		switch o := outcomes[i]; {
		case o.accepted && gone[key]:
			res.Evicted = append(res.Evicted, key)
		case o.accepted:
			res.Left = append(res.Left, key+": evicted, still terminating: "+stopped(ctx))
		case o.gone:
			res.Skipped = append(res.Skipped, key+": already gone")
		default:
			res.Left = append(res.Left, key+": "+o.why)
		}
	}
	sort.Strings(res.Evicted)
	sort.Strings(res.Left)
	sort.Strings(res.Skipped)
	return nil
}

// stopped says why ctx ended.
func stopped(ctx context.Context) string {
	if errors.Is(ctx.Err(), context.DeadlineExceeded) {
		return "the deadline came"
	}
	return "the agent is stopping"
}

// evict posts p's eviction until it is accepted, refused for good, or ctx
// ends; a 429 (a PodDisruptionBudget would be violated, or the API server
// is overloaded) is retried every RetryInterval.
func (l *Leaver) evict(ctx context.Context, deadline time.Time, p *corev1.Pod, log *zap.Logger) evictOutcome {
	log = log.With(zap.String("pod", podKey(p)))
	why, refused := "not evicted", false
	for attempt := 1; ; attempt++ {
		grace := l.grace(p, deadline)
		err := l.postEviction(ctx, p, grace)
		if err != nil && ctx.Err() != nil {
			// Cut short by the deadline: the refusal before says more.
			return evictOutcome{why: why + " until " + stopped(ctx)}
		}
		switch {
		case err == nil:
			log.Info("pod evicted", zap.Int64("gracePeriodSeconds", grace), zap.Int("attempts", attempt))
			return evictOutcome{accepted: true}
		case apierrors.IsNotFound(err), apierrors.IsConflict(err):
			// Gone, or replaced by a pod of the same name (UID precondition).
			return evictOutcome{gone: true}
		case apierrors.IsTooManyRequests(err):
			why, refused = "eviction refused (429: "+err.Error()+")", true
		case transient(err):
			// The API server's last refusal says more than a failure on
			// the way to it (a client-side rate limit near the deadline).
			if !refused {
				why = "eviction failed (" + err.Error() + ")"
			}
		default:
			log.Warn("eviction refused", zap.Error(err))
			return evictOutcome{why: "eviction refused: " + err.Error()}
		}
		if attempt == 1 {
			log.Info("eviction refused; retrying", zap.Duration("every", l.opts.RetryInterval), zap.Error(err))
		}
		if !l.sleep(ctx, l.opts.RetryInterval) {
			return evictOutcome{why: why + " until " + stopped(ctx)}
		}
	}
}

// grace is p's grace period capped by the time left before the deadline
// minus the margin, at least 1 s (0 would delete the pod at once, without
// its containers being stopped).
func (l *Leaver) grace(p *corev1.Pod, deadline time.Time) int64 {
	own := int64(defaultPodGrace)
	if p.Spec.TerminationGracePeriodSeconds != nil {
		own = *p.Spec.TerminationGracePeriodSeconds
	}
	left := int64(deadline.Sub(l.opts.Clock.Now())-l.opts.GraceMargin) / int64(time.Second)
	return max(min(own, left), 1)
}

// postEviction creates p's policy/v1 Eviction, with its UID as a
// precondition so that a new pod of the same name is never evicted.
func (l *Leaver) postEviction(ctx context.Context, p *corev1.Pod, grace int64) error {
	uid := p.UID
	ev := &policyv1.Eviction{
		TypeMeta:   metav1.TypeMeta{APIVersion: "policy/v1", Kind: "Eviction"},
		ObjectMeta: metav1.ObjectMeta{Name: p.Name, Namespace: p.Namespace},
		DeleteOptions: &metav1.DeleteOptions{GracePeriodSeconds: &grace,
			Preconditions: &metav1.Preconditions{UID: &uid}},
	}
	body, err := json.Marshal(ev)
	if err != nil {
		return fmt.Errorf("encode eviction: %w", err)
	}
	l.opts.Heartbeat.Within(l.opts.RequestTimeout)
	rctx, cancel := context.WithTimeout(ctx, l.opts.RequestTimeout)
	defer cancel()
	// MaxRetries(0): a 429 is retried by evict, every RetryInterval.
	return l.rest.Post().AbsPath("/api/v1/namespaces", p.Namespace, "pods", p.Name, "eviction").
		Body(body).MaxRetries(0).Do(rctx).Error()
}

// acceptedPods are the pods whose eviction was accepted (key → UID).
type acceptedPods struct {
	mu   sync.Mutex
	uids map[string]types.UID
}

func (a *acceptedPods) add(key string, uid types.UID) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.uids[key] = uid
}

func (a *acceptedPods) snapshot() map[string]types.UID {
	a.mu.Lock()
	defer a.mu.Unlock()
	return maps.Clone(a.uids)
}

// waitGone polls the node's pods every PollInterval until the evictions
// are done and every accepted pod is gone (absent, replaced by another
// UID, or finished), or ctx ends; it returns the keys seen gone.
func (l *Leaver) waitGone(ctx context.Context, accepted *acceptedPods, evictionsDone <-chan struct{}, log *zap.Logger) map[string]bool {
	gone := map[string]bool{}
	for {
		finished := false
		select {
		case <-evictionsDone:
			finished = true
		default:
		}
		waiting := accepted.snapshot()
		if len(gone) < len(waiting) {
			if pods, err := l.listPods(ctx); err != nil {
				if ctx.Err() == nil {
					log.Warn("cannot list the node's pods while waiting for evicted pods to go", zap.Error(err))
				}
			} else {
				present := map[string]bool{}
				for i := range pods {
					p := &pods[i]
					if uid, ok := waiting[podKey(p)]; ok && uid == p.UID && p.Status.Phase != corev1.PodSucceeded && p.Status.Phase != corev1.PodFailed {
						present[podKey(p)] = true
					}
				}
				for key := range waiting {
					if !present[key] {
						gone[key] = true
					}
				}
			}
		}
		if finished && len(gone) == len(waiting) {
			return gone
		}
		if !l.sleep(ctx, l.opts.PollInterval) {
			return gone
		}
	}
}

// lifecycleHeartbeats sends a lifecycle heartbeat now and every
// LifecycleHeartbeat until the returned stop is called; stop returns how
// many were accepted.
func (l *Leaver) lifecycleHeartbeats(ctx context.Context, log *zap.Logger) (stop func() int) {
	ctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	sent := 0
	go func() {
		defer close(done)
		for {
			l.opts.Heartbeat.Within(l.opts.RequestTimeout)
			hctx, hcancel := context.WithTimeout(ctx, l.opts.RequestTimeout)
			err := l.opts.Lifecycle.Heartbeat(hctx)
			hcancel()
			switch {
			case err == nil:
				sent++
			case ctx.Err() == nil:
				log.Warn("lifecycle heartbeat failed", zap.Error(err))
			}
			t := l.opts.Clock.NewTimer(l.opts.LifecycleHeartbeat)
			select {
			case <-ctx.Done():
				t.Stop()
				return
			case <-t.C():
			}
		}
	}()
	return func() int {
		cancel()
		<-done
		return sent
	}
}

// complete completes the lifecycle action (CONTINUE), a few attempts, each
// bounded by the request timeout; not when ctx ended.
func (l *Leaver) complete(ctx context.Context, log *zap.Logger) error {
	var err error
	for attempt := 1; attempt <= completeAttempts; attempt++ {
		if ctx.Err() != nil {
			return fmt.Errorf("lifecycle action not completed: %w", ctx.Err())
		}
		l.opts.Heartbeat.Within(l.opts.RequestTimeout)
		cctx, cancel := context.WithTimeout(ctx, l.opts.RequestTimeout)
		err = l.opts.Lifecycle.Complete(cctx, LifecycleContinue)
		cancel()
		if err == nil {
			log.Info("lifecycle action completed", zap.String("result", LifecycleContinue))
			return nil
		}
		log.Warn("cannot complete the lifecycle action", zap.Int("attempt", attempt), zap.Error(err))
		if attempt < completeAttempts && !l.sleep(ctx, l.opts.RetryInterval) {
			break
		}
	}
	return fmt.Errorf("complete lifecycle action: %w", err)
}

// describeCredentials names the identity of cfg: the user and groups of
// its client certificate (the kubelet's system:node:<name> in
// system:nodes), or the kind of credentials.
func describeCredentials(cfg *rest.Config) string {
	data := cfg.CertData
	if len(data) == 0 && cfg.CertFile != "" {
		data, _ = os.ReadFile(cfg.CertFile)
	}
	for len(data) > 0 {
		var block *pem.Block
		if block, data = pem.Decode(data); block == nil {
			break
		}
		if block.Type != "CERTIFICATE" {
			continue
		}
		if cert, err := x509.ParseCertificate(block.Bytes); err == nil {
			return fmt.Sprintf("user %s, groups [%s] (client certificate)", cert.Subject.CommonName, strings.Join(cert.Subject.Organization, " "))
		}
		break
	}
	switch {
	case cfg.BearerToken != "" || cfg.BearerTokenFile != "":
		return "bearer token"
	case cfg.ExecProvider != nil:
		return "exec credential plugin"
	case cfg.Username != "":
		return "user " + cfg.Username + " (basic auth)"
	}
	return "no client credentials"
}
