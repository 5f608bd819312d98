//go:build integration

package integration

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	awshttp "github.com/aws/aws-sdk-go-v2/aws/transport/http"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	ec2types "github.com/aws/aws-sdk-go-v2/service/ec2/types"
	"github.com/aws/aws-sdk-go-v2/service/s3"

	"github.com/kubestrap/kubestrap/internal/lease"
)

const leaseBucket = "demo-bootstrap"

func leaseHolder(n int) string { return fmt.Sprintf("i-%017x", n) }

func newLock(moto, key string, n int, alive lease.HolderAliveFunc) *lease.Lock {
	return &lease.Lock{Client: s3Client(moto), Bucket: leaseBucket, Key: key, Holder: leaseHolder(n),
		LeaseDuration: 5 * time.Second, RenewInterval: 500 * time.Millisecond, Margin: time.Second,
		RetryInterval: 200 * time.Millisecond, CallTimeout: 10 * time.Second, HolderAlive: alive}
}

// TestLeaseAgainstMoto runs the lock protocol against moto_server's S3 (and
// EC2 for the holder check).
func TestLeaseAgainstMoto(t *testing.T) {
	moto := startMoto(t)
	ctx := context.Background()
	s3c := s3Client(moto)
	createBucket(t, s3c, leaseBucket)

	t.Run("moto honours conditional writes and deletes", func(t *testing.T) {
		key := "probe/object"
		put := func(ifNoneMatch, ifMatch string) (string, error) {
			in := &s3.PutObjectInput{Bucket: aws.String(leaseBucket), Key: aws.String(key), Body: strings.NewReader(time.Now().String())}
			if ifNoneMatch != "" {
				in.IfNoneMatch = aws.String(ifNoneMatch)
			}
			if ifMatch != "" {
				in.IfMatch = aws.String(ifMatch)
			}
			out, err := s3c.PutObject(ctx, in)
			if err != nil {
				return "", err
			}
			return aws.ToString(out.ETag), nil
		}
		etag, err := put("*", "")
		if err != nil {
			t.Fatal(err)
		}
		if _, err := put("*", ""); httpCode(err) != http.StatusPreconditionFailed {
			t.Errorf("PUT If-None-Match:* on an existing object: %v, want 412", err)
		}
		if _, err := put("", `"0000"`); httpCode(err) != http.StatusPreconditionFailed {
			t.Errorf("PUT If-Match with a wrong ETag: %v, want 412", err)
		}
		etag2, err := put("", etag)
		if err != nil {
			t.Fatalf("PUT If-Match with the ETag: %v", err)
		}
		_, err = s3c.DeleteObject(ctx, &s3.DeleteObjectInput{Bucket: aws.String(leaseBucket), Key: aws.String(key), IfMatch: aws.String(etag)})
		if httpCode(err) != http.StatusPreconditionFailed {
			// lease.Release relies on this; a GET-compare-DELETE fallback
			// would be racy, so a server without it cannot host the lock.
			t.Errorf("DELETE If-Match with a stale ETag: %v, want 412", err)
		}
		if _, err := s3c.HeadObject(ctx, &s3.HeadObjectInput{Bucket: aws.String(leaseBucket), Key: aws.String(key)}); err != nil {
			t.Errorf("the object is gone after a DELETE with a stale ETag: %v", err)
		}
		if _, err := s3c.DeleteObject(ctx, &s3.DeleteObjectInput{Bucket: aws.String(leaseBucket), Key: aws.String(key), IfMatch: aws.String(etag2)}); err != nil {
			t.Errorf("DELETE If-Match with the ETag: %v", err)
		}
		_, err = s3c.DeleteObject(ctx, &s3.DeleteObjectInput{Bucket: aws.String(leaseBucket), Key: aws.String(key), IfMatch: aws.String(etag2)})
		t.Logf("DELETE If-Match on a missing object: HTTP %d (%v)", httpCode(err), err)
	})

	t.Run("16 goroutines, 10 rounds, one holder each", func(t *testing.T) {
		key := lease.LockKey("race", lease.InitLock)
		for round := range 10 {
			var (
				wg     sync.WaitGroup
				start  = make(chan struct{})
				leases [16]*lease.Lease
				errs   [16]error
			)
			for n := range 16 {
				l := newLock(moto, key, n+1, nil)
				wg.Add(1)
				go func() {
					defer wg.Done()
					<-start
					leases[n], errs[n] = l.TryAcquire(ctx)
				}()
			}
			close(start)
			wg.Wait()
			var winner *lease.Lease
			for n := range 16 {
				if errs[n] == nil {
					if winner != nil {
						t.Fatalf("round %d: two holders, %s and %s", round, winner.Holder(), leases[n].Holder())
					}
					winner = leases[n]
				}
			}
			if winner == nil {
				t.Fatalf("round %d: no holder: %v", round, errs)
			}
			for n := range 16 {
				var he *lease.HeldError
				if errs[n] != nil && (!errors.As(errs[n], &he) || he.Status.Holder != winner.Holder()) {
					t.Errorf("round %d: contender %d: %v (winner %s)", round, n+1, errs[n], winner.Holder())
				}
			}
			if err := winner.Release(ctx); err != nil {
				t.Fatalf("round %d: release: %v", round, err)
			}
		}
	})

	t.Run("renewals keep the lease; S3's clock gives its age", func(t *testing.T) {
		key := lease.LockKey("renew", lease.InitLock)
		a := newLock(moto, key, 1, nil)
		ls, err := a.TryAcquire(ctx)
		if err != nil {
			t.Fatal(err)
		}
		// Three lease durations pass; the lease is renewed all along.
		deadline := time.Now().Add(15 * time.Second)
		for time.Now().Before(deadline) {
			st, err := a.Inspect(ctx)
			if err != nil {
				t.Fatal(err)
			}
			if !st.AgeKnown || st.Age > 2*time.Second || st.Expired || st.Holder != leaseHolder(1) {
				t.Fatalf("status %v (age known %v): moto's Last-Modified/Date do not show the renewals", st, st.AgeKnown)
			}
			if err := ls.Check(); err != nil {
				t.Fatalf("lease lost while renewing: %v", err)
			}
			time.Sleep(time.Second)
		}
		if err := ls.Release(ctx); err != nil {
			t.Fatal(err)
		}
	})

	t.Run("takeover after expiry only when EC2 says the holder is gone", func(t *testing.T) {
		ec2c := ec2.New(ec2.Options{Region: "eu-west-1", BaseEndpoint: aws.String(moto),
			Credentials: credentials.NewStaticCredentialsProvider("harness", "harness", "")})
		images, err := ec2c.DescribeImages(ctx, &ec2.DescribeImagesInput{})
		if err != nil || len(images.Images) == 0 {
			t.Fatalf("moto images: %v", err)
		}
		run, err := ec2c.RunInstances(ctx, &ec2.RunInstancesInput{ImageId: images.Images[0].ImageId, MinCount: aws.Int32(1), MaxCount: aws.Int32(1),
			InstanceType: ec2types.InstanceTypeT3Small})
		if err != nil {
			t.Fatal(err)
		}
		holderID := aws.ToString(run.Instances[0].InstanceId)
		alive := lease.EC2HolderAlive(ec2c)
		key := lease.LockKey("steal", lease.InitLock)
		a := newLock(moto, key, 1, alive)
		a.Holder = holderID
		actx, crash := context.WithCancel(ctx)
		ls, err := a.TryAcquire(actx)
		if err != nil {
			t.Fatal(err)
		}
		crash() // renewals stop, the lock stays: a killed agent
		b := newLock(moto, key, 2, alive)
		if _, err := b.TryAcquire(ctx); !errors.Is(err, lease.ErrHeld) {
			t.Fatalf("before expiry: %v, want ErrHeld", err)
		}
		time.Sleep(6500 * time.Millisecond)
		_, err = b.TryAcquire(ctx)
		var he *lease.HeldError
		if !errors.As(err, &he) || !he.Status.Expired || !strings.Contains(err.Error(), "still runs") {
			t.Fatalf("expired, holder running: %v", err)
		}
		if _, err := ec2c.TerminateInstances(ctx, &ec2.TerminateInstancesInput{InstanceIds: []string{holderID}}); err != nil {
			t.Fatal(err)
		}
		lb, err := b.TryAcquire(ctx)
		if err != nil {
			t.Fatalf("expired, holder terminated: %v", err)
		}
		if lb.Generation() != 2 {
			t.Errorf("generation %d, want 2", lb.Generation())
		}
		if err := ls.Release(ctx); !errors.Is(err, lease.ErrNotHolder) {
			t.Errorf("the old holder's release: %v, want ErrNotHolder", err)
		}
		if st, err := b.Inspect(ctx); err != nil || st.Holder != leaseHolder(2) {
			t.Errorf("after the old holder's release: %v, %v", st, err)
		}
		if err := lb.Release(ctx); err != nil {
			t.Errorf("release: %v", err)
		}
	})
}

func httpCode(err error) int {
	var re *awshttp.ResponseError
	if errors.As(err, &re) {
		return re.HTTPStatusCode()
	}
	return 0
}

// The helper process: the test binary run again with these variables set.
const (
	helperEnv      = "KUBESTRAP_LEASE_HELPER"
	helperMotoEnv  = "KUBESTRAP_LEASE_MOTO"
	helperKeyEnv   = "KUBESTRAP_LEASE_KEY"
	helperNodeEnv  = "KUBESTRAP_LEASE_NODE"
	helperStartEnv = "KUBESTRAP_LEASE_START"
)

// TestLeaseHelperProcess is one contender in TestLeaseAcrossProcesses; it
// does nothing in a normal run.
func TestLeaseHelperProcess(t *testing.T) {
	if os.Getenv(helperEnv) != "1" {
		return
	}
	n, _ := strconv.Atoi(os.Getenv(helperNodeEnv))
	startNanos, _ := strconv.ParseInt(os.Getenv(helperStartEnv), 10, 64)
	l := newLock(os.Getenv(helperMotoEnv), os.Getenv(helperKeyEnv), n, nil)
	time.Sleep(time.Until(time.Unix(0, startNanos)))
	ctx := context.Background()
	ls, err := l.TryAcquire(ctx)
	var he *lease.HeldError
	switch {
	case err == nil:
		fmt.Printf("RESULT won %s %d\n", ls.Holder(), ls.Generation())
		time.Sleep(2 * time.Second) // hold it while the others report
		if err := ls.Check(); err != nil {
			fmt.Printf("RESULT lost %v\n", err)
		}
		if err := ls.Release(ctx); err != nil {
			fmt.Printf("RESULT release-failed %v\n", err)
		}
	case errors.As(err, &he):
		fmt.Printf("RESULT held %s\n", he.Status.Holder)
	default:
		fmt.Printf("RESULT error %v\n", err)
	}
}

// TestLeaseAcrossProcesses: 4 OS processes contend for the lock at the same
// instant, 3 rounds: exactly one wins each round, the others see it.
func TestLeaseAcrossProcesses(t *testing.T) {
	moto := startMoto(t)
	createBucket(t, s3Client(moto), leaseBucket)
	key := lease.LockKey("procs", lease.InitLock)
	for round := range 3 {
		start := time.Now().Add(1500 * time.Millisecond)
		var (
			wg      sync.WaitGroup
			outputs [4]string
			errs    [4]error
		)
		for n := range 4 {
			cmd := exec.Command(os.Args[0], "-test.run=^TestLeaseHelperProcess$", "-test.count=1")
			cmd.Env = cleanEnv(t, helperEnv+"=1", helperMotoEnv+"="+moto, helperKeyEnv+"="+key,
				helperNodeEnv+"="+strconv.Itoa(100*round+n+1), helperStartEnv+"="+strconv.FormatInt(start.UnixNano(), 10))
			var out bytes.Buffer
			cmd.Stdout, cmd.Stderr = &out, &out
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				done := make(chan error, 1)
				go func() { done <- cmd.Wait() }()
				select {
				case errs[n] = <-done:
				case <-time.After(60 * time.Second):
					_ = cmd.Process.Kill()
					errs[n] = fmt.Errorf("helper %d timed out: %w", n, <-done)
				}
				outputs[n] = out.String()
			}()
		}
		wg.Wait()
		var winners, held []string
		for n := range 4 {
			if errs[n] != nil {
				t.Fatalf("round %d: helper %d: %v\n%s", round, n, errs[n], outputs[n])
			}
			sc := bufio.NewScanner(strings.NewReader(outputs[n]))
			found := false
			for sc.Scan() {
				f := strings.Fields(sc.Text())
				if len(f) < 2 || f[0] != "RESULT" {
					continue
				}
				found = true
				switch f[1] {
				case "won":
					winners = append(winners, f[2])
				case "held":
					held = append(held, f[2])
				default:
					t.Errorf("round %d: helper %d: %s", round, n, sc.Text())
				}
			}
			if !found {
				t.Fatalf("round %d: helper %d reported nothing:\n%s", round, n, outputs[n])
			}
		}
		if len(winners) != 1 || len(held) != 3 {
			t.Fatalf("round %d: winners %v, held %v: want exactly one winner", round, winners, held)
		}
		for _, h := range held {
			if h != winners[0] {
				t.Errorf("round %d: a loser saw holder %s, the winner is %s", round, h, winners[0])
			}
		}
		t.Logf("round %d: %s won, 3 processes saw it hold the lock", round, winners[0])
	}
}
