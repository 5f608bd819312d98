package main

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"
)

func get(t *testing.T, srv *httptest.Server, path string) (int, string) {
	t.Helper()
	resp, err := http.Get(srv.URL + path)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

func TestGreetingNamesPodAndNode(t *testing.T) {
	srv := httptest.NewServer(handler("demo-1", "w1"))
	defer srv.Close()
	code, body := get(t, srv, "/x")
	if code != 200 || !strings.Contains(body, "pod=demo-1 node=w1 path=/x") {
		t.Errorf("GET /x = %d %q", code, body)
	}
}

func TestBurnRefusesBadInputAndCapsTheTime(t *testing.T) {
	srv := httptest.NewServer(handler("p", "n"))
	defer srv.Close()
	for _, q := range []string{"/burn", "/burn?ms=x", "/burn?ms=-1"} {
		if code, _ := get(t, srv, q); code != http.StatusBadRequest {
			t.Errorf("GET %s = %d, want 400", q, code)
		}
	}
	start := time.Now()
	code, body := get(t, srv, "/burn?ms=600000")
	if code != 200 || !strings.Contains(body, "burned 1s") {
		t.Errorf("GET /burn?ms=600000 = %d %q, want a burn capped at 1s", code, body)
	}
	if took := time.Since(start); took > 30*time.Second {
		t.Errorf("a capped burn took %s", took)
	}
}

func TestLoadStopsByItselfAndCounts(t *testing.T) {
	srv := httptest.NewServer(handler("p", "n"))
	defer srv.Close()
	ok, failed := load(context.Background(), srv.URL+"/", 300*time.Millisecond, 2)
	if ok == 0 || failed != 0 {
		t.Errorf("load answered %d, failed %d; want some answers and no failure", ok, failed)
	}
	srv.Close()
	_, failed = load(context.Background(), srv.URL+"/", 200*time.Millisecond, 1)
	if failed == 0 {
		t.Errorf("load against a closed server counted no failure")
	}
}

func TestRunRefusesUnknownArguments(t *testing.T) {
	for _, args := range [][]string{{"fetch"}, {"load", "u", "1s"}, {"load", "u", "x", "1"}, {"load", "u", "1s", "0"}, {"nope"}} {
		if err := run(args); err == nil {
			t.Errorf("run(%q) succeeded", args)
		}
	}
}
