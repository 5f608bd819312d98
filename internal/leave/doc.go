// Package leave is the node side of a graceful leave on EC2 (issue 10): a
// Watcher polls the instance metadata service (IMDSv2) for a spot
// interruption, an Auto Scaling termination held by a lifecycle hook, or a
// rebalance recommendation, and emits each notice once; a Leaver then
// records an Event on the Node, cordons it, evicts its pods through the
// Eviction API until the notice's deadline and, for an Auto Scaling
// termination, heartbeats and completes the lifecycle action (CONTINUE).
// A rebalance recommendation only cordons.
//
// # Credentials: the node's own
//
// The Leaver runs with the kubelet's credentials (/etc/kubernetes/kubelet.conf:
// user system:node:<name>, group system:nodes) and needs no RBAC grant. It
// talks to the API server with client-go's dynamic client and the core/v1
// and policy/v1 types, never the typed clientset or discovery (they would
// add over 12 MB to the agent). What a node may do, in
// k8s.io/kubernetes@v1.37.2:
//
//   - Cordon. The Node authorizer allows a node to patch any Node
//     (plugin/pkg/auth/authorizer/node/node_authorizer.go:427-433,
//     authorizeNode: "Use the NodeRestriction admission plugin to limit a
//     node to creating/updating its own API object"). NodeRestriction then
//     refuses a Node other than its own
//     (plugin/pkg/admission/noderestriction/admission.go:553-555) and, on its
//     own Node, changes to configSource, taints, ownerReferences and labels
//     outside the allowed set (admission.go:577-612, taints 596-598); it does
//     not look at spec.unschedulable, so a node may cordon itself. The patch
//     is a JSON merge patch of spec.unschedulable alone, which changes none
//     of those. (The node lifecycle controller adds the
//     node.kubernetes.io/unschedulable taint afterwards with its own
//     credentials.)
//   - List its pods. A node may list pods only with the field selector
//     spec.nodeName=<its name> (node_authorizer.go:468-482, authorizePod);
//     without it the list is forbidden.
//   - Evict. The Node authorizer allows pods/eviction create
//     (node_authorizer.go:498-503), and the static node rules hold it too
//     (plugin/pkg/auth/authorizer/rbac/bootstrappolicy/policy.go:241-243);
//     NodeRestriction lets a node evict only pods bound to itself
//     (admission.go:216-217 routes evictions to admitPodEviction,
//     admission.go:461-494; the check is at 485-488). The API server checks
//     the PodDisruptionBudgets itself and answers 429 when one would be
//     violated (pkg/registry/core/pod/storage/eviction.go:300-309, 414-419): the node
//     needs no access to PDBs.
//   - Not read DaemonSets. Everything the Node authorizer does not
//     subdivide is checked against the static node rules only
//     (node_authorizer.go:170-174; the rules are bootstrappolicy.NodeRules(),
//     pkg/kubeapiserver/authorizer/config.go:124), and NodeRules
//     (policy.go:214-312) grant nothing in the apps group: a GET of a
//     DaemonSet is forbidden. kubectl's drain library GETs the DaemonSet of
//     every DaemonSet pod before it filters it out
//     (k8s.io/kubectl@v0.37.2 pkg/drain/filters.go:179-202, the GET at 195),
//     so drain.Helper fails with kubelet credentials. The Leaver decides from
//     the pod's controllerRef alone (kind DaemonSet in group apps, kubectl's
//     isControllerRefDaemonSet test) and never reads a DaemonSet.
//   - Events: see internal/events (create/patch allowed by the static node
//     rules, policy.go:229-230).
//
// NodeRestriction is off unless enabled (it is not among the default-on
// plugins, pkg/kubeapiserver/options/plugins.go:164-192); kubeadm enables it
// (cmd/kubeadm/app/phases/controlplane/manifests.go:188,
// --enable-admission-plugins=NodeRestriction). Without it the Node
// authorizer alone lets a node patch any Node and evict any pod: the
// Leaver only ever names its own Node and pods listed by its own
// spec.nodeName.
//
// # Deadlines
//
// A spot notice's deadline is the action time or 110 s after the notice was
// seen, whichever is earlier (the notice comes two minutes ahead); an ASG
// notice's is when it was seen plus the caller's budget (from the hook's
// heartbeat timeout). Grace periods are capped at the time left before the
// deadline minus a margin; at the deadline the Leaver stops and reports
// what it left. Every request and wait is bounded and promised to the
// progress board first.
package leave
