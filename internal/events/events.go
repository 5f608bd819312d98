// Package events records Kubernetes Events about the agent's own Node, for
// what an operator wants to see in `kubectl describe node` and
// `kubectl get events --field-selector involvedObject.name=<node>`: joined,
// re-joined, join info refused or published, certificates renewed.
//
// # Which Event
//
// A core/v1 Event (not events.k8s.io/v1) in namespace "default", the way the
// kubelet records its Node events: kubectl describe node lists events with
// the core/v1 API and a field selector on involvedObject name, namespace
// (empty for a Node), kind and uid; it runs the query twice, once with the
// Node's UID and once with uid = the Node's name, the kubelet's convention
// (k8s.io/kubectl@v0.37.2 pkg/describe/describe.go:3462-3477, searchEvents at
// 5408-5425; the selector is built by client-go
// kubernetes/typed/core/v1/event_expansion.go:188-203). The recorder fetches
// the Node's UID once (GET /api/v1/nodes/<name>) and uses it; while the Node
// does not exist yet it uses the name, which describe matches as well. A
// core/v1 Event without eventTime is validated by the legacy rules, which
// want namespace "" or "default" for an object without a namespace
// (k8s.io/kubernetes@v1.37.2 pkg/apis/core/validation/events.go:142-155), and
// carries count, firstTimestamp and lastTimestamp, which kubectl shows as
// "(x2 over 5m)".
//
// # Credentials and what they allow
//
// On a worker the recorder runs with the node's own identity
// (/etc/kubernetes/kubelet.conf: user system:node:<name>, group
// system:nodes), on a control plane with admin.conf (cluster-admin). What a
// node identity may do, in k8s.io/kubernetes@v1.37.2:
//
//   - The Node authorizer subdivides access only for secrets, configmaps,
//     PVCs, PVs, resource claims, volume attachments, service accounts,
//     leases, CSINodes, resource slices, nodes, pods and pod certificate
//     requests (plugin/pkg/auth/authorizer/node/node_authorizer.go:130-168).
//     Everything else, events included, is checked against the static node
//     rules only (node_authorizer.go:170-174), which the API server builds
//     from bootstrappolicy.NodeRules() (pkg/kubeapiserver/authorizer/config.go:124).
//   - NodeRules grant "create", "update", "patch" on events in both the core
//     and the events.k8s.io groups, with the comment "TODO: restrict to the
//     bound node as creator in the NodeRestrictions admission plugin"
//     (plugin/pkg/auth/authorizer/rbac/bootstrappolicy/policy.go:229-230). They
//     grant no get, list or watch on events: a node cannot read events back,
//     so the de-duplication below is kept in memory, never looked up.
//   - The NodeRestriction admission plugin has no case for events
//     (plugin/pkg/admission/noderestriction/admission.go:209-252, default:
//     allowed): a node may create and patch events about any object in any
//     namespace; nothing ties them to its own Node. This package only ever
//     writes events about the agent's Node.
//   - A node may get its own Node object, and only its own
//     (node_authorizer.go:427-446, authorizeNode), which is how the UID is
//     fetched.
//   - The system:node ClusterRole holds the same rules
//     (policy.go:450-454), but its default binding to the group system:nodes
//     has no subjects since 1.7 (policy.go:729-734): the permissions come from
//     the Node authorizer, so the API server must run with
//     --authorization-mode including Node (kubeadm's default: Node,RBAC).
//
// # Secrets
//
// A message or reason never carries a bootstrap token secret: Sanitize
// replaces anything matching [a-z0-9]{6}\.[a-z0-9]{16} before an Event is
// built, whatever the caller passed.
package events

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"regexp"
	"sync"
	"time"
	"unicode/utf8"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	"k8s.io/utils/clock"
)

// Event types, as Kubernetes defines them.
const (
	Normal  = corev1.EventTypeNormal
	Warning = corev1.EventTypeWarning
)

const (
	// Component is the Event's source.component.
	Component = "kubestrap"
	// ReportingController is the Event's reportingComponent.
	ReportingController = "kubestrap.dev/agent"
	// Namespace is where Events about a Node are written (the kubelet's choice too).
	Namespace = metav1.NamespaceDefault
	// DefaultDedupeWindow is how long the same event on the same Node is
	// counted on the existing Event rather than written as a new one.
	DefaultDedupeWindow = 10 * time.Minute
	// DefaultTimeout bounds each API request.
	DefaultTimeout = 10 * time.Second
	// MaxMessage is the longest message kept (the events.k8s.io limit for a note).
	MaxMessage = 1024
	// maxReason is the longest reason the API accepts.
	maxReason = 128
)

var (
	gvrEvents = schema.GroupVersionResource{Version: "v1", Resource: "events"}
	gvrNodes  = schema.GroupVersionResource{Version: "v1", Resource: "nodes"}
	// tokenPattern is a bootstrap token anywhere in text, glued to other
	// characters or not: hiding too much is safe, hiding too little is not.
	tokenPattern = regexp.MustCompile(`[a-z0-9]{6}\.[a-z0-9]{16}`)
)

// Redacted replaces a bootstrap token in a sanitized text.
const Redacted = "<redacted token>"

// Sanitize returns s with every substring that looks like a bootstrap token
// ("[a-z0-9]{6}.[a-z0-9]{16}", ID and secret) replaced by Redacted.
func Sanitize(s string) string {
	return tokenPattern.ReplaceAllString(s, Redacted)
}

// Options tune a Recorder; the zero value is the defaults.
type Options struct {
	// Clock stamps the Events and times the de-duplication window (default: the real clock).
	Clock clock.PassiveClock
	// Timeout bounds each API request (default DefaultTimeout).
	Timeout time.Duration
	// DedupeWindow: the same type, reason and message on the same Node
	// within it increments the existing Event's count (default DefaultDedupeWindow).
	DedupeWindow time.Duration
	// UserAgent of the requests (default "kubestrap").
	UserAgent string
}

func (o *Options) defaults() {
	if o.Clock == nil {
		o.Clock = clock.RealClock{}
	}
	if o.Timeout <= 0 {
		o.Timeout = DefaultTimeout
	}
	if o.DedupeWindow <= 0 {
		o.DedupeWindow = DefaultDedupeWindow
	}
	if o.UserAgent == "" {
		o.UserAgent = "kubestrap"
	}
}

// Recorder writes Events about Nodes. It is safe for concurrent use; calls
// are serialized (events are rare, and the de-duplication needs order).
type Recorder struct {
	opts Options
	// kubeconfig, when set, is read again whenever it changes on disk:
	// `kubeadm certs renew all` rewrites admin.conf with a new client
	// certificate, and the old one must not be used until it expires.
	kubeconfig string
	cfg        *rest.Config

	mu      sync.Mutex
	client  dynamic.Interface
	http    *http.Client
	stamp   fileStamp
	uids    map[string]types.UID
	recent  map[dedupeKey]*recentEvent
	counter uint64
}

type fileStamp struct {
	mod  time.Time
	size int64
}

type dedupeKey struct{ node, typ, reason, message string }

type recentEvent struct {
	name  string
	count int32
	last  time.Time
}

// NewRecorder returns a Recorder using the kubeconfig file at path
// (kubelet.conf on a worker, admin.conf on a control plane). The file is
// read at the first call and again whenever it changes.
func NewRecorder(path string, opts Options) *Recorder {
	opts.defaults()
	return &Recorder{opts: opts, kubeconfig: path, uids: map[string]types.UID{}, recent: map[dedupeKey]*recentEvent{}}
}

// NewRecorderForConfig returns a Recorder for a fixed REST config.
func NewRecorderForConfig(cfg *rest.Config, opts Options) (*Recorder, error) {
	opts.defaults()
	r := &Recorder{opts: opts, cfg: cfg, uids: map[string]types.UID{}, recent: map[dedupeKey]*recentEvent{}}
	if err := r.connect(rest.CopyConfig(cfg)); err != nil {
		return nil, err
	}
	return r, nil
}

// Node records an Event of eventType (Normal or Warning) about the Node
// nodeName. reason is a short UpperCamelCase word ("Joined"), message one
// sentence for the operator; both are sanitized (Sanitize) and the message
// is cut to MaxMessage. The same type, reason and message on the same Node
// within the de-duplication window increments the count of the Event
// written before (PATCH); otherwise a new Event is created. Errors are
// wrapped API errors (apierrors.IsForbidden etc. see through them).
func (r *Recorder) Node(ctx context.Context, nodeName, eventType, reason, message string) error {
	if nodeName == "" {
		return fmt.Errorf("record event: no node name")
	}
	if eventType != Normal && eventType != Warning {
		return fmt.Errorf("record event on node %s: type %q is neither %s nor %s", nodeName, eventType, Normal, Warning)
	}
	reason = Sanitize(reason)
	if reason == "" || len(reason) > maxReason {
		return fmt.Errorf("record event on node %s: reason must be 1-%d characters", nodeName, maxReason)
	}
	message = truncate(Sanitize(message), MaxMessage)

	r.mu.Lock()
	defer r.mu.Unlock()
	if err := r.refresh(); err != nil {
		return err
	}
	now := r.opts.Clock.Now()
	r.prune(now)
	key := dedupeKey{nodeName, eventType, reason, message}
	if prev, ok := r.recent[key]; ok {
		err := r.increment(ctx, prev, now)
		if err == nil {
			return nil
		}
		if !apierrors.IsNotFound(err) {
			return fmt.Errorf("record event %s on node %s: count it on event %s/%s: %w", reason, nodeName, Namespace, prev.name, err)
		}
		// The Event was deleted (events live an hour by default): write a new one.
		delete(r.recent, key)
	}
	uid, err := r.nodeUID(ctx, nodeName)
	if err != nil {
		return fmt.Errorf("record event %s on node %s: %w", reason, nodeName, err)
	}
	name, err := r.create(ctx, nodeName, uid, eventType, reason, message, now)
	if err != nil {
		return fmt.Errorf("record event %s on node %s: %w", reason, nodeName, err)
	}
	r.recent[key] = &recentEvent{name: name, count: 1, last: now}
	return nil
}

// refresh (re)builds the client when the kubeconfig file changed since it
// was read; the caller holds r.mu.
func (r *Recorder) refresh() error {
	if r.kubeconfig == "" {
		return nil
	}
	fi, err := os.Stat(r.kubeconfig)
	if err != nil {
		return fmt.Errorf("event recorder kubeconfig: %w", err)
	}
	st := fileStamp{fi.ModTime(), fi.Size()}
	if r.client != nil && st == r.stamp {
		return nil
	}
	cfg, err := clientcmd.BuildConfigFromFlags("", r.kubeconfig)
	if err != nil {
		return fmt.Errorf("event recorder kubeconfig %s: %w", r.kubeconfig, err)
	}
	if err := r.connect(cfg); err != nil {
		return err
	}
	r.stamp = st
	return nil
}

func (r *Recorder) connect(cfg *rest.Config) error {
	cfg.Timeout = r.opts.Timeout
	cfg.UserAgent = r.opts.UserAgent
	hc, err := rest.HTTPClientFor(cfg)
	if err != nil {
		return fmt.Errorf("event recorder HTTP client: %w", err)
	}
	client, err := dynamic.NewForConfigAndClient(cfg, hc)
	if err != nil {
		return fmt.Errorf("event recorder client: %w", err)
	}
	if r.http != nil {
		r.http.CloseIdleConnections()
	}
	r.client, r.http = client, hc
	return nil
}

// prune forgets events older than the window, so the map stays small.
func (r *Recorder) prune(now time.Time) {
	for k, e := range r.recent {
		if now.Sub(e.last) >= r.opts.DedupeWindow {
			delete(r.recent, k)
		}
	}
}

// nodeUID returns the Node's UID, fetched once. While the Node does not
// exist yet it returns the name (the kubelet's convention, which kubectl
// describe node matches too) without caching it.
func (r *Recorder) nodeUID(ctx context.Context, name string) (types.UID, error) {
	if uid, ok := r.uids[name]; ok {
		return uid, nil
	}
	cctx, cancel := context.WithTimeout(ctx, r.opts.Timeout)
	defer cancel()
	node, err := r.client.Resource(gvrNodes).Get(cctx, name, metav1.GetOptions{})
	switch {
	case apierrors.IsNotFound(err):
		return types.UID(name), nil
	case err != nil:
		return "", fmt.Errorf("get node %s: %w", name, err)
	}
	r.uids[name] = node.GetUID()
	return node.GetUID(), nil
}

func (r *Recorder) create(ctx context.Context, nodeName string, uid types.UID, eventType, reason, message string, now time.Time) (string, error) {
	r.counter++
	ts := metav1.NewTime(now)
	ev := &corev1.Event{
		TypeMeta: metav1.TypeMeta{APIVersion: "v1", Kind: "Event"},
		ObjectMeta: metav1.ObjectMeta{
			// The kubelet's naming: <object>.<hex nanoseconds>; the counter
			// keeps two events within one clock tick apart.
			Name:      fmt.Sprintf("%s.%x", nodeName, now.UnixNano()+int64(r.counter)),
			Namespace: Namespace,
		},
		InvolvedObject:      corev1.ObjectReference{APIVersion: "v1", Kind: "Node", Name: nodeName, UID: uid},
		Reason:              reason,
		Message:             message,
		Source:              corev1.EventSource{Component: Component, Host: nodeName},
		FirstTimestamp:      ts,
		LastTimestamp:       ts,
		Count:               1,
		Type:                eventType,
		ReportingController: ReportingController,
		ReportingInstance:   nodeName,
	}
	obj, err := runtime.DefaultUnstructuredConverter.ToUnstructured(ev)
	if err != nil {
		return "", fmt.Errorf("encode event: %w", err)
	}
	cctx, cancel := context.WithTimeout(ctx, r.opts.Timeout)
	defer cancel()
	created, err := r.client.Resource(gvrEvents).Namespace(Namespace).Create(cctx, &unstructured.Unstructured{Object: obj}, metav1.CreateOptions{})
	if err != nil {
		return "", fmt.Errorf("create event: %w", err)
	}
	return created.GetName(), nil
}

// increment patches count and lastTimestamp of an Event written before.
func (r *Recorder) increment(ctx context.Context, prev *recentEvent, now time.Time) error {
	patch, err := json.Marshal(map[string]any{
		"count":         prev.count + 1,
		"lastTimestamp": metav1.NewTime(now),
	})
	if err != nil {
		return err
	}
	cctx, cancel := context.WithTimeout(ctx, r.opts.Timeout)
	defer cancel()
	if _, err := r.client.Resource(gvrEvents).Namespace(Namespace).Patch(cctx, prev.name, types.MergePatchType, patch, metav1.PatchOptions{}); err != nil {
		return err
	}
	prev.count++
	prev.last = now
	return nil
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	i := n - len("...")
	// Do not cut a UTF-8 sequence in half.
	for i > 0 && !utf8.RuneStart(s[i]) {
		i--
	}
	return s[:i] + "..."
}
