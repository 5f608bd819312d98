#!/usr/bin/env bash
# Builds the node images offline into $BUILD/images/*.tar (docker tarballs),
# each a single layer: pause, etcd, kube-apiserver,
# kube-controller-manager, kube-scheduler, kube-proxy (with the Debian iptables
# tools it execs), the add-ons of packaging/addons and kubeadm's CoreDNS
# (flannel, flannel-cni-plugin, coredns, metrics-server: each built from its Go
# module, see docs/e2e.md) and the demo app. An image is rebuilt only when one of its
# inputs changed (content hash in <image>.tar.inputs). Also builds kube-proxy,
# the add-ons' binaries (cached in $BIN, rebuilt when their version changes),
# the systemd node image (hack/e2e/sdnode.sh image: a debootstrap'ed
# Debian base and a layer with kubeadm, the kubelet, containerd and their units),
# and the aws host's Auto Scaling proxy ($BIN/asgproxy, test/e2e/asgproxy).
# usage: hack/e2e/images.sh
source "$(dirname "$0")/lib.sh"
mkdir -p "$IMG" "$BIN" "$BUILD/src"
export CGO_ENABLED=0 GOFLAGS=-buildvcs=false

# Static Go programs of this repository (cheap to rebuild: go caches them).
go build -C "$E2E_ROOT" -tags e2e -o "$BUILD/src/pause" ./test/e2e/images/pause
go build -C "$E2E_ROOT" -o "$BUILD/src/demo-app" ./examples/demo-app
# The aws host's Auto Scaling proxy (aws.sh runs it): built next to the file
# and renamed, so a cluster of another prefix that runs it meanwhile keeps its copy.
go build -C "$E2E_ROOT" -o "$BIN/.asgproxy.$$" ./test/e2e/asgproxy
mv -f "$BIN/.asgproxy.$$" "$BIN/asgproxy"
go build -C "$E2E_ROOT" -o "$BIN/.tcplb.$$" ./test/e2e/tcplb
mv -f "$BIN/.tcplb.$$" "$BIN/tcplb"

# kube-proxy is not among the cached kube binaries (Makefile kube-bins); build
# it from a copy of tools/kube, whose go.sum may need kube-proxy's extra modules.
if [ ! -x "$BIN/kube-proxy" ] || [ "$E2E_ROOT/tools/kube/go.mod" -nt "$BIN/kube-proxy" ]; then
  t0=$SECONDS; log "building kube-proxy $KUBE_VERSION"
  src=$BUILD/src/kube; mkdir -p "$src"
  cp "$E2E_ROOT"/tools/kube/{go.mod,go.sum,tools.go} "$src/"; chmod u+w "$src"/*
  LD=""; MIN=${KUBE_VERSION#v1.}; MIN=${MIN%%.*}
  for p in k8s.io/client-go/pkg/version k8s.io/component-base/version; do
    LD="$LD -X $p.gitVersion=$KUBE_VERSION -X $p.gitMajor=1 -X $p.gitMinor=$MIN -X $p.gitTreeState=clean"
    LD="$LD -X $p.gitCommit=0000000000000000000000000000000000000000 -X $p.buildDate=2026-10-27T12:01:04Z"
  done
  (cd "$src" && go build -mod=mod -ldflags "$LD" -o "$BIN/kube-proxy" k8s.io/kubernetes/cmd/kube-proxy)
  log "built kube-proxy in $((SECONDS - t0))s"
fi

# built NAME VERSION: $BIN/NAME exists and was built from VERSION; mark_built
# NAME VERSION records it (in $BIN/.NAME.version) after a successful build.
built() { [ -x "$BIN/$1" ] && [ "$(cat "$BIN/.$1.version" 2>/dev/null)" = "$2" ]; }
mark_built() { echo "$2" > "$BIN/.$1.version"; }
# modinfo MOD@VERSION FIELD: a field of `go list -m -json`, after downloading the
# module: Dir (its directory in the module cache), Time (of its version), Hash
# (its commit, when the proxy recorded it; else nothing).
modinfo() {
  (cd "$BUILD/src" && go mod download "$1" && go list -m -json "$1") | sed -n "s/^[[:space:]]*\"$2\": \"\([^\"]*\)\".*/\1/p" | head -1
}

# flanneld and install-conf (the flannel image). `go install` of flannel's root
# package cannot work here: it imports two backends that cannot be built, the
# Tencent Cloud VPC one (its SDK module tencentcloud/vpc v1.3.188 is not served
# by the module proxy) and the UDP one (cgo on amd64). So flanneld is built from
# a module that requires flannel (same dependency versions as upstream's go.mod)
# with upstream's main.go minus those two imports (upstream's non-amd64 builds
# have no UDP backend either); the version ldflag is the one of flannel's Makefile.
if ! built flanneld "$FLANNEL_VERSION" || ! built install-conf "$FLANNEL_VERSION"; then
  t0=$SECONDS; log "building flanneld and install-conf $FLANNEL_VERSION"
  fdir=$(modinfo "github.com/flannel-io/flannel@$FLANNEL_VERSION" Dir)
  [ -f "$fdir/main.go" ] || die "flannel $FLANNEL_VERSION: no main.go in the module cache ($fdir)"
  src=$BUILD/src/flannel; rm -rf "$src"; mkdir -p "$src"
  printf 'module kubestrap.invalid/flanneld\n\n%s\n\nrequire github.com/flannel-io/flannel %s\n' \
    "$(grep -m1 '^go ' "$fdir/go.mod")" "$FLANNEL_VERSION" > "$src/go.mod"
  cp "$fdir/go.sum" "$src/"; chmod u+w "$src/go.sum"
  grep -v -e '"github.com/flannel-io/flannel/pkg/backend/tencentvpc"$' \
    -e '"github.com/flannel-io/flannel/pkg/backend/udp"$' "$fdir/main.go" > "$src/main.go"
  [ $(($(wc -l < "$fdir/main.go") - $(wc -l < "$src/main.go"))) -eq 2 ] ||
    die "flannel $FLANNEL_VERSION: main.go does not import the tencentvpc and udp backends as expected"
  (cd "$src" && go build -mod=mod -trimpath -o "$BIN/flanneld" \
    -ldflags "-s -w -X github.com/flannel-io/flannel/pkg/version.Version=$FLANNEL_VERSION" . &&
    go build -mod=mod -trimpath -o "$BIN/install-conf" github.com/flannel-io/flannel/cmd/install_conf)
  mark_built flanneld "$FLANNEL_VERSION"; mark_built install-conf "$FLANNEL_VERSION"
  log "built flanneld and install-conf in $((SECONDS - t0))s"
fi

# The flannel CNI plugin, from its source in third_party (its module is not
# served by the proxy), with the version ldflags of its scripts/build_flannel.sh
# (Version = the tag's first 6 characters, Commit = the tag's commit, 8 digits).
# Rebuilt when the tag or the source changes.
FLANNEL_CNI_PLUGIN_COMMIT=4c87e5d4   # v1.9.1-flannel1; see third_party/flannel-cni-plugin/README.kubestrap.md
cni_src=$E2E_ROOT/third_party/flannel-cni-plugin
cni_ver="$FLANNEL_CNI_PLUGIN_TAG $(cat "$cni_src"/*.go "$cni_src"/go.mod "$cni_src"/go.sum | sha256sum | cut -c1-16)"
if ! built flannel-cni-plugin "$cni_ver"; then
  t0=$SECONDS; log "building flannel-cni-plugin $FLANNEL_CNI_PLUGIN_TAG"
  go build -C "$cni_src" -trimpath -o "$BIN/flannel-cni-plugin" -ldflags "-s -w \
    -X main.Version=${FLANNEL_CNI_PLUGIN_TAG:0:6} -X main.Commit=$FLANNEL_CNI_PLUGIN_COMMIT -X main.Program=flannel" .
  mark_built flannel-cni-plugin "$cni_ver"
  log "built flannel-cni-plugin in $((SECONDS - t0))s"
fi

# CoreDNS (the version kubeadm deploys, constants.CoreDNSVersion), as its Makefile
# builds it (every plugin of its plugin.cfg); the module has no commit to put in
# coremain.GitCommit.
if ! built coredns "$COREDNS_VERSION"; then
  t0=$SECONDS; log "building coredns $COREDNS_VERSION"
  GOBIN=$BIN go install -trimpath -ldflags "-s -w" "github.com/coredns/coredns@$COREDNS_VERSION"
  mark_built coredns "$COREDNS_VERSION"
  log "built coredns in $((SECONDS - t0))s"
fi

# metrics-server, with the version ldflags of its Makefile (commit and date of the
# module's version as the proxy recorded them).
if ! built metrics-server "$METRICS_SERVER_VERSION"; then
  t0=$SECONDS; log "building metrics-server $METRICS_SERVER_VERSION"
  mod=sigs.k8s.io/metrics-server@$METRICS_SERVER_VERSION
  v=k8s.io/client-go/pkg/version
  GOBIN=$BIN go install -trimpath -ldflags "-s -w -X $v.gitVersion=$METRICS_SERVER_VERSION \
    -X $v.gitCommit=$(modinfo "$mod" Hash) -X $v.buildDate=$(modinfo "$mod" Time)" \
    "sigs.k8s.io/metrics-server/cmd/metrics-server@$METRICS_SERVER_VERSION"
  mark_built metrics-server "$METRICS_SERVER_VERSION"
  log "built metrics-server in $((SECONDS - t0))s"
fi

REG=127.0.0.1:35099   # loopback-only crane registry, only while building
regpid=""
start_registry() {
  [ -n "$regpid" ] && return 0
  mkdir -p "$BUILD/registry"
  crane registry serve --address $REG --disk "$BUILD/registry" > "$BUILD/registry.log" 2>&1 &
  regpid=$!
  wait_for 20 "build registry" curl -sf http://$REG/v2/
}
stop_registry() { [ -z "$regpid" ] || { kill "$regpid" 2>/dev/null; wait "$regpid" 2>/dev/null || true; }; }
trap stop_registry EXIT

# mkimg REF OUT ENTRYPOINT|- SRC:DEST... ; a SRC of @TARGET makes DEST a symlink to TARGET.
# MKIMG_USER=UID:GID sets the image's user (default: none, i.e. root).
mkimg() {
  local ref=$1 out=$IMG/$2 ep=$3 user=${MKIMG_USER:-}; shift 3
  local m src sum
  # The tarball is rebuilt when its inputs (names and contents, user) change.
  sum=$( { [ -z "$user" ] || echo "user $user"
    for m in "$@"; do src=${m%%:*}; echo "$m"; [[ $src == @* ]] || sha256sum < "$src"; done; } | sha256sum)
  [ -f "$out" ] && [ "$(cat "$out.inputs" 2>/dev/null)" = "$sum" ] && return 0
  start_registry
  local w; w=$(mktemp -d "$BUILD/img.XXXXXX")
  mkdir -p "$w/root/tmp" "$w/root/etc"; chmod 1777 "$w/root/tmp"
  for m in "$@"; do
    src=${m%%:*}; local dst=${m#*:}
    mkdir -p "$w/root/$(dirname "$dst")"
    if [[ $src == @* ]]; then ln -sf "${src#@}" "$w/root/$dst"; else cp -L "$src" "$w/root/$dst"; fi
  done
  echo 'root:x:0:0:root:/root:/bin/sh' > "$w/root/etc/passwd"; echo 'root:x:0:' > "$w/root/etc/group"
  tar --owner=0 --group=0 --numeric-owner -cf "$w/layer.tar" -C "$w/root" .
  local repo; repo=$(echo "${ref%:*}" | tr '/.' '--'):${ref##*:}
  crane append --oci-empty-base --insecure -f "$w/layer.tar" -t "$REG/$repo" >/dev/null
  local args=(--set-platform linux/amd64 -e PATH=/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin)
  [ "$ep" = - ] || args+=(--entrypoint "$ep")
  [ -z "$user" ] || args+=(--user "$user")
  crane mutate --insecure "${args[@]}" -t "$REG/$repo" "$REG/$repo" >/dev/null
  crane pull --insecure --format=tarball "$REG/$repo" "$out.tmp"
  mv "$out.tmp" "$out"; echo "$sum" > "$out.inputs"; rm -rf "$w"
  log "image $ref -> $out"
}

mkimg registry.k8s.io/pause:$PAUSE_TAG pause.tar /pause "$BUILD/src/pause:/pause"
mkimg registry.k8s.io/etcd:$ETCD_TAG etcd.tar - "$KUBE_BIN/etcd:/usr/local/bin/etcd"
for c in kube-apiserver kube-controller-manager kube-scheduler; do
  mkimg registry.k8s.io/$c:$KUBE_VERSION $c.tar - "$KUBE_BIN/$c:/usr/local/bin/$c"
done

# iptables_files: sets ipt_files to the mkimg inputs of Debian's iptables-nft:
# xtables-nft-multi, its iptables*/ip6tables* links, the shared libraries it
# links and the match and target extensions it dlopens (conntrack, comment,
# mark, MASQUERADE, ...). For the programs that exec iptables, iptables-restore
# & co: kube-proxy (iptables mode) and flanneld (EnableNFTables false).
iptables_files() {
  local xt xtdir libs l so
  xt=$(command -v xtables-nft-multi)
  ipt_files=("$xt:/usr/sbin/xtables-nft-multi")
  for l in iptables iptables-save iptables-restore ip6tables ip6tables-save ip6tables-restore; do
    ipt_files+=("@xtables-nft-multi:/usr/sbin/$l")
  done
  xtdir=$(dirname "$(readlink -f "$(ldd "$xt" | grep -o '/[^ ]*libxtables[^ ]*')")")/xtables
  libs=$( (ldd "$xt"; for so in "$xtdir"/*.so; do ldd "$so"; done) | grep -o '/[^ ]*' | sort -u)
  for so in "$xtdir"/*.so $libs; do ipt_files+=("$so:$so"); done
}
iptables_files
mkimg registry.k8s.io/kube-proxy:$KUBE_VERSION kube-proxy.tar - "$BIN/kube-proxy:/usr/local/bin/kube-proxy" "${ipt_files[@]}"

# The add-ons, at the paths and with the users of the upstream images.
# flannel: flanneld execs iptables, iptables-restore (and ip6tables* with IPv6),
# nothing else in VXLAN mode with --ip-masq --kube-subnet-mgr.
mkimg "ghcr.io/flannel-io/flannel:$FLANNEL_VERSION" flannel.tar /opt/bin/flanneld \
  "$BIN/flanneld:/opt/bin/flanneld" "$BIN/install-conf:/opt/bin/install-conf" "${ipt_files[@]}"
# flannel-cni-plugin: /flannel and the init container's command `cp` (busybox,
# static: Debian's busybox-static).
{ [ -x /bin/busybox ] && ! ldd /bin/busybox >/dev/null 2>&1; } ||
  die "/bin/busybox is missing or not static (busybox-static: make e2e-deps)"
mkimg "ghcr.io/flannel-io/flannel-cni-plugin:$FLANNEL_CNI_PLUGIN_TAG" flannel-cni-plugin.tar - \
  "$BIN/flannel-cni-plugin:/flannel" /bin/busybox:/bin/busybox @busybox:/bin/cp
# coredns: user nonroot (65532) like upstream's distroless image; kubeadm's
# Deployment passes only `-conf /etc/coredns/Corefile` and mounts /etc/coredns.
# It binds :53 as non-root thanks to containerd's net.ipv4.ip_unprivileged_port_start=0
# in the pod's network namespace (upstream's file capability is of no use under
# the Deployment's allowPrivilegeEscalation: false, so it is not set).
MKIMG_USER=65532:65532 mkimg "registry.k8s.io/coredns/coredns:$COREDNS_VERSION" coredns.tar /coredns "$BIN/coredns:/coredns"
# metrics-server: user 65534 like upstream's image (the manifest runs it as 1000).
MKIMG_USER=65534 mkimg "registry.k8s.io/metrics-server/metrics-server:$METRICS_SERVER_VERSION" metrics-server.tar \
  /metrics-server "$BIN/metrics-server:/metrics-server"

mkimg "$DEMO_IMAGE" demo-app.tar /demo-app "$BUILD/src/demo-app:/demo-app"
log "images ready in $IMG"
"$(dirname "$0")/sdnode.sh" image
