package config

import (
	"net"
	"net/netip"
	"strings"
	"testing"
)

func TestMetricsAddressDefaultsToLoopback(t *testing.T) {
	cfg, err := Parse([]byte(goodConfig))
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Metrics.Address != "127.0.0.1:9464" {
		t.Fatalf("metrics.address default = %q, want 127.0.0.1:9464", cfg.Metrics.Address)
	}
	host, _, err := net.SplitHostPort(cfg.Metrics.Address)
	if err != nil {
		t.Fatal(err)
	}
	if a, err := netip.ParseAddr(host); err != nil || !a.IsLoopback() {
		t.Fatalf("default metrics host %q is not a loopback address", host)
	}
}

func TestMetricsAddressEmptyDisables(t *testing.T) {
	cfg, err := Parse([]byte(goodConfig + "metrics:\n  address: \"\"\n"))
	if err != nil {
		t.Fatalf("empty metrics.address refused: %v", err)
	}
	if cfg.Metrics.Address != "" {
		t.Fatalf("metrics.address = %q, want empty", cfg.Metrics.Address)
	}
}

func TestMetricsAddressBadIsNamed(t *testing.T) {
	_, err := Parse([]byte(goodConfig + "metrics:\n  address: \"9464\"\n"))
	if err == nil || !strings.Contains(err.Error(), "metrics.address") || !strings.Contains(err.Error(), "host:port") {
		t.Fatalf("error %v does not name metrics.address and host:port", err)
	}
}

func TestListenAddressProblem(t *testing.T) {
	for _, ok := range []string{"127.0.0.1:9464", "10.0.2.7:9464", ":9464", "0.0.0.0:1", "[::1]:9464", "localhost:65535"} {
		if p := ListenAddressProblem(ok); p != "" {
			t.Errorf("%q refused: %s", ok, p)
		}
	}
	for _, bad := range []struct{ addr, why string }{
		{"127.0.0.1", "no port"},
		{"127.0.0.1:0", "port zero"},
		{"127.0.0.1:65536", "port too large"},
		{"127.0.0.1:09464", "leading zero"},
		{"127.0.0.1:http", "named port"},
		{"node.example:9464", "DNS name"},
		{"[fe80::1%eth0]:9464", "IPv6 zone"},
		{"http://127.0.0.1:9464", "URL"},
	} {
		if ListenAddressProblem(bad.addr) == "" {
			t.Errorf("%q (%s) accepted", bad.addr, bad.why)
		}
	}
}
