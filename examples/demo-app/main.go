// Command demo-app is the small HTTP server of the kubestrap demo: it answers
// every request with a line naming the pod and node it runs on, so a request
// over the NodePort shows where the pod landed.
package main

import (
	"fmt"
	"log"
	"net/http"
	"os"
	"time"
)

func main() {
	addr := ":8080"
	if a := os.Getenv("LISTEN_ADDR"); a != "" {
		addr = a
	}
	pod, node := os.Getenv("POD_NAME"), os.Getenv("NODE_NAME")
	mux := http.NewServeMux()
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, _ *http.Request) { fmt.Fprintln(w, "ok") })
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "hello from kubestrap demo-app: pod=%s node=%s path=%s\n", pod, node, r.URL.Path)
	})
	srv := &http.Server{Addr: addr, Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	log.Printf("demo-app listening on %s (pod %s, node %s)", addr, pod, node)
	log.Fatal(srv.ListenAndServe())
}
