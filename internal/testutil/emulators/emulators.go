// Package emulators holds what the integration tests and the benchmarks share
// to run local AWS emulators on loopback: free ports, readiness probes and the
// ec2-metadata-mock configuration of an instance.
package emulators

import (
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"strconv"
	"time"
)

// FreePort returns a TCP port that is free on 127.0.0.1 right now.
func FreePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// HTTPOK makes one request and returns nil for a 1xx or 2xx answer.
func HTTPOK(method, url string, hdr map[string]string) error {
	req, err := http.NewRequest(method, url, nil)
	if err != nil {
		return err
	}
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	c := &http.Client{Timeout: 2 * time.Second}
	resp, err := c.Do(req)
	if err != nil {
		return err
	}
	resp.Body.Close()
	if resp.StatusCode >= 300 {
		return fmt.Errorf("%s %s: HTTP %d", method, url, resp.StatusCode)
	}
	return nil
}

// MotoReady probes a moto_server.
func MotoReady(url string) error { return HTTPOK("GET", url+"/moto-api/", nil) }

// IMDSReady probes an IMDSv2 endpoint for a session token.
func IMDSReady(url string) error {
	return HTTPOK("PUT", url+"/latest/api/token", map[string]string{"X-aws-ec2-metadata-token-ttl-seconds": "60"})
}

// Instance is what the mock metadata service serves.
type Instance struct {
	InstanceID, Region, AccountID, PrivateIP, Hostname string
	// Role names the instance profile role whose credentials IMDS serves.
	Role string
}

// IMDSConfig renders the ec2-metadata-mock configuration (IMDSv2 only, on
// 127.0.0.1:port) for inst, with instance-role credentials so that the AWS
// SDK's default chain finds them as on EC2. moto accepts any credentials.
func IMDSConfig(inst Instance, port int) []byte {
	role := inst.Role
	if role == "" {
		role = "node-role"
	}
	cfg := map[string]any{
		"imdsv2": true,
		"server": map[string]any{"hostname": "127.0.0.1", "port": strconv.Itoa(port)},
		"metadata": map[string]any{
			"paths": map[string]any{"iam-security-credentials": "/latest/meta-data/iam/security-credentials/" + role},
			"values": map[string]any{
				"instance-id": inst.InstanceID, "placement-region": inst.Region, "local-ipv4": inst.PrivateIP,
				"local-hostname": inst.Hostname, "iam-security-credentials-role": role,
				"iam-security-credentials": map[string]any{
					"Code": "Success", "LastUpdated": "2026-01-01T00:00:00Z", "Type": "AWS-HMAC",
					"AccessKeyId": "ASIAINSTANCEROLE", "SecretAccessKey": "instance-role-secret",
					"Token": "instance-role-session", "Expiration": "2099-01-01T00:00:00Z",
				},
			},
		},
		"dynamic": map[string]any{"values": map[string]any{"instance-identity-document": map[string]any{
			"accountId": inst.AccountID, "availabilityZone": inst.Region + "a", "instanceId": inst.InstanceID,
			"instanceType": "m5.large", "privateIp": inst.PrivateIP, "region": inst.Region, "version": "2017-09-30",
			"architecture": "x86_64", "imageId": "ami-0123", "pendingTime": "2026-11-01T00:00:00Z",
		}}},
	}
	b, _ := json.Marshal(cfg) // plain maps of strings always encode
	return b
}
