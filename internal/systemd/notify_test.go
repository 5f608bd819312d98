package systemd

import (
	"context"
	"net"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// listen binds a real unixgram NOTIFY_SOCKET and returns a reader of its datagrams.
func listen(t *testing.T) func(timeout time.Duration) []string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "notify.sock")
	conn, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: path, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	t.Setenv("NOTIFY_SOCKET", path)
	return func(timeout time.Duration) []string {
		var msgs []string
		buf := make([]byte, 4096)
		for {
			_ = conn.SetReadDeadline(time.Now().Add(timeout))
			n, err := conn.Read(buf)
			if err != nil {
				return msgs
			}
			msgs = append(msgs, string(buf[:n]))
		}
	}
}

func TestNotifierSendsReadyOnceAndStatusOnChange(t *testing.T) {
	read := listen(t)
	n := NewNotifier(func(err error) { t.Errorf("notify: %v", err) })
	n.Status("waiting for join info in s3://b/demo/join.json")
	n.Status("waiting for join info in s3://b/demo/join.json") // unchanged: not resent
	n.Status("joining 10.0.1.10:6443 with token abcdef")
	n.Ready("joined as ip-10-0-2-7")
	n.Ready("joined as ip-10-0-2-7")
	n.Ready("joined as ip-10-0-2-7, ECR credentials refreshed")
	got := read(200 * time.Millisecond)
	want := []string{
		"STATUS=waiting for join info in s3://b/demo/join.json",
		"STATUS=joining 10.0.1.10:6443 with token abcdef",
		"READY=1\nSTATUS=joined as ip-10-0-2-7",
		"STATUS=joined as ip-10-0-2-7, ECR credentials refreshed",
	}
	if strings.Join(got, "|") != strings.Join(want, "|") {
		t.Errorf("datagrams:\n%q\nwant\n%q", got, want)
	}
}

func TestWatchdogAtHalfTheInterval(t *testing.T) {
	read := listen(t)
	t.Setenv("WATCHDOG_USEC", "200000") // 200ms: pings every 100ms
	ctx, cancel := context.WithTimeout(context.Background(), 450*time.Millisecond)
	defer cancel()
	NewNotifier(nil).RunWatchdog(ctx)
	got := read(50 * time.Millisecond)
	pings := 0
	for _, m := range got {
		if m == "WATCHDOG=1" {
			pings++
		}
	}
	if pings < 3 || pings > 6 {
		t.Errorf("%d WATCHDOG=1 in 450ms at a 200ms watchdog, want about 5", pings)
	}
}

func TestNoWatchdogWithoutWatchdogUsec(t *testing.T) {
	listen(t)
	t.Setenv("WATCHDOG_USEC", "")
	done := make(chan struct{})
	go func() { NewNotifier(nil).RunWatchdog(context.Background()); close(done) }()
	select {
	case <-done:
	case <-time.After(time.Second):
		t.Fatal("RunWatchdog kept running without WATCHDOG_USEC")
	}
}
