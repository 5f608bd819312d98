package nodecleanup

import (
	"context"
	"errors"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	clocktesting "k8s.io/utils/clock/testing"
)

// fakeMembers is MemberList from a table.
type fakeMembers struct {
	members []Member
	err     error
}

func (f *fakeMembers) Members(context.Context) ([]Member, error) {
	return slices.Clone(f.members), f.err
}

// fakeByIP is InstancesByIP from a table; it records what it was asked.
type fakeByIP struct {
	mu     sync.Mutex
	states map[string]string
	asked  [][]string
}

func (f *fakeByIP) StatesByPrivateIP(_ context.Context, ips []string) (map[string]string, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.asked = append(f.asked, slices.Clone(ips))
	out := map[string]string{}
	for _, ip := range ips {
		if s, ok := f.states[ip]; ok {
			out[ip] = s
		}
	}
	return out, nil
}

// orphanCleaner is a control plane "cp" (10.0.1.1) with a second control
// plane cp-2 (10.0.1.2) whose Node exists, and the etcd members given.
func orphanCleaner(members []Member, byIP map[string]string, etcd *fakeEtcd) (*Cleaner, *clocktesting.FakeClock) {
	self := node(selfNode, selfID, true, 0)
	self.ControlPlane, self.InternalIP = true, "10.0.1.1"
	cp2 := node("cp-2", idA, true, 0)
	cp2.ControlPlane, cp2.InternalIP = true, "10.0.1.2"
	nodes := &fakeNodes{nodes: []Node{self, cp2}}
	ec2 := &fakeEC2{states: map[string]string{selfID: "running", idA: "running"}}
	c := newCleaner(nodes, ec2, nil)
	clk := clocktesting.NewFakeClock(t0)
	c.Clock, c.Etcd = clk, etcd
	c.Members = &fakeMembers{members: append([]Member{{Name: selfNode, PeerHost: "10.0.1.1"}, {Name: "cp-2", PeerHost: "10.0.1.2"}}, members...)}
	c.InstancesByIP = &fakeByIP{states: byIP}
	return c, clk
}

// A member that no Node names goes at once when EC2 reports the instance
// with its address terminated, and after GoneAfter in a row when no
// instance has its address (an unstarted learner of a join that died); the
// members of Nodes and of running instances stay.
func TestOrphanMembersAreRemovedOnceTheirInstanceIsGone(t *testing.T) {
	etcd := &fakeEtcd{removed: true, reason: "it does not answer"}
	var events []string
	c, clk := orphanCleaner([]Member{
		{Name: "cp-3", PeerHost: "10.0.1.3"}, // its Node deleted by hand, instance terminated
		{PeerHost: "10.0.1.4"},               // an unstarted learner, no instance has the address
		{PeerHost: "10.0.1.5"},               // a join under way: its instance runs
	}, map[string]string{"10.0.1.3": "terminated", "10.0.1.5": "running"}, etcd)
	c.OnMemberRemoved = func(member, ip, reason string) { events = append(events, member+"@"+ip+": "+reason) }
	r, err := c.Once(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(etcd.calls, []string{"cp-3@10.0.1.3"}) || !slices.Equal(r.MembersRemoved, []string{"cp-3 (10.0.1.3)"}) {
		t.Fatalf("first pass: removals %v, reported %v; want cp-3 alone", etcd.calls, r.MembersRemoved)
	}
	if len(events) != 1 || !strings.Contains(events[0], "EC2 reports the instance with its address 10.0.1.3 terminated") {
		t.Errorf("events %q", events)
	}
	// The fake etcd still lists cp-3: drop it as a real removal would.
	c.Members.(*fakeMembers).members = slices.DeleteFunc(c.Members.(*fakeMembers).members, func(m Member) bool { return m.Name == "cp-3" })
	clk.Step(c.GoneAfter - time.Second)
	if _, err := c.Once(context.Background()); err != nil {
		t.Fatal(err)
	}
	if len(etcd.calls) != 1 {
		t.Fatalf("removals %v before the unknown address was gone for %s", etcd.calls, c.GoneAfter)
	}
	clk.Step(time.Second)
	r, err = c.Once(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(etcd.calls, []string{"cp-3@10.0.1.3", "@10.0.1.4"}) || !slices.Equal(r.MembersRemoved, []string{"an unstarted member (10.0.1.4)"}) {
		t.Errorf("after %s: removals %v, reported %v; want the unstarted member too, never 10.0.1.5", c.GoneAfter, etcd.calls, r.MembersRemoved)
	}
}

// Nothing is removed for an unknown address while EC2 does not report this
// instance running (the wrong region or account would make every address
// unknown), and a refused removal keeps the member, logged once.
func TestOrphanMembersAreKeptWhenInDoubt(t *testing.T) {
	etcd := &fakeEtcd{removed: false, reason: "it is alive"}
	c, clk := orphanCleaner([]Member{{Name: "cp-3", PeerHost: "10.0.1.3"}, {PeerHost: "10.0.1.4"}},
		map[string]string{"10.0.1.3": "shutting-down"}, etcd)
	c.Instances.(*fakeEC2).states[selfID] = "stopped"
	for i := 0; i < 3; i++ {
		if _, err := c.Once(context.Background()); err != nil {
			t.Fatal(err)
		}
		clk.Step(c.GoneAfter)
	}
	if !slices.Equal(etcd.calls, []string{"cp-3@10.0.1.3", "cp-3@10.0.1.3", "cp-3@10.0.1.3"}) {
		t.Errorf("removals %v; want cp-3 tried (refused) at each pass and never the unknown address", etcd.calls)
	}
	if !c.warned["orphan:10.0.1.3"] {
		t.Error("the refused removal was not logged")
	}
}

// A member whose Node appears (a join that finished) is no orphan: the time
// it was seen without one starts again.
func TestOrphanClockRestartsWhenANodeNamesTheMember(t *testing.T) {
	etcd := &fakeEtcd{removed: true}
	c, clk := orphanCleaner([]Member{{Name: "cp-3", PeerHost: "10.0.1.3"}}, nil, etcd)
	if _, err := c.Once(context.Background()); err != nil {
		t.Fatal(err)
	}
	cp3 := node("cp-3", idB, true, 0)
	cp3.ControlPlane, cp3.InternalIP = true, "10.0.1.3"
	nodes := c.Nodes.(*fakeNodes)
	nodes.nodes = append(nodes.nodes, cp3)
	c.Instances.(*fakeEC2).states[idB] = "running"
	clk.Step(c.GoneAfter / 2)
	if _, err := c.Once(context.Background()); err != nil {
		t.Fatal(err)
	}
	nodes.nodes = nodes.nodes[:2] // its Node deleted by hand
	clk.Step(c.GoneAfter / 2)
	if _, err := c.Once(context.Background()); err != nil {
		t.Fatal(err)
	}
	if len(etcd.calls) != 0 {
		t.Errorf("removals %v: the member was without a Node for less than %s in a row", etcd.calls, c.GoneAfter)
	}
}

// A failed member list fails the pass (logged by Run) but deletes nothing.
func TestOrphanSweepWithoutAMemberList(t *testing.T) {
	etcd := &fakeEtcd{removed: true}
	c, _ := orphanCleaner(nil, nil, etcd)
	c.Members.(*fakeMembers).err = errors.New("connection refused")
	if _, err := c.Once(context.Background()); err == nil || !strings.Contains(err.Error(), "list etcd members: connection refused") {
		t.Errorf("pass error %v", err)
	}
	if len(etcd.calls) != 0 {
		t.Errorf("removals %v", etcd.calls)
	}
}
