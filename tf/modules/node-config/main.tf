# The kubestrap agent configuration (/etc/kubestrap/config.yaml) of one node role,
# and the EC2 user-data that writes it and starts the agent. No provider: the
# deploy tests evaluate this module with `terraform console` and check the result
# with `kubestrap validate`.

terraform {
  required_version = ">= 1.5"
}

locals {
  common = {
    apiVersion = "kubestrap.dev/v1alpha1"
    kind       = "AgentConfig"
    cluster    = var.cluster
    role       = var.role
    bucket     = var.bucket
    stateDir   = "/var/lib/kubestrap"
    aws = {
      region = var.region
    }
    ecr = {
      enabled     = true
      registryIds = var.ecr_registry_ids
      configPath  = "/var/lib/kubelet/config.json"
    }
  }

  kubeadm = {
    path              = "/usr/bin/kubeadm"
    kubernetesVersion = var.kubernetes_version
    criSocket         = "unix:///run/containerd/containerd.sock"
    podSubnet         = var.pod_subnet
    serviceSubnet     = var.service_subnet
    # The AMI has the images already; pulling again only costs time.
    imagePullPolicy  = "IfNotPresent"
    kubeletExtraArgs = var.kubelet_extra_args
  }

  by_role = {
    "control-plane" = {
      kubeadm = merge(local.kubeadm, {
        controlPlaneEndpoint = var.control_plane_endpoint
        certSANs             = var.cert_sans
      })
      controlPlane = merge(
        { tokenTTL = var.token_ttl },
        var.kms_key_id == "" ? {} : { kmsKeyId = var.kms_key_id },
      )
    }
    worker = merge(
      {
        kubeadm = local.kubeadm
        worker = {
          pollInterval = var.poll_interval
        }
      },
      var.leave == null ? {} : {
        leave = {
          lifecycleHookName         = var.leave.lifecycle_hook_name
          autoScalingGroupName      = var.leave.autoscaling_group_name
          lifecycleHeartbeatTimeout = "${var.leave.heartbeat_timeout}s"
        }
      },
    )
  }

  config = merge(local.common, local.by_role[var.role])

  user_data = templatefile("${path.module}/../../templates/user-data.sh.tftpl", {
    config_yaml = yamlencode(local.config)
    environment = var.environment
  })
}
