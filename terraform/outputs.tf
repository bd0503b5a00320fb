output "service_url" {
  description = "HTTPS URL of the Cloud Run service when Terraform manages it (image_tag set); null otherwise (cloudrun/deploy.sh prints the URL of the service it deploys)."
  value       = local.manage_service ? google_cloud_run_v2_service.chat[0].uri : null
}

output "repository" {
  description = "The Artifact Registry Docker repository, as used in image names: REGION-docker.pkg.dev/PROJECT/REPOSITORY."
  value       = local.registry
}

output "image" {
  description = "The chat-server image path without a tag (cloudrun/deploy.sh pushes IMAGE:TAG)."
  value       = local.image_path
}

output "deployed_image" {
  description = "The image (with its tag) that the Terraform-managed service runs; null when Terraform does not manage the service."
  value       = local.manage_service ? "${local.image_path}:${var.image_tag}" : null
}

output "project_id" {
  description = "The project, for cloudrun/deploy.sh --project."
  value       = var.project_id
}

output "region" {
  description = "The region, for cloudrun/deploy.sh --region."
  value       = var.region
}

output "service_name" {
  description = "The service name, for cloudrun/deploy.sh --service (the other names derive from it)."
  value       = var.service_name
}

output "redis_mode" {
  description = "memorystore, cluster or external (cloudrun/deploy.sh refuses a --redis that disagrees)."
  value       = var.redis_mode
}

output "runtime_service_account" {
  description = "Email of the service's runtime identity."
  value       = google_service_account.run.email
}

output "redis_url_secret" {
  description = "Secret Manager secret that holds REDIS_URL (its value is never output)."
  value       = google_secret_manager_secret.redis_url.secret_id
}

output "server_api_key_secret" {
  description = "Secret Manager secret that holds SERVER_API_KEY with server_api = true (null otherwise; its value is never output). Add the key: openssl rand -hex 32 | gcloud secrets versions add SECRET --data-file=-"
  value       = var.server_api ? google_secret_manager_secret.server_api_key[0].secret_id : null
}

output "redis_host" {
  description = "Private address and TLS port of the Memorystore instance, or of the cluster's discovery endpoint (null with an external Redis)."
  value = local.redis_instance ? "${google_redis_instance.chat[0].host}:${google_redis_instance.chat[0].port}" : (
    local.redis_cluster ? "${google_redis_cluster.chat[0].discovery_endpoints[0].address}:${google_redis_cluster.chat[0].discovery_endpoints[0].port}" : null
  )
}

output "service_owner" {
  description = "Who owns the Cloud Run service: \"deploy.sh\" (image_tag null; cloudrun/deploy.sh deploys cloudrun/service.yaml) or \"terraform\" (image_tag set; cloudrun/deploy.sh runs terraform apply -var image_tag=TAG)."
  value       = local.manage_service ? "terraform" : "deploy.sh"
}

# Every setting of the service, from this directory's variables only, as lines of KEY=VALUE
# (strings JSON-quoted, so they are YAML scalars as they are; one `env=` line per extra_env
# entry). cloudrun/deploy.sh renders cloudrun/service.yaml from it, so terraform.tfvars is the
# one place where the service's settings live, whichever path owns the service.
output "deploy_settings" {
  description = "The service's settings for cloudrun/deploy.sh (KEY=VALUE lines): scaling, concurrency, resources, RUST_LOG, ALLOWED_ORIGINS, public access, the metrics sidecar, the server API, the Redis mode, extra_env."
  value = join("\n", concat(
    [
      "owner=${var.image_tag == null ? "deploy.sh" : "terraform"}",
      "project_id=${var.project_id}",
      "region=${var.region}",
      "service_name=${var.service_name}",
      "redis_mode=${var.redis_mode}",
      "min_instances=${var.min_instances}",
      "max_instances=${var.max_instances}",
      "concurrency=${var.concurrency}",
      "cpu=${jsonencode(var.cpu)}",
      "memory=${jsonencode(var.memory)}",
      "rust_log=${jsonencode(var.rust_log)}",
      "allowed_origins=${jsonencode(join(",", var.allowed_origins))}",
      "public=${var.allow_unauthenticated}",
      "metrics_sidecar=${var.metrics_sidecar}",
      "server_api=${var.server_api}",
    ],
    [for name, value in local.server_env : "env=${jsonencode({ name = name, value = value })}"],
  ))

  # Every plan evaluates these, whichever side owns the service (a variable's validation may
  # not read another variable before Terraform 1.9, and versions.tf allows 1.5).
  precondition {
    condition     = var.max_instances >= var.min_instances
    error_message = "max_instances must not be below min_instances."
  }
  precondition {
    condition     = !var.allow_unauthenticated || length(var.allowed_origins) > 0
    error_message = "allowed_origins is required when allow_unauthenticated is true: list the browser origins of your web client (e.g. [\"https://chat.example.com\"]; the service's own origin is always allowed). Left empty, every web site may call the public service from its visitors' browsers."
  }
}
