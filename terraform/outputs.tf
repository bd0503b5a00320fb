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
  description = "memorystore or external, for cloudrun/deploy.sh --redis."
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

output "redis_host" {
  description = "Private address and TLS port of the Memorystore instance (null with an external Redis)."
  value       = local.memorystore ? "${google_redis_instance.chat[0].host}:${google_redis_instance.chat[0].port}" : null
}
