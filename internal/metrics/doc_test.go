package metrics

import (
	"os"
	"strings"
	"testing"
)

const docPath = "../../docs/metrics.md"

func TestDocsMatchTheCode(t *testing.T) {
	want, err := Markdown()
	if err != nil {
		t.Fatal(err)
	}
	if *update {
		if err := os.WriteFile(docPath, want, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	got, err := os.ReadFile(docPath)
	if err != nil {
		t.Fatal(err)
	}
	if string(got) != string(want) {
		t.Errorf("docs/metrics.md differs from the code: run go generate ./internal/metrics")
	}
}

func TestDocsNameEveryMetricAndLabelValue(t *testing.T) {
	doc, err := Markdown()
	if err != nil {
		t.Fatal(err)
	}
	for _, d := range Descs() {
		if !strings.Contains(string(doc), "`"+d.Name+"`") {
			t.Errorf("docs do not name %s", d.Name)
		}
		for _, l := range d.Labels {
			for _, v := range l.Values {
				if !strings.Contains(string(doc), "`"+v+"`") {
					t.Errorf("docs do not name %s's %s value %q", d.Name, l.Name, v)
				}
			}
		}
	}
}
