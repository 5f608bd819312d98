package jointest

import (
	"bytes"
	"encoding/json"
	"io"
	"strings"
	"testing"

	"github.com/kubestrap/kubestrap/internal/join"
)

func TestValidDocParses(t *testing.T) {
	info, err := join.Parse(MustJSON(ValidDoc()), Expect())
	if err != nil {
		t.Fatalf("the valid document is refused: %v", err)
	}
	if info.Cluster != "demo" || info.TokenID() != "abcdef" || info.Generation != 7 {
		t.Errorf("parsed %+v", info)
	}
}

// wholeDocument are the cases that are not derived from the valid document
// because what they test is that the body is not join info at all.
var wholeDocument = map[string]bool{"not JSON": true, "empty body": true, "whitespace-only body": true}

// TestHostileCasesAreMinimal makes sure every hostile case is the valid
// document with exactly one thing changed, in the field the case names, so
// that it can be refused for its own reason only.
func TestHostileCasesAreMinimal(t *testing.T) {
	valid := MustJSON(ValidDoc())
	names := map[string]bool{}
	for _, tc := range HostileCases() {
		t.Run(tc.Name, func(t *testing.T) {
			if names[tc.Name] {
				t.Fatalf("two cases are called %q", tc.Name)
			}
			names[tc.Name] = true
			if tc.Reason == "" {
				t.Errorf("no reason given")
			}
			switch {
			case wholeDocument[tc.Name]:
				if tc.Field != "" {
					t.Errorf("a whole-document case names field %q", tc.Field)
				}
			case len(tc.Body) > len(valid) && bytes.Contains(tc.Body, valid):
				// The valid document with bytes added around it (padding,
				// trailing data, a wrapper, a prefix): one change.
				if tc.Field != "" {
					t.Errorf("a whole-document change names field %q", tc.Field)
				}
			default:
				if ps, ok := pairs(tc.Body); ok {
					checkOneKeyChange(t, tc, ps)
					return
				}
				// Not a JSON object: the valid bytes with one short edit.
				a, b := editSpan(valid, tc.Body)
				if len(a) > 8 || len(b) > 8 {
					t.Errorf("neither one key changed nor one short edit of the valid document: %q became %q", a, b)
				}
				if tc.Field != "" {
					t.Errorf("a syntax change names field %q", tc.Field)
				}
			}
		})
	}
}

// keyChange is one difference between a document and the valid one.
type keyChange struct {
	kind  string // added, removed, changed, duplicated, renamed
	key   string // the key as the valid document spells it, when it has it
	value json.RawMessage
}

func (c keyChange) String() string { return c.kind + " " + c.key + ": " + string(c.value) }

func checkOneKeyChange(t *testing.T, tc HostileCase, ps []pair) {
	t.Helper()
	validPairs, _ := pairs(MustJSON(ValidDoc()))
	want := map[string]json.RawMessage{}
	for _, p := range validPairs {
		want[p.key] = p.value
	}
	var changes []keyChange
	seen := map[string]int{}
	for _, p := range ps {
		seen[p.key]++
		v, known := want[p.key]
		switch {
		case seen[p.key] > 1:
			changes = append(changes, keyChange{"duplicated", p.key, p.value})
		case !known:
			changes = append(changes, keyChange{"added", p.key, p.value})
		case !equalJSON(v, p.value):
			changes = append(changes, keyChange{"changed", p.key, p.value})
		}
	}
	for _, p := range validPairs {
		if seen[p.key] == 0 {
			changes = append(changes, keyChange{"removed", p.key, p.value})
		}
	}
	// A key spelled otherwise with the same value is one change: a rename.
	if len(changes) == 2 && changes[0].kind == "added" && changes[1].kind == "removed" &&
		strings.EqualFold(changes[0].key, changes[1].key) && equalJSON(changes[0].value, changes[1].value) {
		changes = []keyChange{{"renamed", changes[1].key, changes[1].value}}
	}
	if len(changes) != 1 {
		t.Fatalf("want exactly one change from the valid document, have %d: %v", len(changes), changes)
	}
	c := changes[0]
	field, _, _ := strings.Cut(tc.Field, "[")
	if field != "" && !strings.EqualFold(c.key, field) {
		t.Errorf("the change is to %q (%s), but the case says the rejection names %q", c.key, c.kind, tc.Field)
	}
	// A repeated key (also in another case) carries a value that would be
	// valid on its own: only the repetition is wrong.
	if c.kind == "duplicated" || c.kind == "added" {
		for schemaKey := range want {
			if !strings.EqualFold(schemaKey, c.key) {
				continue
			}
			var v any
			if err := json.Unmarshal(c.value, &v); err != nil {
				t.Fatal(err)
			}
			if _, err := join.Parse(With(schemaKey, v), Expect()); err != nil {
				t.Errorf("the repeated value %s is not valid on its own: %v", c.value, err)
			}
		}
	}
}

type pair struct {
	key   string
	value json.RawMessage
}

// pairs reads body as one JSON object, keeping repeated keys and their order;
// ok is false when body is anything else.
func pairs(body []byte) (ps []pair, ok bool) {
	dec := json.NewDecoder(bytes.NewReader(body))
	if tok, err := dec.Token(); err != nil || tok != json.Delim('{') {
		return nil, false
	}
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			return nil, false
		}
		key, _ := tok.(string)
		var raw json.RawMessage
		if err := dec.Decode(&raw); err != nil {
			return nil, false
		}
		ps = append(ps, pair{key, raw})
	}
	if tok, err := dec.Token(); err != nil || tok != json.Delim('}') {
		return nil, false
	}
	if _, err := dec.Token(); err != io.EOF {
		return nil, false
	}
	return ps, true
}

func equalJSON(a, b json.RawMessage) bool {
	var ca, cb bytes.Buffer
	return json.Compact(&ca, a) == nil && json.Compact(&cb, b) == nil && bytes.Equal(ca.Bytes(), cb.Bytes())
}

// editSpan returns what differs between a and b once their common prefix and
// suffix are taken away.
func editSpan(a, b []byte) ([]byte, []byte) {
	p := 0
	for p < len(a) && p < len(b) && a[p] == b[p] {
		p++
	}
	s := 0
	for s < len(a)-p && s < len(b)-p && a[len(a)-1-s] == b[len(b)-1-s] {
		s++
	}
	return a[p : len(a)-s], b[p : len(b)-s]
}

func TestHelpers(t *testing.T) {
	if got := string(WithDuplicate("token", "zzzzzz.0123456789abcdef")); !strings.HasSuffix(got, `,"token":"abcdef.0123456789abcdef","token":"zzzzzz.0123456789abcdef"}`) {
		t.Errorf("WithDuplicate = %s", got)
	}
	if got := string(Renamed("token", "Token")); strings.Contains(got, `"token"`) || !strings.Contains(got, `"Token":"abcdef.0123456789abcdef"`) {
		t.Errorf("Renamed = %s", got)
	}
	// WithDuplicate must not write into the valid document's buffer.
	if a, b := WithDuplicate("kind", "x"), WithDuplicate("cluster", "y"); bytes.Contains(a, []byte(`"cluster":"y"`)) || bytes.Contains(b, []byte(`"kind":"x"`)) {
		t.Errorf("WithDuplicate results share memory: %s / %s", a, b)
	}
}
