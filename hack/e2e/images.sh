#!/usr/bin/env bash
# Builds the node images offline into $BUILD/images/*.tar (docker tarballs),
# each a single layer: pause, etcd, kube-apiserver,
# kube-controller-manager, kube-scheduler, kube-proxy (with the Debian iptables
# tools it execs), and the demo app. An image is rebuilt only when one of its
# inputs changed (content hash in <image>.tar.inputs). Also builds kube-proxy,
# and the systemd node image (hack/e2e/sdnode.sh image: a debootstrap'ed
# Debian base and a layer with kubeadm, the kubelet, containerd and their units).
# usage: hack/e2e/images.sh
source "$(dirname "$0")/lib.sh"
mkdir -p "$IMG" "$BIN" "$BUILD/src"
export CGO_ENABLED=0 GOFLAGS=-buildvcs=false

# Static Go programs of this repository (cheap to rebuild: go caches them).
go build -C "$E2E_ROOT" -tags e2e -o "$BUILD/src/pause" ./test/e2e/images/pause
go build -C "$E2E_ROOT" -o "$BUILD/src/demo-app" ./examples/demo-app

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
mkimg() {
  local ref=$1 out=$IMG/$2 ep=$3; shift 3
  local m src sum
  # The tarball is rebuilt when its inputs (names and contents) change.
  sum=$(for m in "$@"; do src=${m%%:*}; echo "$m"; [[ $src == @* ]] || sha256sum < "$src"; done | sha256sum)
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

# kube-proxy (iptables mode) execs iptables-restore & co: ship Debian's
# xtables-nft-multi with the shared libraries it links.
xt=$(command -v xtables-nft-multi)
proxy_files=("$BIN/kube-proxy:/usr/local/bin/kube-proxy" "$xt:/usr/sbin/xtables-nft-multi")
for l in iptables iptables-save iptables-restore ip6tables ip6tables-save ip6tables-restore; do
  proxy_files+=("@xtables-nft-multi:/usr/sbin/$l")
done
xtdir=$(dirname "$(readlink -f "$(ldd "$xt" | grep -o '/[^ ]*libxtables[^ ]*')")")/xtables
libs=$( (ldd "$xt"; for so in "$xtdir"/*.so; do ldd "$so"; done) | grep -o '/[^ ]*' | sort -u)
# The match and target extensions it dlopens (conntrack, comment, mark, ...).
for so in "$xtdir"/*.so $libs; do proxy_files+=("$so:$so"); done
mkimg registry.k8s.io/kube-proxy:$KUBE_VERSION kube-proxy.tar - "${proxy_files[@]}"

mkimg "$DEMO_IMAGE" demo-app.tar /demo-app "$BUILD/src/demo-app:/demo-app"
log "images ready in $IMG"
"$(dirname "$0")/sdnode.sh" image
