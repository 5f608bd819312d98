# Packer template for the kubestrap node image (one AMI for control plane and
# workers): Debian, containerd, kubeadm/kubelet/kubectl from pkgs.k8s.io pinned
# and held, the Kubernetes kernel modules and sysctls, the control-plane images
# pre-pulled, and the kubestrap package with its unit enabled. The unit stays
# idle until EC2 user-data writes /etc/kubestrap/config.yaml (see tf/).
#
#   make package
#   packer init packaging/ami.pkr.hcl
#   packer build -var region=eu-west-1 \
#     -var kubestrap_deb=dist/kubestrap_0.1.0-1_amd64.deb packaging/ami.pkr.hcl
#
# The AMI is named kubestrap-k8s-v1.37-<timestamp>, the pattern tf/ looks for.

packer {
  required_version = ">= 1.10.0"

  required_plugins {
    amazon = {
      source  = "github.com/hashicorp/amazon"
      version = "~> 1.3"
    }
  }
}

variable "region" {
  type        = string
  description = "Region to build the AMI in."
}

variable "kubestrap_deb" {
  type        = string
  description = "The kubestrap .deb from `make package` (dist/kubestrap_<version>-1_<arch>.deb), for the AMI's architecture."
}

variable "kubernetes_minor" {
  type        = string
  default     = "v1.37"
  description = "Kubernetes minor release: the pkgs.k8s.io repository (core:/stable:/<minor>) the node packages come from."
}

variable "kubernetes_version" {
  type        = string
  default     = "v1.37.2"
  description = "Kubernetes version whose control-plane images are pre-pulled; tf/ var.kubernetes_version must match."
}

variable "kubernetes_package_version" {
  type        = string
  default     = "1.37.2-1.1"
  description = "Debian package version of kubeadm, kubelet and kubectl (apt-cache madison kubeadm)."
}

variable "architecture" {
  type        = string
  default     = "x86_64"
  description = "x86_64 or arm64; kubestrap_deb must be built for it (make package GOARCH=arm64)."

  validation {
    condition     = contains(["x86_64", "arm64"], var.architecture)
    error_message = "The architecture must be x86_64 or arm64."
  }
}

variable "instance_type" {
  type        = string
  default     = "t3.medium"
  description = "Build instance type (use an arm64 type such as t4g.medium for arm64)."
}

variable "base_ami_owner" {
  type        = string
  default     = "136693071363"
  description = "Owner of the base image (136693071363: the Debian cloud team)."
}

variable "debian_release" {
  type        = string
  default     = "13"
  description = "Debian release of the base image."
}

variable "ssh_username" {
  type        = string
  default     = "admin"
  description = "Login user of the base image."
}

variable "subnet_id" {
  type        = string
  default     = null
  description = "Subnet for the build instance (default: the default VPC)."
}

variable "ami_name_prefix" {
  type        = string
  default     = "kubestrap-k8s-v1.37"
  description = "AMI name prefix; tf/ var.ami_name_pattern finds <prefix>-*."
}

variable "ami_regions" {
  type        = list(string)
  default     = []
  description = "Further regions to copy the AMI to."
}

variable "ami_users" {
  type        = list(string)
  default     = []
  description = "AWS accounts allowed to launch the AMI."
}

locals {
  build_time = formatdate("YYYYMMDDhhmmss", timestamp())
  deb_arch   = var.architecture == "arm64" ? "arm64" : "amd64"
}

source "amazon-ebs" "node" {
  region          = var.region
  instance_type   = var.instance_type
  subnet_id       = var.subnet_id
  ssh_username    = var.ssh_username
  ami_name        = "${var.ami_name_prefix}-${local.build_time}"
  ami_description = "kubestrap node: Debian ${var.debian_release}, containerd, Kubernetes ${var.kubernetes_version} (kubeadm, kubelet, kubectl), kubestrap"
  ami_regions     = var.ami_regions
  ami_users       = var.ami_users
  encrypt_boot    = true

  source_ami_filter {
    filters = {
      name                = "debian-${var.debian_release}-${local.deb_arch}-*"
      architecture        = var.architecture
      root-device-type    = "ebs"
      virtualization-type = "hvm"
    }
    owners      = [var.base_ami_owner]
    most_recent = true
  }

  # Instances launched from the AMI default to IMDSv2; so does the build instance.
  imds_support = "v2.0"

  metadata_options {
    http_endpoint               = "enabled"
    http_tokens                 = "required"
    http_put_response_hop_limit = 1
  }

  launch_block_device_mappings {
    device_name           = "/dev/xvda"
    volume_size           = 20
    volume_type           = "gp3"
    delete_on_termination = true
  }

  tags = {
    Name                              = "${var.ami_name_prefix}-${local.build_time}"
    "kubestrap.dev/kubernetes"        = var.kubernetes_version
    "kubestrap.dev/kubernetes-deb"    = var.kubernetes_package_version
    "kubestrap.dev/base-ami"          = "{{ .SourceAMI }}"
    "kubestrap.dev/base-ami-name"     = "{{ .SourceAMIName }}"
    "kubestrap.dev/debian-release"    = var.debian_release
    "kubestrap.dev/kubestrap-package" = basename(var.kubestrap_deb)
  }
}

build {
  name    = "kubestrap-node"
  sources = ["source.amazon-ebs.node"]

  provisioner "file" {
    source      = var.kubestrap_deb
    destination = "/tmp/kubestrap.deb"
  }

  provisioner "shell" {
    script          = "${path.root}/ami/provision.sh"
    execute_command = "chmod +x {{ .Path }}; sudo env {{ .Vars }} {{ .Path }}"
    environment_vars = [
      "KUBERNETES_MINOR=${var.kubernetes_minor}",
      "KUBERNETES_VERSION=${var.kubernetes_version}",
      "KUBERNETES_PACKAGE_VERSION=${var.kubernetes_package_version}",
      "KUBESTRAP_DEB=/tmp/kubestrap.deb",
    ]
  }

  post-processor "manifest" {
    output     = "dist/ami-manifest.json"
    strip_path = true
  }
}
