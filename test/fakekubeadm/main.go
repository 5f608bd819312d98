// Command fakekubeadm stands in for kubeadm in unit tests and benchmarks. It
// prints what kubeadm v1.37.2 prints and exits with its exit codes, for the
// commands the agent runs, and keeps its "cluster" in files:
//
//	$FAKE_KUBEADM_DIR/calls.log      one line per call: unix-nanos and args
//	$FAKE_KUBEADM_DIR/tokens         tokens the fake API server accepts
//	$FAKE_KUBEADM_DIR/fail-next-join make the next join fail (not a token error)
//	$FAKE_KUBEADM_DIR/fail-next-init make the next init fail
//	$FAKE_KUBEADM_DIR/fail-next-join-node-exists  the next join finds a Ready Node of its name
//	$FAKE_KUBEADM_DIR/init-crash     the next init dies (SIGKILL) right after its kubeconfig phase
//	$FAKE_KUBEADM_DIR/join-delay     the next join waits this long (a Go duration) before it finishes
//	$FAKE_KUBEADM_DIR/pids           one line per run: its PID (for tests that kill it)
//	$FAKE_KUBEADM_ETC                stands in for /etc/kubernetes
//	$FAKE_KUBEADM_ETCD               stands in for /var/lib/etcd
//
// tokens holds one token per line, optionally followed by a tab and its
// description. Like kubeadm, init refuses to run over an existing control
// plane (manifests or etcd data present), and token create without an
// argument generates the token and prints it.
package main

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"math/big"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"time"
)

func main() { os.Exit(run(os.Args[1:])) }

func run(args []string) int {
	dir, etc := os.Getenv("FAKE_KUBEADM_DIR"), os.Getenv("FAKE_KUBEADM_ETC")
	if dir == "" || etc == "" {
		fmt.Fprintln(os.Stderr, "fakekubeadm: FAKE_KUBEADM_DIR and FAKE_KUBEADM_ETC must be set")
		return 3
	}
	etcd := os.Getenv("FAKE_KUBEADM_ETCD")
	if etcd == "" {
		etcd = filepath.Join(dir, "etcd")
	}
	appendLine(filepath.Join(dir, "calls.log"), fmt.Sprintf("%d %s", time.Now().UnixNano(), strings.Join(args, " ")))
	appendLine(filepath.Join(dir, "pids"), fmt.Sprint(os.Getpid()))
	if len(args) == 0 {
		return fail("unknown command")
	}
	switch {
	case args[0] == "join":
		return join(dir, etc, flagValue(args, "--config"))
	case args[0] == "reset":
		return reset(etc, etcd)
	case len(args) > 2 && args[0] == "init" && args[1] == "phase" && args[2] == "upload-certs":
		return uploadCerts(dir, flagValue(args, "--config"))
	case args[0] == "init":
		return initCluster(dir, etc, etcd, flagValue(args, "--config"))
	case len(args) > 1 && args[0] == "token" && args[1] == "create":
		token := ""
		if len(args) > 2 && !strings.HasPrefix(args[2], "-") {
			token = args[2]
		} else {
			token = randomToken()
		}
		appendLine(filepath.Join(dir, "tokens"), token+"\t"+flagValue(args, "--description"))
		fmt.Println(token)
		return 0
	case len(args) > 1 && args[0] == "token" && args[1] == "list":
		return listTokens(dir)
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
	if d, err := os.ReadFile(filepath.Join(dir, "join-delay")); err == nil {
		_ = os.Remove(filepath.Join(dir, "join-delay"))
		if delay, err := time.ParseDuration(strings.TrimSpace(string(d))); err == nil {
			time.Sleep(delay)
		}
	}
	if !hasToken(dir, m[1]+"."+m[2]) {
		return fail(fmt.Sprintf("error execution phase preflight: couldn't validate the identity of the API Server: "+
			"could not find a JWS signature in the cluster-info ConfigMap for token ID %q", m[1]))
	}
	if strings.Contains(string(b), "\ncontrolPlane:") {
		return joinControlPlane(dir, etc, string(b))
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

func reset(etc, etcd string) int {
	fmt.Println("[preflight] Running pre-flight checks")
	for _, f := range []string{"kubelet.conf", "admin.conf", "pki", "manifests"} {
		_ = os.RemoveAll(filepath.Join(etc, f))
	}
	_ = os.RemoveAll(etcd)
	fmt.Println("[reset] Deleted contents of the etc directories: [/etc/kubernetes/manifests /etc/kubernetes/pki]")
	fmt.Println("[reset] Deleting files: [/etc/kubernetes/admin.conf /etc/kubernetes/kubelet.conf]")
	return 0
}

func initCluster(dir, etc, etcd, config string) int {
	fmt.Println("[init] Using Kubernetes version: v1.37.2")
	fmt.Println("[preflight] Running pre-flight checks")
	b, err := os.ReadFile(config)
	if err != nil {
		return fail(fmt.Sprintf("unable to read config from %q : %v", config, err))
	}
	var preflight []string
	if _, err := os.Stat(filepath.Join(etc, "manifests", "kube-apiserver.yaml")); err == nil {
		preflight = append(preflight, "\t[ERROR FileAvailable--etc-kubernetes-manifests-kube-apiserver.yaml]: "+
			"/etc/kubernetes/manifests/kube-apiserver.yaml already exists")
	}
	if entries, _ := os.ReadDir(etcd); len(entries) > 0 {
		preflight = append(preflight, "\t[ERROR DirAvailable--var-lib-etcd]: /var/lib/etcd is not empty")
	}
	if len(preflight) > 0 {
		return fail("[preflight] Some fatal errors occurred:\n" + strings.Join(preflight, "\n") +
			"\n[preflight] If you know what you are doing, you can make a check non-fatal with `--ignore-preflight-errors=...`")
	}
	if consume(filepath.Join(dir, "fail-next-init")) {
		return fail("error execution phase wait-control-plane: failed while waiting for the control plane to start: " +
			"kube-apiserver check failed at https://10.0.1.10:6443/livez: context deadline exceeded")
	}
	fmt.Println("[certs] Generating \"ca\" certificate and key")
	if err := writeCA(filepath.Join(etc, "pki", "ca.crt")); err != nil {
		return fail(err.Error())
	}
	// The cluster's CA, for the control planes that join it.
	if ca, err := os.ReadFile(filepath.Join(etc, "pki", "ca.crt")); err == nil {
		_ = os.WriteFile(filepath.Join(dir, "cluster-ca.crt"), ca, 0o600)
	}
	if err := os.WriteFile(filepath.Join(etc, "pki", "ca.key"), []byte("fake key\n"), 0o600); err != nil {
		return fail(err.Error())
	}
	fmt.Println("[kubeconfig] Writing \"admin.conf\" kubeconfig file")
	if err := writeKubeconfig(filepath.Join(etc, "admin.conf")); err != nil {
		return fail(err.Error())
	}
	fmt.Println("[control-plane] Creating static Pod manifest for \"kube-apiserver\"")
	if err := os.MkdirAll(filepath.Join(etc, "manifests"), 0o755); err != nil {
		return fail(err.Error())
	}
	if err := os.WriteFile(filepath.Join(etc, "manifests", "kube-apiserver.yaml"), []byte("kind: Pod\n"), 0o600); err != nil {
		return fail(err.Error())
	}
	if err := os.MkdirAll(filepath.Join(etcd, "member"), 0o700); err != nil {
		return fail(err.Error())
	}
	if consume(filepath.Join(dir, "init-crash")) {
		// As if the machine lost power: no cleanup, no output.
		_ = syscall.Kill(os.Getpid(), syscall.SIGKILL)
	}
	fmt.Println("[bootstrap-token] Configuring bootstrap tokens, cluster-info ConfigMap, RBAC Roles")
	if m := tokenField.FindStringSubmatch(string(b)); m != nil {
		appendLine(filepath.Join(dir, "tokens"), m[1]+"."+m[2]+"\t"+initTokenDescription(string(b)))
	}
	appendLine(filepath.Join(dir, "inits-completed"), fmt.Sprint(time.Now().UnixNano()))
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
	// FAKE_KUBEADM_API_SERVER and FAKE_KUBEADM_API_CA (a PEM file) name a
	// stand-in API server that answers /readyz; without them the kubeconfig
	// names one that never answers.
	caPEM, server := []byte("-----BEGIN CERTIFICATE-----\nfake\n-----END CERTIFICATE-----\n"), "https://10.0.1.10:6443"
	if s, f := os.Getenv("FAKE_KUBEADM_API_SERVER"), os.Getenv("FAKE_KUBEADM_API_CA"); s != "" && f != "" {
		b, err := os.ReadFile(f)
		if err != nil {
			return err
		}
		caPEM, server = b, s
	}
	ca := base64.StdEncoding.EncodeToString(caPEM)
	kc := fmt.Sprintf(`apiVersion: v1
kind: Config
clusters:
- cluster:
    certificate-authority-data: %s
    server: %s
  name: kubernetes
users:
- name: node
  user:
    client-certificate: /var/lib/kubelet/pki/kubelet-client-current.pem
    client-key: /var/lib/kubelet/pki/kubelet-client-current.pem
`, ca, server)
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
		if t, _, _ := strings.Cut(l, "\t"); t == token {
			return true
		}
	}
	return false
}

// listTokens prints the tokens as `kubeadm token list -o json` does: one
// JSON object per token, secret included.
func listTokens(dir string) int {
	b, _ := os.ReadFile(filepath.Join(dir, "tokens"))
	for _, l := range strings.Split(string(b), "\n") {
		token, desc, _ := strings.Cut(l, "\t")
		if token == "" {
			continue
		}
		out, _ := json.MarshalIndent(map[string]any{
			"kind": "BootstrapToken", "apiVersion": "output.kubeadm.k8s.io/v1alpha3",
			"token": token, "description": desc, "usages": []string{"authentication", "signing"},
			"groups": []string{"system:bootstrappers:kubeadm:default-node-token"},
		}, "", "    ")
		fmt.Println(string(out))
	}
	return 0
}

var descriptionField = regexp.MustCompile(`(?m)^\s*-?\s*description: (.*)$`)

func initTokenDescription(config string) string {
	if m := descriptionField.FindStringSubmatch(config); m != nil {
		return strings.Trim(m[1], `"'`)
	}
	return ""
}

func randomToken() string {
	const chars = "abcdefghijklmnopqrstuvwxyz0123456789"
	b := make([]byte, 23)
	_, _ = rand.Read(b) // never fails on Linux (Go 1.24+ crashes instead)
	for i := range b {
		b[i] = chars[int(b[i])%len(chars)]
	}
	b[6] = '.'
	return string(b)
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

var certificateKeyField = regexp.MustCompile(`(?m)^\s*certificateKey: "?([0-9a-f]{64})"?\s*$`)

// uploadCerts stands in for `kubeadm init phase upload-certs --upload-certs
// --config`: the "kubeadm-certs Secret" is $FAKE_KUBEADM_DIR/kubeadm-certs,
// holding the key it was encrypted with (a test may delete it, as an
// operator may delete the Secret). Like kubeadm, it prints the key.
func uploadCerts(dir, config string) int {
	b, err := os.ReadFile(config)
	if err != nil {
		return fail(fmt.Sprintf("unable to read config from %q : %v", config, err))
	}
	m := certificateKeyField.FindStringSubmatch(string(b))
	if m == nil {
		return fail("error execution phase upload-certs: the certificate key is missing from the configuration")
	}
	if err := os.WriteFile(filepath.Join(dir, "kubeadm-certs"), []byte(m[1]+"\n"), 0o600); err != nil {
		return fail(err.Error())
	}
	appendLine(filepath.Join(dir, "uploads"), fmt.Sprint(time.Now().UnixNano()))
	fmt.Println(`[upload-certs] Storing the certificates in Secret "kubeadm-certs" in the "kube-system" Namespace`)
	fmt.Println("[upload-certs] Using certificate key:")
	fmt.Println(m[1])
	return 0
}

// joinControlPlane finishes a control-plane join: the certificates come from
// the "kubeadm-certs Secret" with the configuration's key; then the node has
// the cluster's CA, an admin.conf, static pods and an etcd member.
func joinControlPlane(dir, etc, config string) int {
	m := certificateKeyField.FindStringSubmatch(config)
	if m == nil {
		return fail("invalid configuration: controlPlane.certificateKey: Required value")
	}
	stored, err := os.ReadFile(filepath.Join(dir, "kubeadm-certs"))
	if err != nil {
		return fail("error execution phase control-plane-prepare/download-certs: error downloading certs: error downloading the secret: " +
			`Secret "kubeadm-certs" was not found in the "kube-system" Namespace. This Secret might have expired. ` +
			`Please, run ` + "`kubeadm init phase upload-certs --upload-certs`" + ` on a control plane to generate a new one`)
	}
	if strings.TrimSpace(string(stored)) != m[1] {
		return fail("error execution phase control-plane-prepare/download-certs: error downloading certs: error decoding secret data " +
			"with provided key: cipher: message authentication failed")
	}
	fmt.Println("[download-certs] Downloading the certificates in Secret \"kubeadm-certs\" in the \"kube-system\" Namespace")
	ca, err := os.ReadFile(filepath.Join(dir, "cluster-ca.crt"))
	if err != nil {
		return fail(err.Error())
	}
	if err := os.MkdirAll(filepath.Join(etc, "pki"), 0o755); err != nil {
		return fail(err.Error())
	}
	if err := os.WriteFile(filepath.Join(etc, "pki", "ca.crt"), ca, 0o644); err != nil {
		return fail(err.Error())
	}
	for _, f := range []string{"admin.conf", "kubelet.conf"} {
		if err := writeKubeconfig(filepath.Join(etc, f)); err != nil {
			return fail(err.Error())
		}
	}
	if err := os.MkdirAll(filepath.Join(etc, "manifests"), 0o755); err != nil {
		return fail(err.Error())
	}
	if err := os.WriteFile(filepath.Join(etc, "manifests", "kube-apiserver.yaml"), []byte("kind: Pod\n"), 0o600); err != nil {
		return fail(err.Error())
	}
	appendLine(filepath.Join(dir, "control-plane-joins"), fmt.Sprint(time.Now().UnixNano()))
	fmt.Print("\nThis node has joined the cluster and a new control plane instance was created\n")
	return 0
}
