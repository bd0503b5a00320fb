# Inputs. Only project_id has no default; terraform.tfvars.example shows a complete file.

variable "project_id" {
  description = "The Google Cloud project to deploy into (its id, not its name or number)."
  type        = string

  validation {
    condition     = can(regex("^[a-z][a-z0-9-]{4,28}[a-z0-9]$", var.project_id))
    error_message = "project_id must be a project id: 6-30 lowercase letters, digits or hyphens, starting with a letter."
  }
}

variable "region" {
  description = "Region of the Cloud Run service, the Artifact Registry repository, the subnet and the Memorystore instance."
  type        = string
  default     = "europe-west1"

  validation {
    condition     = can(regex("^[a-z]+-[a-z]+[0-9]+$", var.region))
    error_message = "region must be a Google Cloud region such as europe-west1 or us-central1."
  }
}

variable "service_name" {
  description = "Name of the Cloud Run service; also the base name of the repository, service account (<name>-run), secrets, network and Redis instance."
  type        = string
  default     = "chat-server"

  validation {
    # 2-26 characters so that "<name>-run" is a valid service account id (6-30 characters).
    condition     = can(regex("^[a-z][a-z0-9-]{0,24}[a-z0-9]$", var.service_name))
    error_message = "service_name must be 2-26 lowercase letters, digits or hyphens, starting with a letter and not ending with a hyphen."
  }
}

variable "image_tag" {
  description = <<-EOT
    Who owns the Cloud Run service. null (the default): cloudrun/deploy.sh does, rendering
    cloudrun/service.yaml from this directory's settings (output deploy_settings), and Terraform
    creates everything but the service. A tag of the chat-server image in this project's
    repository: Terraform owns the service and runs that image (cloudrun/deploy.sh then builds,
    pushes and runs `terraform apply -var image_tag=TAG`). Moving from one to the other needs
    `terraform import` (README "Deploy to Google Cloud"); one owner per service.
  EOT
  type        = string
  default     = null

  validation {
    condition     = var.image_tag == null || can(regex("^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$", var.image_tag))
    error_message = "image_tag must be a Docker tag: up to 128 letters, digits, '_', '.' or '-', not starting with '.' or '-'."
  }
}

variable "redis_mode" {
  description = <<-EOT
    Where Redis lives. "memorystore": a Memorystore for Redis instance (one primary; AUTH and
    in-transit encryption), reached through Direct VPC egress. "cluster": Memorystore for Redis
    Cluster (redis_cluster_* below: shards with replicas, in-transit encryption, reached through
    Private Service Connect in the same subnet; the server runs with REDIS_CLUSTER=true).
    "external": an existing Redis such as Upstash, whose rediss:// URL you add to the REDIS_URL
    secret yourself with `gcloud secrets versions add`, so that it never enters the Terraform state.
  EOT
  type        = string
  default     = "memorystore"

  validation {
    condition     = contains(["memorystore", "cluster", "external"], var.redis_mode)
    error_message = "redis_mode must be \"memorystore\", \"cluster\" or \"external\"."
  }
}

variable "redis_cluster_shard_count" {
  description = "Memorystore for Redis Cluster (redis_mode = \"cluster\"): shards, each one primary node owning a part of the rooms. Changed in place (rooms move between shards while the service runs)."
  type        = number
  default     = 3

  validation {
    condition     = var.redis_cluster_shard_count >= 1 && var.redis_cluster_shard_count <= 250 && floor(var.redis_cluster_shard_count) == var.redis_cluster_shard_count
    error_message = "redis_cluster_shard_count must be a whole number from 1 to 250."
  }
}

variable "redis_cluster_replica_count" {
  description = "Memorystore for Redis Cluster: replicas per shard, in other zones (0-2). With 0 a node's failure loses its shard's rooms; with 1 or more a replica is promoted, and what it had not yet received is lost unless REDIS_WAIT_REPLICAS asks the server to wait for it."
  type        = number
  default     = 1

  validation {
    condition     = contains([0, 1, 2], var.redis_cluster_replica_count)
    error_message = "redis_cluster_replica_count must be 0, 1 or 2."
  }
}

variable "redis_cluster_node_type" {
  description = "Memorystore for Redis Cluster node type: REDIS_SHARED_CORE_NANO (a shared vCPU, for trials), REDIS_STANDARD_SMALL, REDIS_HIGHMEM_MEDIUM or REDIS_HIGHMEM_XLARGE. Every node (shards x (1 + replicas)) is billed per hour."
  type        = string
  default     = "REDIS_STANDARD_SMALL"

  validation {
    condition     = contains(["REDIS_SHARED_CORE_NANO", "REDIS_STANDARD_SMALL", "REDIS_HIGHMEM_MEDIUM", "REDIS_HIGHMEM_XLARGE"], var.redis_cluster_node_type)
    error_message = "redis_cluster_node_type must be REDIS_SHARED_CORE_NANO, REDIS_STANDARD_SMALL, REDIS_HIGHMEM_MEDIUM or REDIS_HIGHMEM_XLARGE."
  }
}

variable "redis_tier" {
  description = "Memorystore instance (redis_mode = \"memorystore\") tier: BASIC (one node) or STANDARD_HA (a replica with automatic failover)."
  type        = string
  default     = "BASIC"

  validation {
    condition     = contains(["BASIC", "STANDARD_HA"], var.redis_tier)
    error_message = "redis_tier must be BASIC or STANDARD_HA."
  }
}

variable "redis_memory_size_gb" {
  description = "Memorystore instance capacity in GiB (a cluster's follows its shards and node type)."
  type        = number
  default     = 1

  validation {
    condition     = var.redis_memory_size_gb >= 1 && var.redis_memory_size_gb <= 300 && floor(var.redis_memory_size_gb) == var.redis_memory_size_gb
    error_message = "redis_memory_size_gb must be a whole number from 1 to 300."
  }
}

variable "redis_version" {
  description = "Memorystore Redis version; 6 or later, since in-transit encryption needs TLS."
  type        = string
  default     = "REDIS_7_2"

  validation {
    condition     = contains(["REDIS_6_X", "REDIS_7_0", "REDIS_7_2"], var.redis_version)
    error_message = "redis_version must be REDIS_6_X, REDIS_7_0 or REDIS_7_2."
  }
}

variable "redis_rdb_snapshot_period" {
  description = "How often Memorystore (instance or cluster) snapshots the data to disk (RDB persistence), so rooms and history survive a node restart; null turns persistence off."
  type        = string
  default     = "ONE_HOUR"

  validation {
    condition     = var.redis_rdb_snapshot_period == null || contains(["ONE_HOUR", "SIX_HOURS", "TWELVE_HOURS", "TWENTY_FOUR_HOURS"], coalesce(var.redis_rdb_snapshot_period, "ONE_HOUR"))
    error_message = "redis_rdb_snapshot_period must be ONE_HOUR, SIX_HOURS, TWELVE_HOURS, TWENTY_FOUR_HOURS or null."
  }
}

variable "subnet_cidr" {
  description = "Range of the subnet that Cloud Run's Direct VPC egress takes instance addresses from (memorystore and cluster modes; with cluster, the cluster's two Private Service Connect endpoints take theirs from it too). At least a /26; a /24 leaves room to scale out."
  type        = string
  default     = "10.8.0.0/24"

  validation {
    condition     = can(cidrhost(var.subnet_cidr, 0)) && tonumber(split("/", var.subnet_cidr)[1]) <= 26
    error_message = "subnet_cidr must be an IPv4 range of at least /26, such as 10.8.0.0/24."
  }
}

variable "min_instances" {
  description = "Instances kept running even when idle: at least 1, so Redis subscriptions, presence sweeps and open streams never wait for a cold start."
  type        = number
  default     = 1

  validation {
    condition     = var.min_instances >= 1 && floor(var.min_instances) == var.min_instances
    error_message = "min_instances must be a whole number of at least 1."
  }
}

variable "max_instances" {
  description = "Upper bound of instances (every instance holds Redis connections; Memorystore BASIC 1 GiB takes thousands)."
  type        = number
  default     = 10

  validation {
    condition     = var.max_instances >= 1 && var.max_instances <= 1000 && floor(var.max_instances) == var.max_instances
    error_message = "max_instances must be a whole number from 1 to 1000 (and not below min_instances)."
  }
}

variable "concurrency" {
  description = "Requests one instance serves at once. Every open WebSocket or SSE stream counts as one for its whole life, so this is high."
  type        = number
  default     = 500

  validation {
    condition     = var.concurrency >= 1 && var.concurrency <= 1000 && floor(var.concurrency) == var.concurrency
    error_message = "concurrency must be a whole number from 1 to 1000."
  }
}

variable "cpu" {
  description = "vCPUs per instance (Cloud Run's cpu limit)."
  type        = string
  default     = "1"

  validation {
    condition     = contains(["1", "2", "4", "6", "8"], var.cpu)
    error_message = "cpu must be 1, 2, 4, 6 or 8."
  }
}

variable "memory" {
  description = "Memory per instance, e.g. 512Mi or 1Gi."
  type        = string
  default     = "512Mi"

  validation {
    condition     = can(regex("^[0-9]+(Mi|Gi)$", var.memory))
    error_message = "memory must be a quantity such as 512Mi or 2Gi."
  }
}

variable "rust_log" {
  description = "The server's log filter (RUST_LOG), e.g. info or chat_server=debug,info."
  type        = string
  default     = "info"

  validation {
    condition     = length(trimspace(var.rust_log)) > 0
    error_message = "rust_log must not be empty."
  }
}

variable "auth" {
  description = "JWT joins with the app's own users (README \"Sign-in with your app's users\"): the server's AUTH_* variables. The three first go together (the type requires them). Firebase Authentication / Identity Platform: { jwks_url = \"https://www.googleapis.com/service_accounts/v1/jwk/securetoken@system.gserviceaccount.com\", issuer = \"https://securetoken.google.com/<project-id>\", audience = \"<project-id>\" }. null: anonymous names."
  type = object({
    jwks_url       = string
    issuer         = string
    audience       = string
    username_claim = optional(string)
    rooms_claim    = optional(string)
  })
  default = null

  validation {
    condition     = var.auth == null || startswith(try(var.auth.jwks_url, ""), "https://")
    error_message = "auth.jwks_url must be an https:// URL."
  }
}

variable "extra_env" {
  description = "More environment variables for the server (README \"Configuration\"), e.g. { ALLOWED_ORIGINS = \"https://chat.example.com\" }. Not for PORT and K_SERVICE (Cloud Run sets them) nor REDIS_URL, SSL_CERT_FILE, REDIS_TLS_VERIFY, REDIS_CLUSTER, GOOGLE_CLOUD_PROJECT and RUST_LOG (set here)."
  type        = map(string)
  default     = {}

  validation {
    condition     = length(setintersection(keys(var.extra_env), ["PORT", "K_SERVICE", "K_REVISION", "K_CONFIGURATION", "REDIS_URL", "SSL_CERT_FILE", "REDIS_TLS_VERIFY", "REDIS_CLUSTER", "RUST_LOG", "GOOGLE_CLOUD_PROJECT", "METRICS_PORT", "ALLOWED_ORIGINS", "AUTH_JWKS_URL", "AUTH_ISSUER", "AUTH_AUDIENCE", "AUTH_USERNAME_CLAIM", "AUTH_ROOMS_CLAIM", "SERVER_API_KEY"])) == 0
    error_message = "extra_env must not set PORT, K_SERVICE, K_REVISION, K_CONFIGURATION, REDIS_URL, SSL_CERT_FILE, REDIS_TLS_VERIFY, REDIS_CLUSTER (use redis_mode), GOOGLE_CLOUD_PROJECT, METRICS_PORT (the sidecar scrapes it where main.tf puts it), ALLOWED_ORIGINS (use allowed_origins), AUTH_* (use auth), SERVER_API_KEY (use server_api: a secret) or RUST_LOG (use rust_log)."
  }
}

variable "server_api" {
  description = <<-EOT
    Enables the server API (/api/, README "Server API") for an app's backend: Terraform creates
    the Secret Manager secret <service_name>-server-api-key (no version: add the key with
    `openssl rand -hex 32 | gcloud secrets versions add <secret> --data-file=-`, so it never
    enters the state) and passes it to the service as SERVER_API_KEY. false: no secret, no
    SERVER_API_KEY, every /api/ path is 404.
  EOT
  type        = bool
  default     = false
}

variable "allowed_origins" {
  description = <<-EOT
    Browser origins (scheme://host[:port]) allowed to call the API: CORS and WebSocket upgrades,
    the server's ALLOWED_ORIGINS (its own origin is always allowed, so the bundled browser client
    needs nothing here). Required when allow_unauthenticated is true: left empty, every web site
    may call the public service from its visitors' browsers.
  EOT
  type        = list(string)
  default     = []

  validation {
    condition     = alltrue([for origin in var.allowed_origins : can(regex("^https?://[A-Za-z0-9.-]+(:[0-9]{1,5})?$", origin))])
    error_message = "allowed_origins must hold origins such as https://chat.example.com or http://localhost:3000: a scheme, a host and an optional port, without a path or a trailing slash."
  }
}

variable "metrics_sidecar" {
  description = <<-EOT
    Run Google's Managed Service for Prometheus collector as a sidecar: it scrapes /metrics on
    METRICS_PORT inside every instance every 30 s and writes the series to Cloud Monitoring
    (query them with PromQL there). Costs money: the sidecar's own vCPU and 256 MiB on every
    instance, and the samples ingested. Enables monitoring.googleapis.com and grants the runtime
    service account roles/monitoring.metricWriter. With false, /metrics stays on METRICS_PORT,
    reachable by no one.
  EOT
  type        = bool
  default     = true
}

variable "allow_unauthenticated" {
  description = "Make the service public (browsers and curl without a Google identity) by turning off Cloud Run's invoker IAM check (invoker_iam_disabled), not with an allUsers binding, which organisations with domain-restricted sharing refuse. Off by default."
  type        = bool
  default     = false
}

variable "cloud_build_service_account" {
  description = "Email of the service account Cloud Build runs builds as (`gcloud builds get-default-service-account --format 'value(serviceAccountEmail.basename())'`); when set, Terraform grants it roles/cloudbuild.builds.builder, which newer projects' default build account lacks. null: grant nothing."
  type        = string
  default     = null

  validation {
    condition     = var.cloud_build_service_account == null || can(regex("^[a-z0-9-]+@[a-z0-9.-]+\\.gserviceaccount\\.com$", coalesce(var.cloud_build_service_account, "x@x.gserviceaccount.com")))
    error_message = "cloud_build_service_account must be a service account email such as 123456789012-compute@developer.gserviceaccount.com, or null."
  }
}

variable "deletion_protection" {
  description = <<-EOT
    Deletion protection of the Cloud Run service and, with redis_mode = "cluster", of the
    Memorystore for Redis Cluster (its data). Provider v6 turned it on by default for
    google_cloud_run_v2_service (and google_redis_cluster has it on by default too), so this
    defaults to true as well: `terraform destroy`, or a change that replaces either, fails until
    this is applied as false first (see the README).
  EOT
  type        = bool
  default     = true
}

variable "grant_cloud_trace_agent" {
  description = "Grant the runtime service account roles/cloudtrace.agent: needed only when an OpenTelemetry Collector sidecar (OTEL_EXPORTER_OTLP_ENDPOINT in extra_env points at it) exports the spans to Cloud Trace with the service's identity."
  type        = bool
  default     = false
}

variable "keep_image_versions" {
  description = "Artifact Registry cleanup: the most recent image versions always kept."
  type        = number
  default     = 10

  validation {
    condition     = var.keep_image_versions >= 1 && floor(var.keep_image_versions) == var.keep_image_versions
    error_message = "keep_image_versions must be a whole number of at least 1."
  }
}

variable "image_max_age_days" {
  description = "Artifact Registry cleanup: image versions older than this are deleted, unless among the most recent keep_image_versions."
  type        = number
  default     = 30

  validation {
    condition     = var.image_max_age_days >= 1 && floor(var.image_max_age_days) == var.image_max_age_days
    error_message = "image_max_age_days must be a whole number of at least 1."
  }
}
