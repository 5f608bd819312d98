#!/bin/bash
# Provisions the kubestrap node image (run by packaging/ami.pkr.hcl as root on
# a Debian base image). Everything is pinned and held; nothing here is cluster
# specific: EC2 user-data writes /etc/kubestrap/config.yaml at boot.
#   KUBERNETES_MINOR            pkgs.k8s.io repository, e.g. v1.37
#   KUBERNETES_VERSION          control-plane images to pre-pull, e.g. v1.37.2
#   KUBERNETES_PACKAGE_VERSION  kubeadm/kubelet/kubectl package version, e.g. 1.37.2-1.1
#   KUBESTRAP_DEB               the kubestrap package uploaded by Packer
set -euxo pipefail
: "${KUBERNETES_MINOR:?}" "${KUBERNETES_VERSION:?}" "${KUBERNETES_PACKAGE_VERSION:?}" "${KUBESTRAP_DEB:?}"
export DEBIAN_FRONTEND=noninteractive
CRI_SOCKET=unix:///run/containerd/containerd.sock

# cloud-init may still be running apt on first boot of the build instance.
cloud-init status --wait >/dev/null || true

apt-get update
apt-get install -y --no-install-recommends ca-certificates curl gpg

# --- Kernel modules and sysctls Kubernetes networking needs --------------------
cat > /etc/modules-load.d/kubernetes.conf <<'CONF'
overlay
br_netfilter
CONF
modprobe overlay
modprobe br_netfilter
cat > /etc/sysctl.d/90-kubernetes.conf <<'CONF'
net.bridge.bridge-nf-call-iptables  = 1
net.bridge.bridge-nf-call-ip6tables = 1
net.ipv4.ip_forward                 = 1
CONF
sysctl --system >/dev/null
# The kubelet refuses to run with swap on; EC2 images have none, keep it so.
swapoff -a
sed -i -E '/^[^#].*\sswap\s/d' /etc/fstab

# --- Package repositories: containerd (Docker) and Kubernetes (pkgs.k8s.io) ----
install -d -m 0755 /etc/apt/keyrings
# shellcheck source=/dev/null
. /etc/os-release
ARCH=$(dpkg --print-architecture)
curl -fsSL https://download.docker.com/linux/debian/gpg | gpg --dearmor -o /etc/apt/keyrings/docker.gpg
echo "deb [arch=${ARCH} signed-by=/etc/apt/keyrings/docker.gpg] https://download.docker.com/linux/debian ${VERSION_CODENAME} stable" \
  > /etc/apt/sources.list.d/docker.list
curl -fsSL "https://pkgs.k8s.io/core:/stable:/${KUBERNETES_MINOR}/deb/Release.key" | gpg --dearmor -o /etc/apt/keyrings/kubernetes-apt-keyring.gpg
echo "deb [signed-by=/etc/apt/keyrings/kubernetes-apt-keyring.gpg] https://pkgs.k8s.io/core:/stable:/${KUBERNETES_MINOR}/deb/ /" \
  > /etc/apt/sources.list.d/kubernetes.list
chmod 0644 /etc/apt/keyrings/*.gpg
apt-get update

apt-get install -y --no-install-recommends \
  containerd.io \
  "kubelet=${KUBERNETES_PACKAGE_VERSION}" \
  "kubeadm=${KUBERNETES_PACKAGE_VERSION}" \
  "kubectl=${KUBERNETES_PACKAGE_VERSION}" \
  conntrack ethtool socat iptables
# Unattended upgrades must never move the node's Kubernetes or runtime.
apt-mark hold kubelet kubeadm kubectl containerd.io

# --- containerd: CRI on, systemd cgroups, kubeadm's pause image ----------------
# (containerd.io ships a config with the CRI plugin disabled.)
containerd config default > /etc/containerd/config.toml
sed -i -E 's/^(\s*)SystemdCgroup = false/\1SystemdCgroup = true/' /etc/containerd/config.toml
grep -qE '^\s*SystemdCgroup = true' /etc/containerd/config.toml ||
  { echo "containerd config: could not set SystemdCgroup = true" >&2; exit 1; }
PAUSE_IMAGE=$(kubeadm config images list --kubernetes-version "${KUBERNETES_VERSION}" | grep '/pause:')
sed -i -E "s#^(\s*)(sandbox_image|sandbox) = .*#\1\2 = '${PAUSE_IMAGE}'#" /etc/containerd/config.toml
systemctl enable containerd
systemctl restart containerd
cat > /etc/crictl.yaml <<CONF
runtime-endpoint: ${CRI_SOCKET}
image-endpoint: ${CRI_SOCKET}
CONF

# Control-plane images in the AMI: kubeadm init does not wait on a registry.
kubeadm config images pull --kubernetes-version "${KUBERNETES_VERSION}" --cri-socket "${CRI_SOCKET}"

# --- kubestrap ------------------------------------------------------------------
apt-get install -y "${KUBESTRAP_DEB}"
kubestrap version
# The add-ons the control plane applies (pod network, metrics-server) run on
# every node: their images in the AMI, so a node becomes Ready without a registry.
sed -n -E 's/^\s*image:\s*"?([^"[:space:]]+)"?.*/\1/p' /usr/share/kubestrap/addons/*.yaml | sort -u |
  while read -r image; do crictl pull "${image}" || exit 1; done
# Enabled, but idle (ConditionPathExists) until user-data writes the config.
systemctl enable kubestrap.service

# --- Leave no instance state in the image --------------------------------------
rm -f "${KUBESTRAP_DEB}" /etc/kubestrap/config.yaml /etc/default/kubestrap
rm -rf /var/lib/kubestrap
apt-get clean
rm -rf /var/lib/apt/lists/*
cloud-init clean --logs --machine-id || truncate -s 0 /etc/machine-id
