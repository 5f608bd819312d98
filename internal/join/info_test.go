package join_test

import (
	"regexp"
	"strings"
	"testing"
	"time"

	. "github.com/kubestrap/kubestrap/internal/join"
	"github.com/kubestrap/kubestrap/internal/join/jointest"
)

func expect() Expectations {
	return Expectations{Cluster: "demo", Now: jointest.Now.Add(time.Minute), Margin: 2 * time.Minute}
}

func TestParseAcceptsValidJoinInfo(t *testing.T) {
	info, err := Parse(jointest.MustJSON(jointest.ValidDoc()), expect())
	if err != nil {
		t.Fatalf("valid join info refused: %v", err)
	}
	if info.TokenID() != "abcdef" || info.Generation != 7 || info.APIServerEndpoint != "10.0.1.10:6443" {
		t.Errorf("parsed %+v", info)
	}
	for _, ep := range []string{"api.demo.internal:6443", "[fd00::10]:6443", "10.0.1.10:1"} {
		if _, err := Parse(jointest.With("apiServerEndpoint", ep), expect()); err != nil {
			t.Errorf("endpoint %q refused: %v", ep, err)
		}
	}
}

func TestParseRefusesHostileJoinInfo(t *testing.T) {
	cases := jointest.HostileCases()
	if len(cases) < 20 {
		t.Fatalf("want at least 20 hostile cases, have %d", len(cases))
	}
	for _, tc := range cases {
		t.Run(tc.Name, func(t *testing.T) {
			info, err := Parse(tc.Body, expect())
			if err == nil {
				t.Fatalf("accepted: %+v", info)
			}
			if !IsRejection(err) {
				t.Fatalf("error is not a rejection: %v", err)
			}
			r := err.(*Rejection)
			if tc.Field != "" && r.Field != tc.Field {
				t.Errorf("rejection names field %q, want %q (%v)", r.Field, tc.Field, err)
			}
			msg := err.Error()
			if strings.Contains(msg, "0123456789abcdef") || strings.Contains(msg, "\n") {
				t.Errorf("rejection leaks a token secret or a raw newline: %q", msg)
			}
		})
	}
}

func TestTokenID(t *testing.T) {
	if got := TokenID("abcdef.0123456789abcdef"); got != "abcdef" {
		t.Errorf("TokenID = %q", got)
	}
	if got := TokenID("bad"); got != "" {
		t.Errorf("TokenID(bad) = %q", got)
	}
}

func FuzzParse(f *testing.F) {
	f.Add(jointest.MustJSON(jointest.ValidDoc()))
	for _, tc := range jointest.HostileCases() {
		if len(tc.Body) < 4096 {
			f.Add(tc.Body)
		}
	}
	want := expect()
	f.Fuzz(func(t *testing.T, data []byte) {
		info, err := Parse(data, want)
		if err != nil {
			if !IsRejection(err) {
				t.Fatalf("non-rejection error: %v", err)
			}
			return
		}
		// Whatever is accepted must satisfy every rule by itself.
		if verr := info.Validate(want); verr != nil {
			t.Fatalf("accepted info fails validation: %v", verr)
		}
		if !regexp.MustCompile(`^[a-z0-9]{6}\.[a-z0-9]{16}$`).MatchString(info.Token) || len(info.CACertHashes) == 0 {
			t.Fatalf("accepted malformed info: %+v", info)
		}
		for _, s := range []string{info.APIServerEndpoint, info.Token, info.Cluster} {
			if strings.ContainsAny(s, " \t\n;|&$`'\"<>(){}\\") || strings.HasPrefix(s, "-") {
				t.Fatalf("accepted a value with shell or flag syntax: %q", s)
			}
		}
	})
}
