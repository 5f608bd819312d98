//go:build integration

package integration

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/pem"
	"fmt"
	"math/big"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/kubestrap/kubestrap/internal/events"
)

var gvrNodes = schema.GroupVersionResource{Version: "v1", Resource: "nodes"}

// kubectl runs kubectl against the harness's API server.
func kubectl(t *testing.T, kubeconfig string, args ...string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	out, err := exec.CommandContext(ctx, "kubectl", append([]string{"--kubeconfig", kubeconfig}, args...)...).CombinedOutput()
	if err != nil {
		t.Fatalf("kubectl %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return string(out)
}

// createNode registers a Node object (no kubelet behind it) and returns its UID.
func createNode(t *testing.T, dyn dynamic.Interface, name string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	n := &unstructured.Unstructured{Object: map[string]any{"apiVersion": "v1", "kind": "Node",
		"metadata": map[string]any{"name": name}}}
	created, err := dyn.Resource(gvrNodes).Create(ctx, n, metav1.CreateOptions{})
	if err != nil {
		t.Fatalf("create node %s: %v", name, err)
	}
	return string(created.GetUID())
}

// nodeKubeconfig mints a kubelet-like identity (system:node:<name> in group
// system:nodes) signed by the harness CA and returns a kubeconfig for it.
func nodeKubeconfig(t *testing.T, cp *hostControlPlane, name string) string {
	t.Helper()
	caPEM, err := os.ReadFile(cp.caCert)
	if err != nil {
		t.Fatal(err)
	}
	block, _ := pem.Decode(caPEM)
	caCert, err := x509.ParseCertificate(block.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	keyPEM, err := os.ReadFile(filepath.Join(cp.dir, "pki", "ca.key"))
	if err != nil {
		t.Fatal(err)
	}
	kb, _ := pem.Decode(keyPEM)
	var caKey crypto.Signer
	if k, err := x509.ParsePKCS1PrivateKey(kb.Bytes); err == nil {
		caKey = k
	} else if k, err := x509.ParsePKCS8PrivateKey(kb.Bytes); err == nil {
		caKey = k.(crypto.Signer)
	} else if k, err := x509.ParseECPrivateKey(kb.Bytes); err == nil {
		caKey = k
	} else {
		t.Fatalf("parse ca.key: %v", err)
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(time.Now().UnixNano()),
		Subject:   pkix.Name{CommonName: "system:node:" + name, Organization: []string{"system:nodes"}},
		NotBefore: time.Now().Add(-time.Minute), NotAfter: time.Now().Add(time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, caCert, key.Public(), caKey)
	if err != nil {
		t.Fatal(err)
	}
	kder, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	b64 := base64.StdEncoding.EncodeToString
	kc := fmt.Sprintf(`apiVersion: v1
kind: Config
clusters: [{name: demo, cluster: {server: "https://%s", certificate-authority-data: %s}}]
users: [{name: node, user: {client-certificate-data: %s, client-key-data: %s}}]
contexts: [{name: node, context: {cluster: demo, user: node}}]
current-context: node
`, cp.endpoint, b64(caPEM), b64(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})),
		b64(pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kder})))
	return writeTemp(t, "kubelet-"+name+".conf", []byte(kc))
}

// eventRows lists the node's events as "TYPE REASON COUNT KIND UID COMPONENT"
// lines, as `kubectl get events --field-selector involvedObject.name=<node>` finds them.
func eventRows(t *testing.T, admin, node string) []string {
	t.Helper()
	out := kubectl(t, admin, "get", "events", "--field-selector", "involvedObject.name="+node, "--no-headers",
		"-o", "custom-columns=TYPE:.type,REASON:.reason,COUNT:.count,KIND:.involvedObject.kind,UID:.involvedObject.uid,SOURCE:.source.component")
	var rows []string
	for _, l := range strings.Split(strings.TrimSpace(out), "\n") {
		if l = strings.Join(strings.Fields(l), " "); l != "" {
			rows = append(rows, l)
		}
	}
	return rows
}

func TestEventsOnANodeShowInKubectl(t *testing.T) {
	cp := startHostControlPlane(t)
	restCfg, err := clientcmd.BuildConfigFromFlags("", cp.admin)
	if err != nil {
		t.Fatal(err)
	}
	dyn, err := dynamic.NewForConfig(restCfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()

	record := func(t *testing.T, r *events.Recorder, node string) {
		t.Helper()
		for _, e := range []struct{ typ, reason, msg string }{
			{events.Normal, "Joined", "joined the cluster at 10.0.1.10:6443 (join info generation 7)"},
			{events.Normal, "Joined", "joined the cluster at 10.0.1.10:6443 (join info generation 7)"},
			{events.Warning, "JoinInfoRefused", "refused join info: token abcdef.0123456789abcdef has expired"},
		} {
			if err := r.Node(ctx, node, e.typ, e.reason, e.msg); err != nil {
				t.Fatalf("record %s: %v", e.reason, err)
			}
		}
	}
	check := func(t *testing.T, node, uid string) {
		t.Helper()
		want := []string{
			"Normal Joined 2 Node " + uid + " kubestrap",
			"Warning JoinInfoRefused 1 Node " + uid + " kubestrap",
		}
		if got := eventRows(t, cp.admin, node); strings.Join(got, "\n") != strings.Join(want, "\n") {
			t.Errorf("kubectl get events --field-selector involvedObject.name=%s:\n%s\nwant:\n%s",
				node, strings.Join(got, "\n"), strings.Join(want, "\n"))
		}
		desc := kubectl(t, cp.admin, "describe", "node", node)
		_, evs, ok := strings.Cut(desc, "\nEvents:")
		if !ok {
			t.Fatalf("kubectl describe node %s has no Events section:\n%s", node, desc)
		}
		for _, w := range []string{"Joined", "(x2 over", "JoinInfoRefused", "kubestrap", "<redacted token>"} {
			if !strings.Contains(evs, w) {
				t.Errorf("kubectl describe node %s: Events lack %q:\n%s", node, w, evs)
			}
		}
		if strings.Contains(desc, "0123456789abcdef") {
			t.Errorf("the token secret reached an event:\n%s", evs)
		}
	}

	t.Run("admin credentials", func(t *testing.T) {
		uid := createNode(t, dyn, "events-cp")
		record(t, events.NewRecorder(cp.admin, events.Options{}), "events-cp")
		check(t, "events-cp", uid)
	})

	// The harness's API server runs with --authorization-mode=Node,RBAC: a
	// kubelet identity is authorized by the Node authorizer.
	t.Run("kubelet identity", func(t *testing.T) {
		uid := createNode(t, dyn, "events-worker")
		kc := nodeKubeconfig(t, cp, "events-worker")
		record(t, events.NewRecorder(kc, events.Options{}), "events-worker")
		check(t, "events-worker", uid)
	})
}
