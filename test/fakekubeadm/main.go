// Command fakekubeadm stands in for kubeadm in unit tests and benchmarks. It
// prints what kubeadm v1.37.2 prints and exits with its exit codes, for the
// commands the agent runs, and keeps its "cluster" in files:
//
//	$FAKE_KUBEADM_DIR/calls.log      one line per call: unix-nanos and args
//	$FAKE_KUBEADM_DIR/tokens         tokens the fake API server accepts
//	$FAKE_KUBEADM_DIR/fail-next-join make the next join fail (not a token error)
//	$FAKE_KUBEADM_DIR/fail-next-init make the next init fail
//	$FAKE_KUBEADM_DIR/fail-next-join-node-exists  the next join finds a Ready Node of its name
//	$FAKE_KUBEADM_ETC                stands in for /etc/kubernetes
package main

import (
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
	"path/filepath"
	"regexp"
	"strings"
	"time"
)

func main() { os.Exit(run(os.Args[1:])) }

func run(args []string) int {
	dir, etc := os.Getenv("FAKE_KUBEADM_DIR"), os.Getenv("FAKE_KUBEADM_ETC")
	if dir == "" || etc == "" {
		fmt.Fprintln(os.Stderr, "fakekubeadm: FAKE_KUBEADM_DIR and FAKE_KUBEADM_ETC must be set")
		return 3
	}
	appendLine(filepath.Join(dir, "calls.log"), fmt.Sprintf("%d %s", time.Now().UnixNano(), strings.Join(args, " ")))
	if len(args) == 0 {
		return fail("unknown command")
	}
	switch {
	case args[0] == "join":
		return join(dir, etc, flagValue(args, "--config"))
	case args[0] == "reset":
		return reset(etc)
	case args[0] == "init":
		return initCluster(dir, etc, flagValue(args, "--config"))
	case len(args) > 2 && args[0] == "token" && args[1] == "create":
		appendLine(filepath.Join(dir, "tokens"), args[2])
		fmt.Println(args[2])
		return 0
	case len(args) > 2 && args[0] == "token" && args[1] == "delete":
		removeToken(dir, args[2])
		fmt.Printf("bootstrap token %q deleted\n", args[2])
		return 0
	case args[0] == "version":
		fmt.Println(`kubeadm version: &version.Info{Major:"1", Minor:"37", GitVersion:"v1.37.2"}`)
		return 0
	}
	return fail(fmt.Sprintf("unknown command %q for \"kubeadm\"", args[0]))
}

func fail(msg string) int {
	fmt.Fprintf(os.Stderr, "error: %s\nTo see the stack trace of this error execute with --v=5 or higher\n", msg)
	return 1
}

var tokenField = regexp.MustCompile(`(?m)^\s+token: ([a-z0-9]{6})\.([a-z0-9]{16})\s*$`)

func join(dir, etc, config string) int {
	fmt.Println("[preflight] Running pre-flight checks")
	b, err := os.ReadFile(config)
	if err != nil {
		return fail(fmt.Sprintf("unable to read config from %q : %v", config, err))
	}
	if consume(filepath.Join(dir, "fail-next-join")) {
		return fail("error execution phase preflight: [preflight] Some fatal errors occurred:\n\t[ERROR Port-10250]: Port 10250 is in use")
	}
	m := tokenField.FindStringSubmatch(string(b))
	if m == nil {
		return fail("invalid configuration: discovery.bootstrapToken.token: Invalid value")
	}
	if consume(filepath.Join(dir, "fail-next-join-node-exists")) {
		return fail("error execution phase kubelet-start: a Node with name \"node-a\" and status \"Ready\" already exists in the cluster. " +
			"You must delete the existing Node or change the name of this new joining Node")
	}
	if !hasToken(dir, m[1]+"."+m[2]) {
		return fail(fmt.Sprintf("error execution phase preflight: couldn't validate the identity of the API Server: "+
			"could not find a JWS signature in the cluster-info ConfigMap for token ID %q", m[1]))
	}
	fmt.Println(`[preflight] Reading configuration from the "kubeadm-config" ConfigMap in namespace "kube-system"...`)
	fmt.Println("[kubelet-start] Writing kubelet configuration to file \"/var/lib/kubelet/config.yaml\"")
	fmt.Println("[kubelet-start] Starting the kubelet")
	fmt.Println("[kubelet-start] Waiting for the kubelet to perform the TLS Bootstrap")
	if err := writeKubeconfig(filepath.Join(etc, "kubelet.conf")); err != nil {
		return fail(err.Error())
	}
	fmt.Print("\nThis node has joined the cluster:\n* Certificate signing request was sent to apiserver and a response was received.\n" +
		"* The Kubelet was informed of the new secure connection details.\n\n" +
		"Run 'kubectl get nodes' on the control-plane to see this node join the cluster.\n\n")
	return 0
}

func reset(etc string) int {
	fmt.Println("[preflight] Running pre-flight checks")
	for _, f := range []string{"kubelet.conf", "admin.conf", "pki/ca.crt"} {
		_ = os.Remove(filepath.Join(etc, f))
	}
	fmt.Println("[reset] Deleted contents of the etc directories: [/etc/kubernetes/manifests /etc/kubernetes/pki]")
	fmt.Println("[reset] Deleting files: [/etc/kubernetes/admin.conf /etc/kubernetes/kubelet.conf]")
	return 0
}

func initCluster(dir, etc, config string) int {
	fmt.Println("[init] Using Kubernetes version: v1.37.2")
	fmt.Println("[preflight] Running pre-flight checks")
	b, err := os.ReadFile(config)
	if err != nil {
		return fail(fmt.Sprintf("unable to read config from %q : %v", config, err))
	}
	if consume(filepath.Join(dir, "fail-next-init")) {
		return fail("error execution phase wait-control-plane: failed while waiting for the control plane to start: " +
			"kube-apiserver check failed at https://10.0.1.10:6443/livez: context deadline exceeded")
	}
	if m := tokenField.FindStringSubmatch(string(b)); m != nil {
		appendLine(filepath.Join(dir, "tokens"), m[1]+"."+m[2])
	}
	if err := writeCA(filepath.Join(etc, "pki", "ca.crt")); err != nil {
		return fail(err.Error())
	}
	if err := writeKubeconfig(filepath.Join(etc, "admin.conf")); err != nil {
		return fail(err.Error())
	}
	fmt.Println("\nYour Kubernetes control-plane has initialized successfully!")
	return 0
}

func writeCA(path string) error {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return err
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "kubernetes"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour), IsCA: true,
		BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return err
	}
	return os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o644)
}

func writeKubeconfig(path string) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return err
	}
	ca := base64.StdEncoding.EncodeToString([]byte("-----BEGIN CERTIFICATE-----\nfake\n-----END CERTIFICATE-----\n"))
	kc := fmt.Sprintf(`apiVersion: v1
kind: Config
clusters:
- cluster:
    certificate-authority-data: %s
    server: https://10.0.1.10:6443
  name: kubernetes
users:
- name: node
  user:
    client-certificate: /var/lib/kubelet/pki/kubelet-client-current.pem
    client-key: /var/lib/kubelet/pki/kubelet-client-current.pem
`, ca)
	return os.WriteFile(path, []byte(kc), 0o600)
}

func flagValue(args []string, name string) string {
	for i, a := range args {
		if a == name && i+1 < len(args) {
			return args[i+1]
		}
		if strings.HasPrefix(a, name+"=") {
			return strings.TrimPrefix(a, name+"=")
		}
	}
	return ""
}

func appendLine(path, line string) {
	f, err := os.OpenFile(path, os.O_APPEND|os.O_CREATE|os.O_WRONLY, 0o600)
	if err != nil {
		return
	}
	defer f.Close()
	fmt.Fprintln(f, line)
}

func consume(path string) bool { return os.Remove(path) == nil }

func hasToken(dir, token string) bool {
	b, _ := os.ReadFile(filepath.Join(dir, "tokens"))
	for _, l := range strings.Split(string(b), "\n") {
		if l == token {
			return true
		}
	}
	return false
}

func removeToken(dir, id string) {
	path := filepath.Join(dir, "tokens")
	b, _ := os.ReadFile(path)
	var keep []string
	for _, l := range strings.Split(string(b), "\n") {
		if l != "" && !strings.HasPrefix(l, id+".") {
			keep = append(keep, l)
		}
	}
	_ = os.WriteFile(path, []byte(strings.Join(keep, "\n")+"\n"), 0o600)
}
