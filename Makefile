# kubestrap: build, test, e2e, bench, package, demo.
SHELL := /bin/bash
GO ?= go
VERSION ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
COMMIT ?= $(shell git rev-parse --short HEAD 2>/dev/null || echo unknown)
# Heavy build outputs (kube binaries, tools) are cached here between runs.
CACHE ?= /var/cache/kubestrap
KUBE_BIN := $(CACHE)/kube-v1.37.2
TOOLS_BIN := $(CACHE)/tools
LDFLAGS := -s -w -X github.com/kubestrap/kubestrap/internal/version.Version=$(VERSION) \
	-X github.com/kubestrap/kubestrap/internal/version.Commit=$(COMMIT)

.PHONY: all build test unit integration fuzz e2e bench package demo demo-down kube-bins tools deps lint clean

all: build

build: ## bin/kubestrap, static
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags '$(LDFLAGS)' -o bin/kubestrap ./cmd/agent

# staticcheck, pinned. `go run pkg@version` builds it in a module of its own:
# a `tool` line in go.mod (as for nfpm) would raise golang.org/x/sys, x/net,
# x/crypto and x/text in the agent's own build to staticcheck's versions.
STATICCHECK ?= $(GO) run honnef.co/go/tools/cmd/staticcheck@v0.8.2
# Every build tag a //go:build line of the repository uses (bench, deploy, e2e,
# integration today), comma-separated, so that vet and staticcheck see every file.
GO_BUILD_TAGS = $(shell grep -rh --include='*.go' --exclude-dir=.git '^//go:build' . | \
	sed 's|^//go:build||' | tr -cs 'A-Za-z0-9_.\n' '\n' | sed '/^$$/d' | sort -u | paste -sd, -)
# The shell scripts shellcheck reads: every *.sh under hack/.
SHELL_SCRIPTS = $(shell find hack -name '*.sh' | sort)

# actionlint, pinned, over .github/workflows (it runs shellcheck on their run: scripts).
ACTIONLINT ?= $(GO) run github.com/rhysd/actionlint/cmd/actionlint@v1.7.12

lint: ## gofmt; go vet and staticcheck for every build tag; shellcheck over hack/; actionlint
	@files=$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go')); \
		test -z "$$files" || { echo "gofmt needed: $$files"; exit 1; }
	$(GO) vet ./...
	$(GO) vet -tags '$(GO_BUILD_TAGS)' ./...
	$(STATICCHECK) -tags '$(GO_BUILD_TAGS)' ./...
	@command -v shellcheck >/dev/null || { apt-get update -q && \
		DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends shellcheck; }
	shellcheck --external-sources --source-path=SCRIPTDIR $(SHELL_SCRIPTS)
	$(ACTIONLINT) .github/workflows/*.yml

unit: ## unit tests (seconds)
	$(GO) test -count=1 ./...

fuzz: ## a short run of the join info fuzz target
	$(GO) test -run '^$$' -fuzz FuzzParse -fuzztime 15s ./internal/join

deps: ## Debian packages and Go tools the tests need
	hack/install-deps.sh $(TOOLS_BIN)

kube-bins: ## real kubeadm, kubelet, control plane, etcd (cached)
	hack/build-kube.sh $(KUBE_BIN)

integration: build deps kube-bins ## against moto_server, ec2-metadata-mock and the real kubeadm
	KUBESTRAP_BIN=$(CURDIR)/bin/kubestrap KUBE_BIN=$(KUBE_BIN) TOOLS_BIN=$(TOOLS_BIN) \
		$(GO) test -count=1 -tags integration -timeout 20m -v ./test/integration/...

test: lint unit fuzz integration deploy-deps deploy-test ## everything CI runs (mk/e2e.mk adds e2e)

clean:
	rm -rf bin dist

# Packaging, Terraform and e2e targets live in mk/*.mk.
-include mk/*.mk
