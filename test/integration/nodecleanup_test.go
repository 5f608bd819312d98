//go:build integration

package integration

import (
	"context"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	ec2types "github.com/aws/aws-sdk-go-v2/service/ec2/types"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/kubestrap/kubestrap/internal/leave"
	"github.com/kubestrap/kubestrap/internal/nodecleanup"
)

var cleanupGVRNodes = schema.GroupVersionResource{Version: "v1", Resource: "nodes"}

// recreatingNodes is the real KubeNodes, except that just before deleting
// node it replaces that Node by a new one of the same name (another
// instance that took the name), as can happen between a List and a Delete.
type recreatingNodes struct {
	*nodecleanup.KubeNodes
	dyn  dynamic.Interface
	node string
}

func (r *recreatingNodes) Delete(ctx context.Context, n nodecleanup.Node) error {
	if n.Name == r.node {
		if err := r.dyn.Resource(cleanupGVRNodes).Delete(ctx, n.Name, metav1.DeleteOptions{}); err != nil {
			return err
		}
		if _, err := r.dyn.Resource(cleanupGVRNodes).Create(ctx, cleanupNode(n.Name, ""), metav1.CreateOptions{}); err != nil {
			return err
		}
	}
	return r.KubeNodes.Delete(ctx, n)
}

func cleanupNode(name, instanceID string) *unstructured.Unstructured {
	spec := map[string]any{}
	if instanceID != "" {
		spec["providerID"] = "aws:///eu-west-1a/" + instanceID
	}
	return &unstructured.Unstructured{Object: map[string]any{"apiVersion": "v1", "kind": "Node",
		"metadata": map[string]any{"name": name}, "spec": spec}}
}

// TestNodeCleanupAgainstRealServices runs the control plane's node cleanup
// against a real kube-apiserver (admin credentials, as on the control
// plane) and moto's EC2 and S3: the Node of a terminated instance and that
// of an instance EC2 no longer knows but that posted a leave record are
// deleted; those of running and stopped instances, the control plane's own
// and a Node without a providerID stay; leave records go with their
// instances; a Node that was replaced by a new one of the same name between
// the list and the delete is not deleted (UID precondition).
func TestNodeCleanupAgainstRealServices(t *testing.T) {
	cp := startHostControlPlane(t)
	moto := startMoto(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()

	ec2c := ec2.New(ec2.Options{Region: "eu-west-1", BaseEndpoint: aws.String(moto),
		Credentials: credentials.NewStaticCredentialsProvider("harness", "harness", "")})
	images, err := ec2c.DescribeImages(ctx, &ec2.DescribeImagesInput{})
	if err != nil || len(images.Images) == 0 {
		t.Fatalf("moto images: %v", err)
	}
	run, err := ec2c.RunInstances(ctx, &ec2.RunInstancesInput{ImageId: images.Images[0].ImageId, MinCount: aws.Int32(5),
		MaxCount: aws.Int32(5), InstanceType: ec2types.InstanceTypeT3Small})
	if err != nil || len(run.Instances) != 5 {
		t.Fatalf("run instances: %v", err)
	}
	id := func(i int) string { return aws.ToString(run.Instances[i].InstanceId) }
	self, running, terminated, stopped, replaced := id(0), id(1), id(2), id(3), id(4)
	if _, err := ec2c.TerminateInstances(ctx, &ec2.TerminateInstancesInput{InstanceIds: []string{terminated, replaced}}); err != nil {
		t.Fatal(err)
	}
	if _, err := ec2c.StopInstances(ctx, &ec2.StopInstancesInput{InstanceIds: []string{stopped}}); err != nil {
		t.Fatal(err)
	}
	const unknown = "i-0feedfacefeedface" // EC2 has never heard of it (terminated long ago)

	restCfg, err := clientcmd.BuildConfigFromFlags("", cp.admin)
	if err != nil {
		t.Fatal(err)
	}
	dyn := dynamic.NewForConfigOrDie(restCfg)
	for name, iid := range map[string]string{"cp": self, "w-running": running, "w-terminated": terminated,
		"w-stopped": stopped, "w-replaced": replaced, "w-unknown": unknown, "bare-metal": ""} {
		if _, err := dyn.Resource(cleanupGVRNodes).Create(ctx, cleanupNode(name, iid), metav1.CreateOptions{}); err != nil {
			t.Fatalf("create Node %s: %v", name, err)
		}
	}

	const bucket, cluster = "cleanup-bootstrap", "demo"
	s3c := s3Client(moto)
	createBucket(t, s3c, bucket)
	store := &leave.RecordStore{Client: s3c, Bucket: bucket, Cluster: cluster}
	notice := leave.Notice{Kind: leave.Spot, NoticeTime: time.Now(), Deadline: time.Now().Add(110 * time.Second), Action: "terminate"}
	for node, iid := range map[string]string{"w-terminated": terminated, "w-unknown": unknown, "w-running": running} {
		if err := store.Put(ctx, leave.NewRecord(iid, node, notice)); err != nil {
			t.Fatalf("put leave record of %s: %v", node, err)
		}
	}
	// Not a leave record: kept (until the TTL), never acted on.
	putObject(t, s3c, bucket, leave.RecordPrefix(cluster)+"junk.json", []byte(`{"schema":"x"}`))

	kube, err := nodecleanup.NewKubeNodes(cp.admin)
	if err != nil {
		t.Fatal(err)
	}
	c := &nodecleanup.Cleaner{Nodes: &recreatingNodes{KubeNodes: kube, dyn: dyn, node: "w-replaced"},
		Instances: &nodecleanup.EC2Instances{Client: ec2c}, Records: store, SelfInstance: self, SelfNode: "cp"}

	// First pass: w-replaced's delete meets the new Node and is refused
	// (reported); the rest is done.
	r, err := c.Once(ctx)
	if err == nil || !strings.Contains(err.Error(), "w-replaced") {
		t.Fatalf("first pass: err %v, want the refused delete of the replaced Node", err)
	}
	t.Logf("first pass: deleted %+v, kept %v, records removed %v; %v", r.Deleted, r.Kept, r.RecordsRemoved, err)
	// Second pass: the replacement has no providerID (a node still
	// registering): it is left alone.
	if r, err = c.Once(ctx); err != nil || len(r.Deleted) != 0 {
		t.Fatalf("second pass: deleted %+v, err %v; want nothing more to do", r.Deleted, err)
	}

	list, err := dyn.Resource(cleanupGVRNodes).List(ctx, metav1.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, n := range list.Items {
		names = append(names, n.GetName())
	}
	sort.Strings(names)
	if want := []string{"bare-metal", "cp", "w-replaced", "w-running", "w-stopped"}; !slices.Equal(names, want) {
		t.Errorf("Nodes left %v, want %v", names, want)
	}
	recs, err := store.List(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var keys []string
	for _, rec := range recs {
		keys = append(keys, strings.TrimPrefix(rec.Key, leave.RecordPrefix(cluster)))
	}
	sort.Strings(keys)
	want := []string{running + ".json", "junk.json"}
	sort.Strings(want)
	if !slices.Equal(keys, want) {
		t.Errorf("leave records left %v, want %v (the running instance's, and the invalid one until its TTL)", keys, want)
	}
}
