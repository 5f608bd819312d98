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
	PhaseInitializing    Phase = "Initializing"
	PhaseInitFailed      Phase = "InitFailed"
	PhaseWaitingAPI      Phase = "WaitingForAPIServer"
	PhasePublishing      Phase = "Publishing"
	PhasePublished       Phase = "Published"
	PhaseDegraded        Phase = "Degraded"
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
	JoinedAt      time.Time `json:"joinedAt,omitzero"`
	// ECR credentials.
	ECRExpiresAt   time.Time `json:"ecrExpiresAt,omitzero"`
	ECRRefreshedAt time.Time `json:"ecrRefreshedAt,omitzero"`
	ECRRegistries  []string  `json:"ecrRegistries,omitempty"`
	ECRError       string    `json:"ecrError,omitempty"`
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
		return nil, fmt.Errorf("decode state %s: %w", Path(dir), err)
	}
	return &s, nil
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
