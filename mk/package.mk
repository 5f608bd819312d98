# Packaging: .deb and .rpm with nfpm (a Go tool of this module: `go tool nfpm`),
# and the tools the deploy tests need (test/deploy, build tag `deploy`).

# Package version: v1.2.3 on a tagged commit gives 1.2.3; v1.2.3 plus 4 commits
# gives 1.2.3+git4.<sha>; no tag gives 0.0.0~git<commit time>.<sha>. All three
# sort correctly for dpkg and rpm.
PKG_VERSION ?= $(shell \
	d=$$(git describe --tags --match 'v[0-9]*' 2>/dev/null) && \
	  echo "$$d" | sed -E 's/^v//; s/-([0-9]+)-g([0-9a-f]+)$$/+git\1.\2/' || \
	  echo "0.0.0~git$$(git log -1 --format=%cd --date=format:%Y%m%d%H%M%S 2>/dev/null || echo 0).$$(git rev-parse --short HEAD 2>/dev/null || echo unknown)")
# Cross-build with `make package GOARCH=arm64`.
PKG_ARCH ?= $(or $(GOARCH),$(shell $(GO) env GOARCH))
# Reproducible packages: file times come from the last commit.
SOURCE_DATE_EPOCH ?= $(shell git log -1 --format=%ct 2>/dev/null || echo 0)
# nfpm itself always runs on the build machine, whatever GOARCH says.
NFPM ?= env -u GOOS -u GOARCH $(GO) tool nfpm
DIST ?= dist
DEPLOY_APT_PACKAGES := lintian systemd dpkg dpkg-dev rpm shellcheck

.PHONY: package package-deb package-rpm deploy-deps deploy-test

$(DIST)/man/kubestrap.8.gz: packaging/kubestrap.8
	@mkdir -p $(@D)
	gzip -9nc $< > $@

package: package-deb package-rpm ## .deb and .rpm in dist/

package-deb package-rpm: package-%: build $(DIST)/man/kubestrap.8.gz
	VERSION='$(PKG_VERSION)' ARCH='$(PKG_ARCH)' SOURCE_DATE_EPOCH='$(SOURCE_DATE_EPOCH)' \
		$(NFPM) package --config packaging/nfpm.yaml --packager $* --target $(DIST)/

deploy-deps: ## tools the deploy tests need: lintian, systemd-analyze, dpkg, rpm, nfpm
	@if command -v lintian systemd-analyze dpkg-deb rpm shellcheck >/dev/null 2>&1 && \
	    [ $$(command -v lintian systemd-analyze dpkg-deb rpm shellcheck | wc -l) -eq 5 ]; then \
		echo "apt packages already installed: $(DEPLOY_APT_PACKAGES)"; \
	else \
		apt-get update -q && \
		DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends $(DEPLOY_APT_PACKAGES); \
	fi
	$(GO) mod download
	$(GO) build -o /dev/null github.com/goreleaser/nfpm/v2/cmd/nfpm
	@for t in terraform moto_server; do command -v $$t >/dev/null || \
		echo "WARNING: $$t is not on PATH (it is preinstalled on the dev machine); the tests that need it will skip"; done

deploy-test: build ## the deploy tests (systemd unit, packages, Terraform, IAM in moto, Packer template)
	KUBESTRAP_BIN=$(CURDIR)/bin/kubestrap $(GO) test -count=1 -tags deploy -timeout 15m -v ./test/deploy/...
