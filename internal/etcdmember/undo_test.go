package etcdmember

import (
	"context"
	"errors"
	"io/fs"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// The member of an unfinished join ("x") may be removed only while the
// healthy voters, x counted when it answers, commit the removal and the
// healthy others keep the quorum of what is left.
func TestOwnRemovalSafe(t *testing.T) {
	for _, tc := range []struct {
		name    string
		members []fakeMember
		want    Decision
		reason  string
	}{
		{
			// The power-loss case: a promoted second member whose etcd
			// is down; removing it needs 2 healthy of 2 (kubeadm reset
			// would fail to remove it and wipe its data: no quorum ever).
			name:    "2 voters, this node's down",
			members: []fakeMember{{id: 1, name: "a", health: healthy}, {id: 3, name: "x"}},
			want:    Refused, reason: "only 1 are healthy (1 of them others): removing it needs 2 healthy to commit",
		},
		{
			name:    "2 voters, this node's healthy again",
			members: []fakeMember{{id: 1, name: "a", health: healthy}, {id: 3, name: "x", health: healthy}},
			want:    Safe, reason: "2 healthy (quorum 2) commit its removal and 1 healthy others keep the quorum (1) of the 1 left",
		},
		{
			name:    "3 voters, this node's down, the others healthy",
			members: []fakeMember{{id: 1, name: "a", health: healthy}, {id: 2, name: "b", health: healthy}, {id: 3, name: "x"}},
			want:    Safe,
		},
		{
			// The removal would commit (2 of 3) but leave a, b with one
			// healthy: no quorum afterwards.
			name:    "3 voters, this node's healthy, another down",
			members: []fakeMember{{id: 1, name: "a", health: healthy}, {id: 2, name: "b"}, {id: 3, name: "x", health: healthy}},
			want:    Refused, reason: "leaves 2 voting members that need 2 healthy",
		},
		{
			name:    "a learner that never started",
			members: []fakeMember{{id: 1, name: "a", health: healthy}, {id: 3, name: "x", learner: true, unstarted: true, peerHost: "127.0.0.9"}},
			want:    Safe, reason: "it is a learner",
		},
		{
			name:    "no member of this node",
			members: []fakeMember{{id: 1, name: "a", health: healthy}, {id: 2, name: "b", health: healthy}},
			want:    NotFound,
		},
		{
			name:    "two members match (by name and by peer host)",
			members: []fakeMember{{id: 1, name: "a", health: healthy}, {id: 2, name: "x", health: healthy}, {id: 3, unstarted: true, peerHost: "127.0.0.9"}},
			want:    Refused, reason: "2 etcd members match",
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := newFakeEtcd(t, tc.members...)
			r, err := f.client(t).OwnRemovalSafe(context.Background(), Target{Name: "x", PeerHost: "127.0.0.9"})
			if err != nil {
				t.Fatal(err)
			}
			if r.Decision != tc.want || !strings.Contains(r.Reason, tc.reason) {
				t.Errorf("decision %s (%s), want %s with %q", r.Decision, r.Reason, tc.want, tc.reason)
			}
			if n := len(f.removeCalls()); n != 0 {
				t.Errorf("%d member removes: the check must never remove", n)
			}
		})
	}
}

// With no endpoint answering the member list there is no decision.
func TestOwnRemovalSafeWithoutAnAnswer(t *testing.T) {
	c, err := New(Config{Endpoints: []string{deadURL(t), deadURL(t)}, TLS: newTestPKI(t).clientTLS()})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	r, err := c.OwnRemovalSafe(context.Background(), Target{Name: "x"})
	if err == nil || r.Decision != "" {
		t.Fatalf("decision %q, error %v; want no decision and an error", r.Decision, err)
	}
}

// The peers of a joining member's manifest are the other members of its
// --initial-cluster, at their client port.
func TestManifestPeers(t *testing.T) {
	dir := t.TempDir()
	write := func(initialCluster string) string {
		p := filepath.Join(dir, "etcd.yaml")
		doc := `apiVersion: v1
kind: Pod
metadata:
  name: etcd
  namespace: kube-system
spec:
  containers:
  - name: etcd
    command:
    - etcd
    - --advertise-client-urls=https://10.0.1.3:2379
    - --initial-cluster=` + initialCluster + `
    - --initial-cluster-state=existing
`
		if err := os.WriteFile(p, []byte(doc), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	p := write("cp-1=https://10.0.1.1:2380,cp-3=https://10.0.1.3:2380,cp-2=https://10.0.1.2:2380")
	got, err := ManifestPeers(p, "10.0.1.3")
	want := []string{"https://10.0.1.1:2379", "https://10.0.1.2:2379"}
	if err != nil || !slices.Equal(got, want) {
		t.Errorf("peers %v, %v; want %v", got, err, want)
	}
	p = write("cp-1=https://10.0.1.1:2380,cp-3")
	if _, err := ManifestPeers(p, "10.0.1.3"); err == nil || !strings.Contains(err.Error(), `"cp-3"`) {
		t.Errorf("a malformed entry: %v, want an error naming it", err)
	}
	if _, err := ManifestPeers(filepath.Join(dir, "none.yaml"), "10.0.1.3"); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("a missing manifest: %v, want fs.ErrNotExist", err)
	}
}

// RemoveByID asks the endpoints in order; "member not found" counts as done.
func TestRemoveByID(t *testing.T) {
	f := newFakeEtcd(t, fakeMember{id: 1, name: "a", health: healthy}, fakeMember{id: 3, name: "x"})
	c, err := New(Config{Endpoints: []string{deadURL(t), f.gateway.URL}, TLS: f.pki.clientTLS()})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if err := c.RemoveByID(context.Background(), 3); err != nil {
		t.Fatalf("first removal: %v", err)
	}
	if calls := f.removeCalls(); len(calls) != 1 || !strings.Contains(calls[0], `"3"`) {
		t.Errorf("remove calls %v, want one for member 3", calls)
	}
	f.removeErr = func(w http.ResponseWriter) {
		http.Error(w, `{"code":5,"message":"etcdserver: member not found"}`, http.StatusNotFound)
	}
	if err := c.RemoveByID(context.Background(), 3); err != nil {
		t.Errorf("a member already gone: %v, want no error", err)
	}
	f.removeErr = func(w http.ResponseWriter) {
		http.Error(w, `{"code":14,"message":"etcdserver: unhealthy cluster"}`, http.StatusServiceUnavailable)
	}
	if err := c.RemoveByID(context.Background(), 3); err == nil || !strings.Contains(err.Error(), "unhealthy cluster") {
		t.Errorf("a refused removal: %v, want the gateway's error", err)
	}
}
