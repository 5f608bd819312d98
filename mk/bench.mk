# Benchmarks (issue 6): kubestrap side by side with the shell-script way it
# replaces, against one moto_server and one ec2-metadata-mock on loopback,
# both started and stopped by the benchmark itself; and (issue 10) the
# graceful node leave against a real kube-apiserver + etcd on loopback, also
# started and stopped by the benchmark. Prints a table; asserts nothing
# about time; not part of `make test`. See docs/bench.md.
#   make bench                                 the full run (about 11 minutes)
#   make bench BENCH_ARGS=-quick               a short smoke run
#   make bench BENCH_ARGS='-only leave'        the graceful-leave figure alone
BENCH_DIR ?= $(CACHE)/bench
BENCH_ARGS ?=
BENCH_E2E_LOGS ?= $(CACHE)/e2e-last-logs

.PHONY: bench

bench: build deps kube-bins ## kubestrap vs the shell-script way: pickup latency, cost of waiting, footprint, publish time; graceful leave
	@mkdir -p $(BENCH_DIR)
	CGO_ENABLED=0 $(GO) build -o $(BENCH_DIR)/fakekubeadm ./test/fakekubeadm
	$(GO) build -tags bench -o $(BENCH_DIR)/kbench ./test/bench
	$(BENCH_DIR)/kbench -kubestrap $(CURDIR)/bin/kubestrap -fake-kubeadm $(BENCH_DIR)/fakekubeadm \
		-aemm $(TOOLS_BIN)/ec2-metadata-mock -shell-worker $(CURDIR)/hack/bench/shell-worker.sh \
		-e2e-logs $(BENCH_E2E_LOGS) -kube-bin $(KUBE_BIN) -out $(BENCH_DIR) $(BENCH_ARGS)
