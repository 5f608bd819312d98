# End-to-end harness (issue 5): a real kubeadm cluster of network + mount + UTS
# namespaces on this machine, bootstrapped by kubestrap. See docs/e2e.md.
#   make demo        install, build, boot 1 control plane + 2 workers, deploy the demo app
#   make demo-down   remove everything the demo made
#   make e2e         the same cluster and the end-to-end scenarios, torn down at the end
#   make e2e-ha      three control planes behind a TCP load balancer, one worker, the HA scenarios
#   make demo CONTROL_PLANES=3   the HA shape
E2E_BUILD ?= $(CACHE)/e2e-build
# E2E_PREFIX names everything a run makes on the machine (network namespaces,
# node machines, cgroups); two runs at once need two prefixes and two E2E_RUNs.
E2E_PREFIX ?= kse2e
E2E_RUN ?= $(CACHE)/e2e-run$(if $(filter kse2e,$(E2E_PREFIX)),,-$(E2E_PREFIX))
CONTROL_PLANES ?= 1
E2E_ENV := CACHE=$(CACHE) KUBE_BIN=$(KUBE_BIN) E2E_BUILD=$(E2E_BUILD) E2E_RUN=$(E2E_RUN) \
	E2E_PREFIX=$(E2E_PREFIX) STAGE_TIMES=$(E2E_BUILD)/last-build-times E2E_CONTROL_PLANES=$(CONTROL_PLANES)

.PHONY: e2e-deps e2e-build demo demo-down e2e e2e-ha

e2e-deps: ## Debian packages and Go tools of the e2e cluster (idempotent)
	@mkdir -p $(E2E_BUILD) && : > $(E2E_BUILD)/last-build-times
	@$(E2E_ENV) hack/e2e/stage.sh e2e-deps hack/e2e/deps.sh

e2e-build: e2e-deps build package-deb ## kube binaries, kube-proxy, node images, the .deb the nodes install (cached)
	@$(E2E_ENV) hack/e2e/stage.sh kube-bins $(MAKE) --no-print-directory kube-bins
	@$(E2E_ENV) hack/e2e/stage.sh images hack/e2e/images.sh

demo: e2e-build
	@$(E2E_ENV) hack/e2e/demo.sh

demo-down:
	@$(E2E_ENV) hack/e2e/down.sh

e2e: e2e-build
	@$(E2E_ENV) hack/e2e/run-e2e.sh

# The HA shape (issue 14): cp, cp2 and cp3 boot at once behind a TCP load
# balancer, one worker, only the TestHA scenarios. After make e2e in make test.
e2e-ha: e2e-build
	@$(E2E_ENV) E2E_CONTROL_PLANES=3 E2E_WORKERS=1 E2E_CRASH_INIT=0 E2E_TESTS='^TestHA' hack/e2e/run-e2e.sh

# `make test` (CI) includes the end-to-end run; E2E=0 leaves it out.
E2E ?= 1
ifeq ($(E2E),1)
test: e2e e2e-ha
endif
