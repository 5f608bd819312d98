package join_test

import (
	"math"
	"regexp"
	"strings"
	"testing"

	. "github.com/kubestrap/kubestrap/internal/join"
	"github.com/kubestrap/kubestrap/internal/join/jointest"
)

func expect() Expectations { return jointest.Expect() }

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
			if r.Field != tc.Field {
				t.Errorf("rejection names field %q, want %q (%v)", r.Field, tc.Field, err)
			}
			msg := err.Error()
			if !strings.Contains(msg, tc.Reason) {
				t.Errorf("rejection %q does not say %q", msg, tc.Reason)
			}
			if strings.Contains(msg, "0123456789abcdef") || strings.Contains(msg, "\n") {
				t.Errorf("rejection leaks a token secret or a raw newline: %q", msg)
			}
		})
	}
}

func TestParseRefusesDuplicateKeysAtAnyLevel(t *testing.T) {
	valid := jointest.MustJSON(jointest.ValidDoc())
	for _, tc := range []struct {
		name, extra, want string
	}{
		// The nested cases also carry an unknown field; the message shows the
		// duplicate was found first, wherever it is.
		{"nested object", `"x":{"a":1,"b":{"c":[{"d":1,"D":2}]}}`, `"x.b.c[].d" and "x.b.c[].D" differ only by case`},
		{"nested array of objects", `"x":[{"a":1},{"a":1,"a":2}]`, `key "x[].a" is given twice`},
		{"escaped spelling of a key", `"tok\u0065n":"zzzzzz.0123456789abcdef"`, `key "token" is given twice`},
		{"token-like key", `"abcdef.0123456789abcdef":1,"abcdef.0123456789abcdef":2`, `key "abcdef.<redacted>" is given twice`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			body := append(append(valid[:len(valid)-1:len(valid)-1], ","+tc.extra...), '}')
			_, err := Parse(body, expect())
			if err == nil || !IsRejection(err) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err = %v, want a rejection saying %s", err, tc.want)
			}
			if strings.Contains(err.Error(), "0123456789abcdef") {
				t.Errorf("rejection leaks a token secret: %v", err)
			}
		})
	}
	// Objects that are siblings may use the same keys.
	body := append(append(valid[:len(valid)-1:len(valid)-1], `,"x":[{"a":1},{"a":1}]`...), '}')
	if _, err := Parse(body, expect()); err == nil || !strings.Contains(err.Error(), "unknown field") {
		t.Errorf("err = %v, want only the unknown field refused", err)
	}
}

func TestParseGenerationBounds(t *testing.T) {
	for _, g := range []int64{1, MaxGeneration} {
		if _, err := Parse(jointest.With("generation", g), expect()); err != nil {
			t.Errorf("generation %d refused: %v", g, err)
		}
	}
	_, err := Parse(jointest.With("generation", MaxGeneration+1), expect())
	if err == nil || !strings.Contains(err.Error(), "generation: 9007199254740992 is above the largest generation 9007199254740991") {
		t.Errorf("generation 2^53 gives %v", err)
	}
}

func TestNextGeneration(t *testing.T) {
	for g, want := range map[int64]int64{0: 1, 1: 2, 41: 42, MaxGeneration - 1: MaxGeneration} {
		if got, err := NextGeneration(g); err != nil || got != want {
			t.Errorf("NextGeneration(%d) = %d, %v; want %d", g, got, err, want)
		}
	}
	for _, g := range []int64{-1, math.MinInt64, MaxGeneration, MaxGeneration + 1, math.MaxInt64} {
		if got, err := NextGeneration(g); err == nil {
			t.Errorf("NextGeneration(%d) = %d, want an error", g, got)
		}
	}
	if MaxGeneration != 1<<53-1 || float64(MaxGeneration) != float64(MaxGeneration-1)+1 {
		t.Errorf("MaxGeneration %d is not 2^53-1", MaxGeneration)
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
