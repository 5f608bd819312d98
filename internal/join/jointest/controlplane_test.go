package jointest

import (
	"bytes"
	"strings"
	"testing"

	"github.com/kubestrap/kubestrap/internal/join"
)

func TestValidControlPlaneDocParses(t *testing.T) {
	info, err := join.ParseControlPlane(MustJSON(ValidControlPlaneDoc()), Expect())
	if err != nil {
		t.Fatalf("the valid control-plane document is refused: %v", err)
	}
	if info.CertificateKey != CertificateKey || info.TokenID() != "abcdef" || info.Generation != 7 {
		t.Errorf("parsed %v", info)
	}
}

// TestControlPlaneHostileCasesAreMinimal makes sure every control-plane
// hostile case is the valid document with one key added, removed, changed,
// duplicated or renamed (the key its rejection names), or the valid bytes
// with something around them, or not a document at all.
func TestControlPlaneHostileCasesAreMinimal(t *testing.T) {
	valid := MustJSON(ValidControlPlaneDoc())
	validPairs, _ := pairs(valid)
	want := map[string][]byte{}
	for _, p := range validPairs {
		want[p.key] = p.value
	}
	names := map[string]bool{}
	for _, tc := range ControlPlaneHostileCases() {
		t.Run(tc.Name, func(t *testing.T) {
			if names[tc.Name] {
				t.Fatalf("two cases are called %q", tc.Name)
			}
			names[tc.Name] = true
			if tc.Reason == "" {
				t.Errorf("no reason given")
			}
			if len(tc.Body) > len(valid) && bytes.Contains(tc.Body, valid) {
				return // bytes around the valid document: one change
			}
			ps, ok := pairs(tc.Body)
			if !ok {
				if tc.Field != "" {
					t.Errorf("a case that is not a JSON object names field %q", tc.Field)
				}
				return
			}
			var changes []string
			seen := map[string]int{}
			for _, p := range ps {
				seen[p.key]++
				v, known := want[p.key]
				switch {
				case seen[p.key] > 1:
					changes = append(changes, "duplicated "+p.key)
				case !known:
					changes = append(changes, "added "+p.key)
				case !equalJSON(v, p.value):
					changes = append(changes, "changed "+p.key)
				}
			}
			for _, p := range validPairs {
				if seen[p.key] == 0 {
					changes = append(changes, "removed "+p.key)
				}
			}
			if len(changes) == 2 && strings.HasPrefix(changes[0], "added ") && strings.HasPrefix(changes[1], "removed ") &&
				strings.EqualFold(changes[0][len("added "):], changes[1][len("removed "):]) {
				changes = []string{"renamed " + changes[1][len("removed "):]}
			}
			if len(changes) != 1 {
				t.Fatalf("want exactly one change from the valid document, have %v", changes)
			}
			_, key, _ := strings.Cut(changes[0], " ")
			field, _, _ := strings.Cut(tc.Field, "[")
			if field != "" && !strings.EqualFold(key, field) {
				t.Errorf("the change is to %q (%s), but the case says the rejection names %q", key, changes[0], tc.Field)
			}
		})
	}
}
