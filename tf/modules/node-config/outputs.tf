output "config" {
  description = "The agent configuration as an object."
  value       = local.config
}

output "config_yaml" {
  description = "The agent configuration as written to /etc/kubestrap/config.yaml."
  value       = yamlencode(local.config)
}

output "user_data" {
  description = "EC2 user-data (a bash script) that writes the configuration and starts kubestrap."
  value       = local.user_data
}
