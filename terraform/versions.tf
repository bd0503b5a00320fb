# Terraform and provider versions. The google provider is pinned to one major version: a new
# major (v7) changes defaults and removes fields, so moving to it is a deliberate edit here.
#
# Provider v6 note: google_cloud_run_v2_service has `deletion_protection`, true by default
# since v6.0; while it is true, `terraform destroy` (or any change that replaces the service)
# fails. main.tf sets it from var.deletion_protection (see variables.tf).
#
# 6.8 at least: google_cloud_run_v2_service's `invoker_iam_disabled` (public access without an
# allUsers binding) came with provider 6.8.0.
# 6.40 at least: google_redis_cluster's `managed_server_ca` (the cluster's CA, which the service
# trusts through SSL_CERT_FILE with redis_mode = "cluster") came with provider 6.40.0.

terraform {
  required_version = ">= 1.5"

  required_providers {
    google = {
      source  = "hashicorp/google"
      version = "~> 6.40"
    }
  }
}

provider "google" {
  project = var.project_id
  region  = var.region
}
