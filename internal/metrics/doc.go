package metrics

import (
	"bytes"
	_ "embed"
	"fmt"
	"strings"
	"text/template"
)

//go:embed metrics.md.tmpl
var docTemplate string

// Markdown renders docs/metrics.md: the prose of metrics.md.tmpl around the
// reference of every metric in Descs.
func Markdown() ([]byte, error) {
	tmpl, err := template.New("metrics.md").Parse(docTemplate)
	if err != nil {
		return nil, fmt.Errorf("parse metrics.md.tmpl: %w", err)
	}
	var b bytes.Buffer
	if err := tmpl.Execute(&b, struct{ Reference string }{reference()}); err != nil {
		return nil, fmt.Errorf("render metrics.md.tmpl: %w", err)
	}
	return b.Bytes(), nil
}

// reference lists every metric: a summary table, then each metric's labels
// and their values.
func reference() string {
	var b strings.Builder
	b.WriteString("| metric | type | labels | meaning |\n|---|---|---|---|\n")
	for _, d := range Descs() {
		var labels []string
		for _, l := range d.Labels {
			labels = append(labels, "`"+l.Name+"`")
		}
		if len(labels) == 0 {
			labels = []string{"none"}
		}
		fmt.Fprintf(&b, "| `%s` | %s | %s | %s |\n", d.Name, d.Type, strings.Join(labels, ", "), d.Help)
	}
	for _, d := range Descs() {
		if len(d.Labels) == 0 && d.Type != Histogram {
			continue
		}
		fmt.Fprintf(&b, "\n### `%s`\n\n", d.Name)
		if d.Type == Histogram {
			var bs []string
			for _, x := range d.Buckets {
				bs = append(bs, formatFloat(x))
			}
			fmt.Fprintf(&b, "Buckets (seconds): %s, +Inf.\n", strings.Join(bs, ", "))
			if len(d.Labels) > 0 {
				b.WriteString("\n")
			}
		}
		for _, l := range d.Labels {
			fmt.Fprintf(&b, "- `%s`: %s.", l.Name, l.Doc)
			if l.Values != nil {
				vs := make([]string, len(l.Values))
				for j, v := range l.Values {
					vs[j] = "`" + v + "`"
				}
				fmt.Fprintf(&b, " Values: %s.", strings.Join(vs, ", "))
			}
			b.WriteString("\n")
		}
		if d.Fallback != nil {
			var fb []string
			for i, v := range d.Fallback {
				fb = append(fb, fmt.Sprintf("`%s=\"%s\"`", d.Labels[i].Name, v))
			}
			fmt.Fprintf(&b, "\nAn observation outside these values counts under %s.\n", strings.Join(fb, ", "))
		}
	}
	return b.String()
}
