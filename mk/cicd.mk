# CI/CD (issue 9): every step of substance of .github/workflows/*.yml is one of
# these targets, so that the same commands run here (test/deploy/cicd_test.go,
# the e2e scenario) and on GitHub. See docs/cicd.md.
#
# Terraform (TF_DIR, default tf/):
#   make tf-fmt-check                   terraform fmt -check -recursive
#   make tf-validate                    init without a backend, validate
#   make tf-plan  [TF_BACKEND_CONFIG=…] init (S3 backend with a lock file when
#                                       TF_BACKEND_CONFIG is set, else local state), plan to TF_PLAN_FILE
#   make tf-apply [TF_BACKEND_CONFIG=…] a fresh plan, then apply exactly that plan
#     TF_BACKEND_CONFIG  -backend-config items, space-separated: key=value or a .tfbackend file
#     TF_VAR_FILE        a -var-file (TF_VAR_* in the environment work too)
#     TF_INIT_ARGS       extra init flags (the tests: -plugin-dir=/opt/tf-plugins)
#
# The demo image (examples/demo-app):
#   make demo-image                     DEMO_IMAGE_TAR: static binary, one layer, entrypoint /demo-app
#   make demo-push IMAGE_REPO=<ecr repository url> [IMAGE_TAG=<commit>]
#                                       ECR login (aws ecr get-login-password; honours AWS_ENDPOINT_URL),
#                                       push unless the tag already holds this very image
#   make demo-current-tag               print the tag deployment/demo-app runs now
#   make demo-rollout IMAGE_REPO=… IMAGE_TAG=…     set image + rollout status (KUBECONFIG)
#   make demo-rollback IMAGE_REPO=… PREVIOUS_TAG=… set image back to a known tag + rollout status;
#                                       without PREVIOUS_TAG: kubectl rollout undo (see docs/cicd.md)

.PHONY: tf-fmt-check tf-init tf-validate tf-plan tf-apply tf-plugins \
	demo-image demo-push demo-current-tag demo-rollout demo-rollback

TF ?= terraform
TF_DIR ?= tf
TF_BACKEND_CONFIG ?=
TF_VAR_FILE ?=
TF_INIT_ARGS ?=
# Relative to TF_DIR.
TF_PLAN_FILE ?= tfplan
TF_LOCK_TIMEOUT ?= 5m
# A file argument is made absolute (terraform runs with -chdir).
TF_BACKEND_ARGS = $(foreach c,$(TF_BACKEND_CONFIG),'-backend-config=$(if $(findstring =,$(c)),$(c),$(abspath $(c)))')
TF_VAR_ARGS = $(if $(TF_VAR_FILE),'-var-file=$(abspath $(TF_VAR_FILE))')

tf-fmt-check: ## terraform fmt -check over TF_DIR
	$(TF) fmt -check -recursive -diff $(TF_DIR)

tf-init: ## terraform init: the S3 backend (lock file) with TF_BACKEND_CONFIG, local state without
ifneq ($(strip $(TF_BACKEND_CONFIG)),)
	cp $(CURDIR)/tf/backend.tf.example $(TF_DIR)/backend.tf
	$(TF) -chdir=$(TF_DIR) init -input=false -reconfigure $(TF_INIT_ARGS) $(TF_BACKEND_ARGS)
else
	$(TF) -chdir=$(TF_DIR) init -input=false -backend=false $(TF_INIT_ARGS)
endif

tf-validate: ## terraform validate (providers only, no backend, no credentials)
	$(TF) -chdir=$(TF_DIR) init -input=false -backend=false $(TF_INIT_ARGS)
	$(TF) -chdir=$(TF_DIR) validate

tf-plan: tf-init ## terraform plan -out TF_PLAN_FILE (and TF_PLAN_FILE.txt, the plan as text)
	$(TF) -chdir=$(TF_DIR) plan -input=false -lock-timeout=$(TF_LOCK_TIMEOUT) -out=$(TF_PLAN_FILE) $(TF_VAR_ARGS)
	$(TF) -chdir=$(TF_DIR) show -no-color $(TF_PLAN_FILE) > $(TF_DIR)/$(TF_PLAN_FILE).txt

tf-apply: tf-plan ## apply exactly the plan tf-plan just made
	$(TF) -chdir=$(TF_DIR) apply -input=false -lock-timeout=$(TF_LOCK_TIMEOUT) $(TF_PLAN_FILE)

# The unpacked provider layout the deploy tests use with -plugin-dir (on a
# machine that reaches the Terraform registry; this one has it preinstalled).
TF_PLUGIN_DIR ?= /opt/tf-plugins
tf-plugins: ## fill TF_PLUGIN_DIR with the providers tf/ needs (registry access required)
	@mkdir -p $(TF_PLUGIN_DIR)
	w=$$(mktemp -d) && trap 'rm -rf "$$w"' EXIT && cp $(CURDIR)/tf/*.tf "$$w/" && rm -f "$$w/backend.tf" && \
		cp -r $(CURDIR)/tf/modules $(CURDIR)/tf/templates "$$w/" && \
		TF_PLUGIN_CACHE_DIR=$(abspath $(TF_PLUGIN_DIR)) $(TF) -chdir="$$w" init -input=false -backend=false

# --- the demo image -----------------------------------------------------------

CRANE_VERSION := v0.22.1
CRANE ?= $(TOOLS_BIN)/crane-$(CRANE_VERSION)/crane
KUBECTL ?= kubectl
AWS ?= aws
DEMO_IMAGE_TAR ?= $(CURDIR)/dist/demo-app-image.tar
DEMO_GOARCH ?= amd64
# The ECR repository URL (terraform output ecr_repository_url); the tag of an
# image CI builds is its full commit.
IMAGE_REPO ?=
IMAGE_TAG ?= $(COMMIT)
PREVIOUS_TAG ?=
DEMO_NAMESPACE ?= default
DEMO_DEPLOYMENT ?= demo-app
DEMO_CONTAINER ?= demo-app
ROLLOUT_TIMEOUT ?= 180s
KUBECTL_NS = $(KUBECTL) --namespace $(DEMO_NAMESPACE)
need-image-repo = $(if $(IMAGE_REPO),,$(error IMAGE_REPO is not set: the ECR repository URL, terraform output ecr_repository_url))

$(CRANE):
	@mkdir -p $(@D)
	GOBIN=$(abspath $(@D)) CGO_ENABLED=0 GOFLAGS=-buildvcs=false $(GO) install github.com/google/go-containerregistry/cmd/crane@$(CRANE_VERSION)

# As hack/e2e/images.sh's mkimg: one layer with the static binary, built on an
# empty base in a loopback-only crane registry that lives for this target only.
# The layer's files have fixed owners and times, so one commit gives one digest.
demo-image: $(CRANE) ## the demo app's image as a docker tarball (DEMO_IMAGE_TAR)
	@set -euo pipefail; \
	w=$$(mktemp -d); reg=""; \
	trap 'if [ -n "$$reg" ]; then kill "$$reg" 2>/dev/null || true; wait "$$reg" 2>/dev/null || true; fi; rm -rf "$$w"' EXIT; \
	mkdir -p "$$w/root/tmp" "$$w/root/etc" $(dir $(DEMO_IMAGE_TAR)); chmod 1777 "$$w/root/tmp"; \
	CGO_ENABLED=0 GOOS=linux GOARCH=$(DEMO_GOARCH) GOFLAGS=-buildvcs=false \
		$(GO) build -trimpath -ldflags='-s -w' -o "$$w/root/demo-app" ./examples/demo-app; \
	echo 'root:x:0:0:root:/root:/bin/sh' > "$$w/root/etc/passwd"; echo 'root:x:0:' > "$$w/root/etc/group"; \
	tar --sort=name --mtime=@0 --owner=0 --group=0 --numeric-owner -cf "$$w/layer.tar" -C "$$w/root" .; \
	$(CRANE) registry serve --address 127.0.0.1:0 > "$$w/registry.log" 2>&1 & reg=$$!; \
	port=""; for _ in $$(seq 100); do \
		port=$$(sed -n 's/.*serving on port \([0-9][0-9]*\).*/\1/p' "$$w/registry.log"); \
		[ -n "$$port" ] && break; sleep 0.1; done; \
	[ -n "$$port" ] || { echo "crane registry did not start:"; cat "$$w/registry.log"; exit 1; }; \
	ref=127.0.0.1:$$port/demo-app:build; \
	$(CRANE) append --insecure --oci-empty-base -f "$$w/layer.tar" -t "$$ref" >/dev/null 2>"$$w/crane.log" || \
		{ cat "$$w/crane.log"; exit 1; }; \
	$(CRANE) mutate --insecure --set-platform linux/$(DEMO_GOARCH) --entrypoint /demo-app \
		-o $(DEMO_IMAGE_TAR) -t $(or $(IMAGE_REPO),demo-app):$(IMAGE_TAG) "$$ref" >/dev/null 2>"$$w/crane.log" || \
		{ cat "$$w/crane.log"; exit 1; }; \
	echo "demo image $(or $(IMAGE_REPO),demo-app):$(IMAGE_TAG) -> $(DEMO_IMAGE_TAR) ($$($(CRANE) digest --tarball $(DEMO_IMAGE_TAR)))"

# ECR tags are immutable: a tag that already holds this image is success (a
# re-run), a tag holding another image is an error.
demo-push: $(CRANE) ## push DEMO_IMAGE_TAR to IMAGE_REPO:IMAGE_TAG (ECR login with the ambient AWS credentials)
	$(need-image-repo)
	@set -euo pipefail; \
	test -f $(DEMO_IMAGE_TAR) || { echo "$(DEMO_IMAGE_TAR) does not exist: make demo-image first"; exit 1; }; \
	ref=$(IMAGE_REPO):$(IMAGE_TAG); registry=$${ref%%/*}; \
	DOCKER_CONFIG=$$(mktemp -d); export DOCKER_CONFIG; trap 'rm -rf "$$DOCKER_CONFIG"' EXIT; \
	$(AWS) ecr get-login-password | $(CRANE) auth login "$$registry" -u AWS --password-stdin; \
	want=$$($(CRANE) digest --tarball $(DEMO_IMAGE_TAR)); \
	if have=$$($(CRANE) digest "$$ref" 2>/dev/null); then \
		if [ "$$have" = "$$want" ]; then echo "$$ref is already $$want"; exit 0; fi; \
		echo "$$ref holds $$have, not $$want: tags are immutable"; exit 1; \
	fi; \
	$(CRANE) push $(DEMO_IMAGE_TAR) "$$ref" >/dev/null; \
	echo "pushed $$ref ($$want)"

demo-current-tag: ## the tag deployment/demo-app runs now (the rollback target)
	@image=$$($(KUBECTL_NS) get deployment/$(DEMO_DEPLOYMENT) \
		-o jsonpath='{.spec.template.spec.containers[?(@.name=="$(DEMO_CONTAINER)")].image}') && \
		echo "$${image##*:}"

# change-cause first (metadata only), then the image: the new ReplicaSet
# carries the tag in `kubectl rollout history`.
demo-rollout: ## deployment/demo-app to IMAGE_REPO:IMAGE_TAG, wait for the rollout (KUBECONFIG)
	$(need-image-repo)
	$(KUBECTL_NS) annotate deployment/$(DEMO_DEPLOYMENT) --overwrite kubernetes.io/change-cause="image $(IMAGE_TAG)"
	$(KUBECTL_NS) set image deployment/$(DEMO_DEPLOYMENT) $(DEMO_CONTAINER)=$(IMAGE_REPO):$(IMAGE_TAG)
	$(KUBECTL_NS) rollout status deployment/$(DEMO_DEPLOYMENT) --timeout=$(ROLLOUT_TIMEOUT)

# With PREVIOUS_TAG: back to that image, the same way forward goes (explicit,
# repeatable, independent of ReplicaSet history). Without: rollout undo, one
# revision back (repeating it flips back and forth).
demo-rollback: ## deployment/demo-app back to PREVIOUS_TAG (or rollout undo), wait for it
ifneq ($(strip $(PREVIOUS_TAG)),)
	$(need-image-repo)
	$(MAKE) --no-print-directory demo-rollout IMAGE_TAG=$(PREVIOUS_TAG)
else
	$(KUBECTL_NS) rollout undo deployment/$(DEMO_DEPLOYMENT)
	$(KUBECTL_NS) rollout status deployment/$(DEMO_DEPLOYMENT) --timeout=$(ROLLOUT_TIMEOUT)
endif
