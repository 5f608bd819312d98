// Command gen writes docs/metrics.md from the agent's metric definitions
// (internal/metrics): go generate ./internal/metrics.
package main

import (
	"flag"
	"fmt"
	"os"

	"github.com/kubestrap/kubestrap/internal/metrics"
)

func main() {
	out := flag.String("out", "docs/metrics.md", "file to write")
	flag.Parse()
	doc, err := metrics.Markdown()
	if err == nil {
		err = os.WriteFile(*out, doc, 0o644)
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "gen: %v\n", err)
		os.Exit(1)
	}
}
