// Package state keeps the agent's state in <stateDir>/state.json: the phase
// it is in and what `kubestrap status` prints. It never holds a secret.
package state

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"time"

	"github.com/kubestrap/kubestrap/internal/fsutil"
)

// FileName is the state file inside the state directory.
const FileName = "state.json"

// Phase is where the agent is in its role's lifecycle.
type Phase string

// Phases of both roles.
const (
	PhaseStarting        Phase = "Starting"
	PhaseWaitingJoinInfo Phase = "WaitingForJoinInfo"
	PhaseJoining         Phase = "Joining"
	PhaseJoinFailed      Phase = "JoinFailed"
	PhaseJoined          Phase = "Joined"
	// PhaseLeaving: a termination notice came; the node is cordoned and its
	// pods evicted before the deadline (the message says how far it got).
	PhaseLeaving      Phase = "Leaving"
	PhaseInitializing Phase = "Initializing"
	PhaseInitFailed   Phase = "InitFailed"
	PhaseWaitingAPI   Phase = "WaitingForAPIServer"
	PhasePublishing   Phase = "Publishing"
	PhasePublished    Phase = "Published"
	PhaseDegraded     Phase = "Degraded"
	// PhaseBlocked means the agent found something it must not repair on
	// its own (a control plane whose files disagree with its state, a join
	// whose kubeconfig is not where the configuration says); STATUS says
	// what and what the operator should do. The agent keeps checking.
	PhaseBlocked Phase = "Blocked"
	// PhaseWaitingInitLock: a control plane waits for the init lock another
	// control-plane node holds (initLockHolder names it).
	PhaseWaitingInitLock Phase = "WaitingForInitLock"
	// PhaseWaitingToJoin: the cluster was initialized by another control
	// plane (initializedBy); this node never runs kubeadm init for it.
	PhaseWaitingToJoin Phase = "WaitingToJoinControlPlane"
	// PhaseJoiningControlPlane: this node runs kubeadm join --control-plane
	// under the join lock (<cluster>/cp/join-lock.json).
	PhaseJoiningControlPlane Phase = "JoiningControlPlane"
	// PhaseStandby: a control-plane member that does not hold the uploader
	// lock; another control plane (uploaderLockHolder) publishes join info,
	// and this one takes over when that one is gone.
	PhaseStandby Phase = "Standby"
)

// State is the content of state.json.
type State struct {
	Role      string    `json:"role"`
	Cluster   string    `json:"cluster"`
	NodeName  string    `json:"nodeName,omitempty"`
	Phase     Phase     `json:"phase"`
	Message   string    `json:"message,omitempty"`
	UpdatedAt time.Time `json:"updatedAt"`

	// Join info: the generation last published (control plane) or used to join (worker).
	JoinGeneration int64     `json:"joinGeneration,omitempty"`
	TokenID        string    `json:"tokenId,omitempty"`
	TokenExpiresAt time.Time `json:"tokenExpiresAt,omitzero"`
	// Control plane only.
	LastPublish   time.Time `json:"lastPublish,omitzero"`
	PublishedETag string    `json:"publishedETag,omitempty"`
	APIEndpoint   string    `json:"apiServerEndpoint,omitempty"`
	InitializedAt time.Time `json:"initializedAt,omitzero"`
	// InitStartedAt is written before kubeadm init runs; with InitializedAt
	// still zero it marks an init that was interrupted.
	InitStartedAt time.Time `json:"initStartedAt,omitzero"`
	// PendingTokenID is a token created in the cluster whose join info is
	// not known to be published yet (its secret lives only in memory).
	PendingTokenID string `json:"pendingTokenId,omitempty"`
	// InitializedBy is the EC2 instance ID that ran kubeadm init for the
	// cluster, from <cluster>/cp/initialized.json (this node's own ID on the
	// node that initialized it).
	InitializedBy string `json:"initializedBy,omitempty"`
	// InitLockHolder is who holds <cluster>/cp/init-lock.json, as last seen:
	// another node while this one waits for it, this node while it runs
	// kubeadm init; empty once released or not looked at.
	InitLockHolder string `json:"initLockHolder,omitempty"`
	// InitLockGeneration is the init lock's generation under which this
	// node ran (or runs) kubeadm init; it goes into the initialized marker.
	InitLockGeneration int64 `json:"initLockGeneration,omitempty"`
	// ControlPlaneJoinStartedAt is written before kubeadm join
	// --control-plane runs; with InitializedAt still zero it marks a join
	// that was interrupted (undone with kubeadm reset -f, then joined again).
	ControlPlaneJoinStartedAt time.Time `json:"controlPlaneJoinStartedAt,omitzero"`
	// ControlPlaneJoinedAt is when this node joined the control plane of the
	// cluster InitializedBy initialized.
	ControlPlaneJoinedAt time.Time `json:"controlPlaneJoinedAt,omitzero"`
	// UploaderLockHolder is who holds <cluster>/cp/uploader-lock.json (the
	// control plane that publishes join info), as last seen.
	UploaderLockHolder string `json:"uploaderLockHolder,omitempty"`
	// ControlPlaneInfoGeneration and CertificatesUploadedAt describe the
	// control-plane join info this node last published.
	ControlPlaneInfoGeneration int64     `json:"controlPlaneInfoGeneration,omitempty"`
	CertificatesUploadedAt     time.Time `json:"certificatesUploadedAt,omitzero"`
	// RetiredTokens were superseded by a newer publication; each is deleted
	// from the cluster once workers that read the old info had time to join.
	RetiredTokens []RetiredToken `json:"retiredTokens,omitempty"`
	JoinedAt      time.Time      `json:"joinedAt,omitzero"`
	// ECR credentials.
	ECRExpiresAt   time.Time `json:"ecrExpiresAt,omitzero"`
	ECRRefreshedAt time.Time `json:"ecrRefreshedAt,omitzero"`
	ECRRegistries  []string  `json:"ecrRegistries,omitempty"`
	ECRError       string    `json:"ecrError,omitempty"`
	// Add-ons (control plane): when this agent process last applied every
	// add-on manifest, or why it could not.
	AddonsAppliedAt time.Time `json:"addonsAppliedAt,omitzero"`
	AddonsError     string    `json:"addonsError,omitempty"`
	// Certificates (control plane): the earliest expiry of kubeadm's
	// certificates (CAs aside) at the last check, and the last renewal.
	CertificatesExpireAt  time.Time `json:"certificatesExpireAt,omitzero"`
	CertificatesRenewedAt time.Time `json:"certificatesRenewedAt,omitzero"`
	// MetricsError is why the metrics listener (metrics.address) is not
	// serving, or "".
	MetricsError string `json:"metricsError,omitempty"`
}

// RetiredToken is a superseded bootstrap token kept alive for a while.
type RetiredToken struct {
	ID          string    `json:"id"`
	DeleteAfter time.Time `json:"deleteAfter"`
}

// Path returns the state file path inside dir.
func Path(dir string) string { return filepath.Join(dir, FileName) }

// Load reads the state file; a missing file yields an empty State and no error.
func Load(dir string) (*State, error) {
	b, err := os.ReadFile(Path(dir))
	if errors.Is(err, fs.ErrNotExist) {
		return &State{}, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read state: %w", err)
	}
	var s State
	if err := json.Unmarshal(b, &s); err != nil {
		return nil, &CorruptError{Path: Path(dir), Err: err}
	}
	return &s, nil
}

// CorruptError is a state file that exists but cannot be decoded.
type CorruptError struct {
	Path string
	Err  error
}

func (e *CorruptError) Error() string { return fmt.Sprintf("decode state %s: %v", e.Path, e.Err) }

func (e *CorruptError) Unwrap() error { return e.Err }

// LoadOrSetAside reads the state file; a file that cannot be decoded (a torn
// disk, a bad hand edit) is renamed to state.json.corrupt-<unix time> and an
// empty State is returned with the new name, so the agent can rebuild its
// state from the node instead of failing at every start.
func LoadOrSetAside(dir string, now time.Time) (s *State, setAside string, err error) {
	s, err = Load(dir)
	var ce *CorruptError
	if !errors.As(err, &ce) {
		return s, "", err
	}
	aside := fmt.Sprintf("%s.corrupt-%d", Path(dir), now.Unix())
	if rerr := os.Rename(Path(dir), aside); rerr != nil {
		return nil, "", fmt.Errorf("%w; moving it aside failed: %v", err, rerr)
	}
	return &State{}, aside, nil
}

// Save writes the state file atomically.
func Save(dir string, s *State) error {
	b, err := json.MarshalIndent(s, "", "  ")
	if err != nil {
		return fmt.Errorf("encode state: %w", err)
	}
	if err := fsutil.WriteFileAtomic(Path(dir), append(b, '\n'), 0o644); err != nil {
		return fmt.Errorf("save state: %w", err)
	}
	return nil
}
