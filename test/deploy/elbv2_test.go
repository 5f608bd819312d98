//go:build deploy

package deploy

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/xml"
	"io"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	v4 "github.com/aws/aws-sdk-go-v2/aws/signer/v4"
)

// The module has no Elastic Load Balancing v2 client; these tests speak its
// Query API (version 2015-12-01) to moto_server directly, signed like the SDK
// would, and decode only the fields they check.

// elbv2Call makes one Elastic Load Balancing v2 call and decodes the XML answer into out.
func elbv2Call(t *testing.T, ctx context.Context, m *motoServer, creds aws.Credentials, action string, params url.Values, out any) {
	t.Helper()
	form := url.Values{"Action": {action}, "Version": {"2015-12-01"}}
	for k, v := range params {
		form[k] = v
	}
	body := form.Encode()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, m.URL+"/", strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded; charset=utf-8")
	sum := sha256.Sum256([]byte(body))
	if err := v4.NewSigner().SignHTTP(ctx, creds, req, hex.EncodeToString(sum[:]), "elasticloadbalancing", motoRegion, time.Now()); err != nil {
		t.Fatal(err)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("elasticloadbalancing %s: %v", action, err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("elasticloadbalancing %s: HTTP %d\n%s", action, resp.StatusCode, raw)
	}
	if err := xml.Unmarshal(raw, out); err != nil {
		t.Fatalf("elasticloadbalancing %s: %v\n%s", action, err, raw)
	}
}

type elbLoadBalancer struct {
	LoadBalancerArn, LoadBalancerName, DNSName, Scheme, Type, VpcId string
	AvailabilityZones                                               []struct{ SubnetId, ZoneName string } `xml:"AvailabilityZones>member"`
}

type elbTargetGroup struct {
	TargetGroupArn, TargetGroupName, Protocol, TargetType, VpcId string
	Port                                                         int
	HealthCheckEnabled                                           bool
	HealthCheckProtocol, HealthCheckPort, HealthCheckPath        string
	HealthCheckIntervalSeconds, HealthCheckTimeoutSeconds        int
	HealthyThresholdCount, UnhealthyThresholdCount               int
	Matcher                                                      struct{ HttpCode string }
	LoadBalancerArns                                             []string `xml:"LoadBalancerArns>member"`
}

type elbListener struct {
	ListenerArn, LoadBalancerArn, Protocol string
	Port                                   int
	DefaultActions                         []struct{ Type, TargetGroupArn string } `xml:"DefaultActions>member"`
}

type elbAttribute struct{ Key, Value string }

func elbAttributes(attrs []elbAttribute) map[string]string {
	out := map[string]string{}
	for _, a := range attrs {
		out[a.Key] = a.Value
	}
	return out
}

func describeLoadBalancer(t *testing.T, ctx context.Context, m *motoServer, name string) elbLoadBalancer {
	t.Helper()
	var r struct {
		LoadBalancers []elbLoadBalancer `xml:"DescribeLoadBalancersResult>LoadBalancers>member"`
	}
	elbv2Call(t, ctx, m, setupCreds, "DescribeLoadBalancers", url.Values{"Names.member.1": {name}}, &r)
	if len(r.LoadBalancers) != 1 {
		t.Fatalf("load balancer %s: %d found", name, len(r.LoadBalancers))
	}
	return r.LoadBalancers[0]
}

func describeLoadBalancerAttributes(t *testing.T, ctx context.Context, m *motoServer, arn string) map[string]string {
	t.Helper()
	var r struct {
		Attributes []elbAttribute `xml:"DescribeLoadBalancerAttributesResult>Attributes>member"`
	}
	elbv2Call(t, ctx, m, setupCreds, "DescribeLoadBalancerAttributes", url.Values{"LoadBalancerArn": {arn}}, &r)
	return elbAttributes(r.Attributes)
}

func describeTargetGroup(t *testing.T, ctx context.Context, m *motoServer, arn string) elbTargetGroup {
	t.Helper()
	var r struct {
		TargetGroups []elbTargetGroup `xml:"DescribeTargetGroupsResult>TargetGroups>member"`
	}
	elbv2Call(t, ctx, m, setupCreds, "DescribeTargetGroups", url.Values{"TargetGroupArns.member.1": {arn}}, &r)
	if len(r.TargetGroups) != 1 {
		t.Fatalf("target group %s: %d found", arn, len(r.TargetGroups))
	}
	return r.TargetGroups[0]
}

func describeTargetGroupAttributes(t *testing.T, ctx context.Context, m *motoServer, arn string) map[string]string {
	t.Helper()
	var r struct {
		Attributes []elbAttribute `xml:"DescribeTargetGroupAttributesResult>Attributes>member"`
	}
	elbv2Call(t, ctx, m, setupCreds, "DescribeTargetGroupAttributes", url.Values{"TargetGroupArn": {arn}}, &r)
	return elbAttributes(r.Attributes)
}

func describeListeners(t *testing.T, ctx context.Context, m *motoServer, lbArn string) []elbListener {
	t.Helper()
	var r struct {
		Listeners []elbListener `xml:"DescribeListenersResult>Listeners>member"`
	}
	elbv2Call(t, ctx, m, setupCreds, "DescribeListeners", url.Values{"LoadBalancerArn": {lbArn}}, &r)
	return r.Listeners
}

// registeredTargets returns the IDs of the targets registered with a target group.
func registeredTargets(t *testing.T, ctx context.Context, m *motoServer, arn string) []string {
	t.Helper()
	var r struct {
		Targets []struct {
			Target struct{ Id string }
		} `xml:"DescribeTargetHealthResult>TargetHealthDescriptions>member"`
	}
	elbv2Call(t, ctx, m, setupCreds, "DescribeTargetHealth", url.Values{"TargetGroupArn": {arn}}, &r)
	var ids []string
	for _, d := range r.Targets {
		ids = append(ids, d.Target.Id)
	}
	return ids
}
