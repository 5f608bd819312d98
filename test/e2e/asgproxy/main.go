// Command asgproxy is the e2e harness's Auto Scaling endpoint (hack/e2e/aws.sh
// starts it on the aws host): moto_server has no CompleteLifecycleAction and
// no RecordLifecycleActionHeartbeat, so this proxy answers those two itself
// and forwards every other request to moto unchanged.
//
// A lifecycle call (query protocol: a form body with Version=2011-01-01 and
// Action=CompleteLifecycleAction or RecordLifecycleActionHeartbeat) is taken
// only from a worker node's own instance-role credentials: the SigV4
// signature is checked with the secret of the access key it names (one STS
// session per node, $RUN/aws/creds/<node>.json), and the session token must
// be that session's. Every lifecycle call, taken or refused, is one JSON line
// in the record file (-record); a taken one is answered as Auto Scaling
// does, a refused one with an awsquery error (403 AccessDenied or
// SignatureDoesNotMatch, 400 ValidationError).
//
//	asgproxy -listen 10.200.0.2:5001 -upstream http://10.200.0.2:5000 \
//	  -creds $RUN/aws/creds -record $RUN/aws/lifecycle-actions.jsonl \
//	  -worker-role kse2e-worker -hooks kse2e-workers/kse2e-workers-terminate
package main

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"encoding/xml"
	"errors"
	"flag"
	"fmt"
	"io"
	"log"
	"mime"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"os"
	"os/signal"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

const (
	// autoScalingVersion is the Auto Scaling query API's version.
	autoScalingVersion = "2011-01-01"
	// maxFormBody bounds a form body read to look at its Action.
	maxFormBody = 1 << 20
	// maxClockSkew is how far a request's X-Amz-Date may be from now (as AWS).
	maxClockSkew = 15 * time.Minute
	// forwardTimeout bounds one forwarded request, reading moto's answer included.
	forwardTimeout = 60 * time.Second
)

// lifecycleActions are the calls the proxy answers itself.
var lifecycleActions = map[string]bool{"CompleteLifecycleAction": true, "RecordLifecycleActionHeartbeat": true}

// Record is one line of the record file.
type Record struct {
	Time                  time.Time `json:"time"`
	Action                string    `json:"action"`
	AutoScalingGroupName  string    `json:"AutoScalingGroupName"`
	LifecycleHookName     string    `json:"LifecycleHookName"`
	InstanceID            string    `json:"InstanceId"`
	LifecycleActionResult string    `json:"LifecycleActionResult,omitempty"`
	LifecycleActionToken  string    `json:"LifecycleActionToken,omitempty"`
	// AccessKeyID is the key the request was signed with (SigV4 Authorization).
	AccessKeyID string `json:"accessKeyId"`
	// Node owns that key ($RUN/aws/creds/<node>.json); "" when no node does.
	Node string `json:"node"`
	// CallerArn is the key's STS session (assumed-role/<role>/<instance ID>).
	CallerArn string `json:"callerArn,omitempty"`
	// Status is the HTTP status answered: 200, or the refusal's.
	Status int `json:"status"`
	// Error says why a call was refused.
	Error string `json:"error,omitempty"`
}

// credential is one node's instance-role session.
type credential struct {
	node, secret, token, arn string
}

// credStore reads the nodes' sessions from dir (each <node>.json is the
// output of `aws sts assume-role`), again when a key is not known yet.
type credStore struct {
	dir string

	mu   sync.Mutex
	keys map[string]credential
}

func (c *credStore) lookup(keyID string) (credential, bool, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if cr, ok := c.keys[keyID]; ok {
		return cr, true, nil
	}
	files, err := filepath.Glob(filepath.Join(c.dir, "*.json"))
	if err != nil {
		return credential{}, false, err
	}
	keys := map[string]credential{}
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			return credential{}, false, err
		}
		var v struct {
			Credentials struct {
				AccessKeyID     string `json:"AccessKeyId"`
				SecretAccessKey string
				SessionToken    string
			}
			AssumedRoleUser struct{ Arn string }
		}
		if err := json.Unmarshal(b, &v); err != nil {
			return credential{}, false, fmt.Errorf("%s: %w", f, err)
		}
		if v.Credentials.AccessKeyID != "" {
			keys[v.Credentials.AccessKeyID] = credential{node: strings.TrimSuffix(filepath.Base(f), ".json"),
				secret: v.Credentials.SecretAccessKey, token: v.Credentials.SessionToken, arn: v.AssumedRoleUser.Arn}
		}
	}
	c.keys = keys
	cr, ok := keys[keyID]
	return cr, ok, nil
}

// proxy is the HTTP handler.
type proxy struct {
	forward    http.Handler
	creds      *credStore
	workerRole string
	// hooks are the lifecycle hooks that exist, "<group>/<hook>" (empty: any).
	hooks map[string]bool
	now   func() time.Time
	logf  func(format string, args ...any)

	mu     sync.Mutex
	record io.Writer
}

func (p *proxy) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.Method == http.MethodPost && isForm(r.Header.Get("Content-Type")) {
		body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, maxFormBody))
		if err != nil {
			http.Error(w, "request body: "+err.Error(), http.StatusRequestEntityTooLarge)
			return
		}
		r.Body = io.NopCloser(bytes.NewReader(body))
		if form, err := url.ParseQuery(string(body)); err == nil &&
			form.Get("Version") == autoScalingVersion && lifecycleActions[form.Get("Action")] {
			p.lifecycle(w, r, body, form)
			return
		}
	}
	p.forward.ServeHTTP(w, r)
}

func isForm(contentType string) bool {
	mt, _, err := mime.ParseMediaType(contentType)
	return err == nil && mt == "application/x-www-form-urlencoded"
}

// lifecycle answers one lifecycle call and records it.
func (p *proxy) lifecycle(w http.ResponseWriter, r *http.Request, body []byte, form url.Values) {
	rec := Record{Time: p.now().UTC(), Action: form.Get("Action"),
		AutoScalingGroupName: form.Get("AutoScalingGroupName"), LifecycleHookName: form.Get("LifecycleHookName"),
		InstanceID: form.Get("InstanceId"), LifecycleActionResult: form.Get("LifecycleActionResult"),
		LifecycleActionToken: form.Get("LifecycleActionToken")}
	status, code, msg := p.check(r, body, &rec)
	rec.Status = status
	if status != http.StatusOK {
		rec.Error = code + ": " + msg
	}
	if err := p.write(rec); err != nil {
		p.logf("cannot record %s: %v", rec.Action, err)
		status, code, msg = http.StatusInternalServerError, "InternalFailure", "the proxy cannot record the call"
	}
	reqID := requestID()
	w.Header().Set("Content-Type", "text/xml")
	w.Header().Set("X-Amzn-Requestid", reqID)
	if status != http.StatusOK {
		p.logf("refused %s of %s (group %q, hook %q, key %s, node %q): %d %s: %s",
			rec.Action, rec.InstanceID, rec.AutoScalingGroupName, rec.LifecycleHookName, rec.AccessKeyID, rec.Node, status, code, msg)
		kind := "Sender"
		if status >= 500 {
			kind = "Receiver"
		}
		w.WriteHeader(status)
		fmt.Fprintf(w, `<ErrorResponse xmlns="https://autoscaling.amazonaws.com/doc/2011-01-01/"><Error><Type>%s</Type><Code>%s</Code><Message>%s</Message></Error><RequestId>%s</RequestId></ErrorResponse>`,
			kind, code, xmlText(msg), reqID)
		return
	}
	what := rec.Action
	if rec.LifecycleActionResult != "" {
		what += " " + rec.LifecycleActionResult
	}
	p.logf("%s of %s (group %s, hook %s) by node %s (%s)",
		what, rec.InstanceID, rec.AutoScalingGroupName, rec.LifecycleHookName, rec.Node, rec.AccessKeyID)
	fmt.Fprintf(w, `<%[1]sResponse xmlns="https://autoscaling.amazonaws.com/doc/2011-01-01/"><%[1]sResult/><ResponseMetadata><RequestId>%[2]s</RequestId></ResponseMetadata></%[1]sResponse>`,
		rec.Action, reqID)
}

// check decides a lifecycle call: 200, or the refusal's status, code and message.
func (p *proxy) check(r *http.Request, body []byte, rec *Record) (int, string, string) {
	auth, err := parseAuthorization(r.Header.Get("Authorization"))
	if err != nil {
		return http.StatusForbidden, "MissingAuthenticationToken", err.Error()
	}
	rec.AccessKeyID = auth.keyID
	cr, ok, err := p.creds.lookup(auth.keyID)
	if err != nil {
		return http.StatusInternalServerError, "InternalFailure", "reading the nodes' credentials: " + err.Error()
	}
	if !ok {
		return http.StatusForbidden, "InvalidClientTokenId", "the access key " + auth.keyID + " is no node's instance-role key"
	}
	rec.Node, rec.CallerArn = cr.node, cr.arn
	if err := verifySignature(r, body, auth, cr, p.now()); err != nil {
		return http.StatusForbidden, "SignatureDoesNotMatch", err.Error()
	}
	if !strings.Contains(cr.arn, ":assumed-role/"+p.workerRole+"/") {
		return http.StatusForbidden, "AccessDenied", fmt.Sprintf("%s (node %s) is not authorized to perform: autoscaling:%s: not the worker role %s",
			cr.arn, cr.node, rec.Action, p.workerRole)
	}
	if rec.AutoScalingGroupName == "" || rec.LifecycleHookName == "" || rec.InstanceID == "" {
		return http.StatusBadRequest, "ValidationError", "AutoScalingGroupName, LifecycleHookName and InstanceId are required"
	}
	if rec.Action == "CompleteLifecycleAction" && rec.LifecycleActionResult != "CONTINUE" && rec.LifecycleActionResult != "ABANDON" {
		return http.StatusBadRequest, "ValidationError", fmt.Sprintf("LifecycleActionResult %q: must be CONTINUE or ABANDON", rec.LifecycleActionResult)
	}
	if len(p.hooks) > 0 && !p.hooks[rec.AutoScalingGroupName+"/"+rec.LifecycleHookName] {
		return http.StatusBadRequest, "ValidationError", fmt.Sprintf("No Lifecycle Hook %s in Auto Scaling group %s",
			rec.LifecycleHookName, rec.AutoScalingGroupName)
	}
	return http.StatusOK, "", ""
}

func (p *proxy) write(rec Record) error {
	b, err := json.Marshal(rec)
	if err != nil {
		return err
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	_, err = p.record.Write(append(b, '\n'))
	if f, ok := p.record.(*os.File); ok && err == nil {
		err = f.Sync()
	}
	return err
}

// sigV4 is a parsed SigV4 Authorization header.
type sigV4 struct {
	keyID, date, region, service string
	signedHeaders                []string
	signature                    string
}

func parseAuthorization(h string) (sigV4, error) {
	var a sigV4
	rest, ok := strings.CutPrefix(h, "AWS4-HMAC-SHA256 ")
	if !ok {
		return a, errors.New("no AWS4-HMAC-SHA256 Authorization header")
	}
	for _, part := range strings.Split(rest, ",") {
		k, v, _ := strings.Cut(strings.TrimSpace(part), "=")
		switch k {
		case "Credential":
			f := strings.Split(v, "/")
			if len(f) != 5 || f[4] != "aws4_request" {
				return a, fmt.Errorf("malformed credential scope %q", v)
			}
			a.keyID, a.date, a.region, a.service = f[0], f[1], f[2], f[3]
		case "SignedHeaders":
			a.signedHeaders = strings.Split(v, ";")
		case "Signature":
			a.signature = v
		}
	}
	if a.keyID == "" || len(a.signedHeaders) == 0 || a.signature == "" {
		return a, errors.New("incomplete Authorization header")
	}
	return a, nil
}

// verifySignature recomputes the request's SigV4 signature with the secret of cr.
func verifySignature(r *http.Request, body []byte, a sigV4, cr credential, now time.Time) error {
	if a.service != "autoscaling" {
		return fmt.Errorf("credential scope names service %q, not autoscaling", a.service)
	}
	if r.Header.Get("X-Amz-Security-Token") != cr.token {
		return fmt.Errorf("the security token is not the one of %s's session", cr.node)
	}
	amzDate := r.Header.Get("X-Amz-Date")
	t, err := time.Parse("20060102T150405Z", amzDate)
	if err != nil {
		return fmt.Errorf("X-Amz-Date %q: %v", amzDate, err)
	}
	if d := now.Sub(t); d > maxClockSkew || d < -maxClockSkew {
		return fmt.Errorf("X-Amz-Date %s is %s away from the proxy's clock", amzDate, d.Round(time.Second))
	}
	if !strings.HasPrefix(amzDate, a.date) {
		return fmt.Errorf("credential scope date %s is not X-Amz-Date's %s", a.date, amzDate)
	}
	signed := map[string]bool{}
	var hdrs strings.Builder
	for _, h := range a.signedHeaders {
		signed[h] = true
		var v string
		switch h {
		case "host":
			v = r.Host
		case "content-length":
			// The server moves it out of the header.
			v = strconv.FormatInt(r.ContentLength, 10)
		default:
			vals := r.Header.Values(h)
			for i := range vals {
				vals[i] = strings.Join(strings.Fields(vals[i]), " ")
			}
			v = strings.Join(vals, ",")
		}
		hdrs.WriteString(h + ":" + v + "\n")
	}
	for _, h := range []string{"host", "x-amz-date", "x-amz-security-token"} {
		if !signed[h] {
			return fmt.Errorf("header %s is not signed", h)
		}
	}
	payload := r.Header.Get("X-Amz-Content-Sha256")
	if payload == "" {
		sum := sha256.Sum256(body)
		payload = hex.EncodeToString(sum[:])
	}
	path := r.URL.EscapedPath()
	if path == "" {
		path = "/"
	}
	canonical := strings.Join([]string{r.Method, path, canonicalQuery(r.URL.Query()), hdrs.String(),
		strings.Join(a.signedHeaders, ";"), payload}, "\n")
	sum := sha256.Sum256([]byte(canonical))
	scope := strings.Join([]string{a.date, a.region, a.service, "aws4_request"}, "/")
	toSign := "AWS4-HMAC-SHA256\n" + amzDate + "\n" + scope + "\n" + hex.EncodeToString(sum[:])
	key := []byte("AWS4" + cr.secret)
	for _, s := range []string{a.date, a.region, a.service, "aws4_request"} {
		key = hmacSHA256(key, s)
	}
	want := hex.EncodeToString(hmacSHA256(key, toSign))
	if !hmac.Equal([]byte(want), []byte(a.signature)) {
		return errors.New("the request signature does not match the one computed with the key's secret")
	}
	return nil
}

func canonicalQuery(q url.Values) string {
	var parts []string
	for k, vs := range q {
		for _, v := range vs {
			parts = append(parts, uriEncode(k)+"="+uriEncode(v))
		}
	}
	sort.Strings(parts)
	return strings.Join(parts, "&")
}

// uriEncode is SigV4's encoding: everything but unreserved characters as %XX.
func uriEncode(s string) string {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		c := s[i]
		if 'A' <= c && c <= 'Z' || 'a' <= c && c <= 'z' || '0' <= c && c <= '9' || c == '-' || c == '_' || c == '.' || c == '~' {
			b.WriteByte(c)
		} else {
			fmt.Fprintf(&b, "%%%02X", c)
		}
	}
	return b.String()
}

func hmacSHA256(key []byte, s string) []byte {
	m := hmac.New(sha256.New, key)
	m.Write([]byte(s))
	return m.Sum(nil)
}

func xmlText(s string) string {
	var b strings.Builder
	_ = xml.EscapeText(&b, []byte(s))
	return b.String()
}

func requestID() string {
	b := make([]byte, 16)
	_, _ = rand.Read(b)
	h := hex.EncodeToString(b)
	return h[:8] + "-" + h[8:12] + "-" + h[12:16] + "-" + h[16:20] + "-" + h[20:]
}

// newForwarder is a reverse proxy to upstream that keeps each request as it
// came (its Host header included, which the SigV4 signature covers), with
// every step bounded.
func newForwarder(upstream *url.URL, logf func(string, ...any)) http.Handler {
	transport := &http.Transport{
		DialContext:           (&net.Dialer{Timeout: 5 * time.Second, KeepAlive: 30 * time.Second}).DialContext,
		ResponseHeaderTimeout: 45 * time.Second,
		IdleConnTimeout:       60 * time.Second,
		MaxIdleConnsPerHost:   16,
		ExpectContinueTimeout: time.Second,
	}
	rp := &httputil.ReverseProxy{
		Rewrite: func(pr *httputil.ProxyRequest) {
			pr.SetURL(upstream)
			pr.Out.Host = pr.In.Host
		},
		Transport: transport,
		ErrorHandler: func(w http.ResponseWriter, r *http.Request, err error) {
			logf("forwarding %s %s: %v", r.Method, r.URL.Path, err)
			http.Error(w, "asgproxy: upstream: "+err.Error(), http.StatusBadGateway)
		},
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		ctx, cancel := context.WithTimeout(r.Context(), forwardTimeout)
		defer cancel()
		rp.ServeHTTP(w, r.WithContext(ctx))
	})
}

func main() {
	listen := flag.String("listen", "127.0.0.1:5001", "address to serve on")
	upstream := flag.String("upstream", "http://127.0.0.1:5000", "moto_server's URL")
	credsDir := flag.String("creds", "", "directory of the nodes' STS sessions, <node>.json (required)")
	recordPath := flag.String("record", "", "file the lifecycle calls are appended to, one JSON object a line (required)")
	workerRole := flag.String("worker-role", "kse2e-worker", "IAM role of the worker nodes' sessions")
	hooks := flag.String("hooks", "", "comma-separated <group>/<hook> that exist (empty: any)")
	flag.Parse()
	if *credsDir == "" || *recordPath == "" || flag.NArg() != 0 {
		flag.Usage()
		os.Exit(2)
	}
	up, err := url.Parse(*upstream)
	if err != nil || up.Scheme == "" || up.Host == "" {
		log.Fatalf("-upstream %q: not a URL", *upstream)
	}
	rf, err := os.OpenFile(*recordPath, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o644)
	if err != nil {
		log.Fatal(err)
	}
	defer rf.Close()
	p := &proxy{forward: newForwarder(up, log.Printf), creds: &credStore{dir: *credsDir}, workerRole: *workerRole,
		hooks: map[string]bool{}, now: time.Now, logf: log.Printf, record: rf}
	for _, h := range strings.Split(*hooks, ",") {
		if h = strings.TrimSpace(h); h != "" {
			p.hooks[h] = true
		}
	}
	srv := &http.Server{Addr: *listen, Handler: p, ReadHeaderTimeout: 10 * time.Second, ReadTimeout: 60 * time.Second,
		WriteTimeout: 2 * forwardTimeout, IdleTimeout: 90 * time.Second}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	go func() {
		<-ctx.Done()
		sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = srv.Shutdown(sctx)
	}()
	log.Printf("asgproxy on %s: lifecycle calls recorded in %s, everything else to %s", *listen, *recordPath, up)
	if err := srv.ListenAndServe(); err != nil && !errors.Is(err, http.ErrServerClosed) {
		log.Fatal(err)
	}
}
