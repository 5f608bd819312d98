# Benchmarks (issue 6): kubestrap side by side with the shell-script way it
# replaces, against one moto_server and one ec2-metadata-mock on loopback,
# both started and stopped by the benchmark itself; (issue 10) the graceful
# node leave against a real kube-apiserver + etcd on loopback, also started
# and stopped by the benchmark; and (issue 14) the HA control plane on the
# end-to-end harness: three control planes booted at once and a replacement,
# each round a fresh cluster of its own prefix (ksbench), torn down at the
# end, under the machine's end-to-end lock (/tmp/kubestrap-e2e.lock, which
# the driver holds for each round). Prints a table; asserts nothing about
# time; not part of `make test`. See docs/bench.md.
#   make bench                                 the full run (figure 7 when the e2e build exists)
#   make bench BENCH_ARGS=-quick               a short smoke run
#   make bench BENCH_ARGS='-only leave'        the graceful-leave figure alone
#   make bench BENCH_ARGS='-only ha'           the HA control-plane figure alone (runs make e2e-build first)
BENCH_DIR ?= $(CACHE)/bench
BENCH_ARGS ?=
BENCH_E2E_LOGS ?= $(CACHE)/e2e-last-logs
# The machine's end-to-end lock: every end-to-end run on this machine holds
# it (flock, exclusive) for its whole duration; the driver takes it for each
# round of figure 7.
BENCH_E2E_LOCK ?= /tmp/kubestrap-e2e.lock
# Figure 7 needs make e2e-build's outputs (and its .deb of this tree): built
# (cached) before `-only ha`, and before a full run when an e2e build exists
# (without one a full run skips figure 7 and says so); under the lock, so
# that the build never runs beside another end-to-end run's cluster.
BENCH_ONLY = $(filter -only -only=%,$(BENCH_ARGS))
BENCH_HA = $(if $(filter ha -only=ha,$(BENCH_ARGS)),1,$(if $(BENCH_ONLY),,$(wildcard $(E2E_BUILD)/sdnode-image)))

.PHONY: bench

bench: build deps kube-bins ## kubestrap vs the shell-script way: pickup latency, cost of waiting, footprint, publish time; graceful leave; HA control plane
	$(if $(BENCH_HA),flock -w 3600 $(BENCH_E2E_LOCK) $(MAKE) --no-print-directory e2e-build)
	@mkdir -p $(BENCH_DIR)
	CGO_ENABLED=0 $(GO) build -o $(BENCH_DIR)/fakekubeadm ./test/fakekubeadm
	$(GO) build -tags bench -o $(BENCH_DIR)/kbench ./test/bench
	$(BENCH_DIR)/kbench -kubestrap $(CURDIR)/bin/kubestrap -fake-kubeadm $(BENCH_DIR)/fakekubeadm \
		-aemm $(TOOLS_BIN)/ec2-metadata-mock -shell-worker $(CURDIR)/hack/bench/shell-worker.sh \
		-e2e-logs $(BENCH_E2E_LOGS) -kube-bin $(KUBE_BIN) -out $(BENCH_DIR) \
		-e2e-root $(CURDIR) -e2e-build $(E2E_BUILD) -cache $(CACHE) -ha-lock $(BENCH_E2E_LOCK) $(BENCH_ARGS)
