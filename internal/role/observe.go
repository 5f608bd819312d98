package role

import (
	"context"
	"errors"
	"time"

	"github.com/kubestrap/kubestrap/internal/join"
	"github.com/kubestrap/kubestrap/internal/kubeadm"
)

// WorkerObserver hears what a worker did, for the agent's metrics. Every
// result is one of the fixed classes below (JoinResults, FetchResults): never
// a token, a node name or anything read from S3.
type WorkerObserver interface {
	// JoinAttempt is called after every kubeadm join run with its result
	// class and how long it took.
	JoinAttempt(result string, d time.Duration)
	// Fetch is called after every poll of the join info with its result class.
	Fetch(result string)
}

// ControlPlaneObserver hears what a control plane did, for the agent's metrics.
type ControlPlaneObserver interface {
	// Published is called whenever the join info in S3 is known to be this
	// agent's: after every publication and at every steady-state round.
	Published(generation int64, tokenExpires time.Time)
}

// Join results (WorkerObserver.JoinAttempt).
const (
	JoinSuccess             = "success"
	JoinTokenRejected       = "token_rejected"
	JoinNodeStillRegistered = "node_still_registered"
	JoinTimeout             = "timeout"
	JoinFailure             = "failure"
)

// JoinResults lists every join result class; the last one is the catch-all.
var JoinResults = []string{JoinSuccess, JoinTokenRejected, JoinNodeStillRegistered, JoinTimeout, JoinFailure}

// Join info fetch results (WorkerObserver.Fetch): one per poll. A refusal
// takes precedence over changed / not_modified, since the fetched object
// (new or not) could not be used.
const (
	FetchChanged           = "changed"
	FetchNotModified       = "not_modified"
	FetchNotFound          = "not_found"
	FetchAccessDenied      = "access_denied"
	FetchRefusedExpired    = "refused_expired"
	FetchRefusedCluster    = "refused_cluster"
	FetchRefusedGeneration = "refused_generation"
	FetchRefusedInvalid    = "refused_invalid"
	FetchError             = "error"
)

// FetchResults lists every fetch result class; the last one is the catch-all.
var FetchResults = []string{FetchChanged, FetchNotModified, FetchNotFound, FetchAccessDenied,
	FetchRefusedExpired, FetchRefusedCluster, FetchRefusedGeneration, FetchRefusedInvalid, FetchError}

// joinResult classifies the outcome of one kubeadm join run.
func joinResult(err error) string {
	switch {
	case err == nil:
		return JoinSuccess
	case kubeadm.IsTokenRejected(err):
		return JoinTokenRejected
	case kubeadm.IsNodeStillRegistered(err):
		return JoinNodeStillRegistered
	case errors.Is(err, context.DeadlineExceeded):
		return JoinTimeout
	}
	return JoinFailure
}

// refusedResult classifies a validation failure of join info.
func refusedResult(err error) string {
	var r *join.Rejection
	if errors.As(err, &r) {
		switch r.Field {
		case "expiresAt":
			return FetchRefusedExpired
		case "cluster":
			return FetchRefusedCluster
		}
	}
	return FetchRefusedInvalid
}

func (w *Worker) observeFetch(result string) {
	if w.Observer != nil {
		w.Observer.Fetch(result)
	}
}

func (w *Worker) observeJoin(result string, d time.Duration) {
	if w.Observer != nil {
		w.Observer.JoinAttempt(result, d)
	}
}

func (c *ControlPlane) observePublished(generation int64, expires time.Time) {
	if c.Observer != nil {
		c.Observer.Published(generation, expires)
	}
}
