# chat-server on Cloud Run, with everything it needs in one project:
#
#   project services ─ Artifact Registry (images, with a cleanup policy)
#   runtime service account ─ reads its own secrets and nothing else
#   Secret Manager: REDIS_URL (and, with Memorystore, its server CA; with server_api, SERVER_API_KEY)
#   Redis (redis_mode): a Memorystore instance (AUTH + in-transit encryption, private IP, reached
#          over Direct VPC egress from a subnet of its own network), Memorystore for Redis
#          Cluster (in-transit encryption, reached from the same subnet through the Private
#          Service Connect endpoints that a service connection policy lets it create; the server
#          runs with REDIS_CLUSTER=true), or an existing external URL
#   Cloud Run service, with the Managed Service for Prometheus collector as a sidecar
#   (metrics_sidecar) that scrapes METRICS_PORT inside it. One owner, one source of settings:
#   the service's settings are this directory's variables either way. With image_tag null (the
#   default) cloudrun/deploy.sh owns the service and renders cloudrun/service.yaml from the
#   output deploy_settings; with image_tag set Terraform owns it (this resource), and deploy.sh
#   builds, pushes and runs `terraform apply -var image_tag=...` (README "Deploy to Google Cloud")
#
# Names all derive from var.service_name, and cloudrun/deploy.sh derives the same names from
# its --service, so the two agree without passing each name around.
#
# The server's environment (README "Configuration"; checked by deploy/tests/test_consistency.py):
# Env set here: REDIS_URL (from Secret Manager), SSL_CERT_FILE (Memorystore's CA), RUST_LOG, GOOGLE_CLOUD_PROJECT (log lines link their traces)
# Env set here: REDIS_TLS_VERIFY (chain with Memorystore: its certificate names its IP only in the CN)
# Env set here: REDIS_CLUSTER (true with redis_mode = "cluster": REDIS_URL is the cluster's discovery endpoint)
# Env set here: METRICS_PORT (/metrics off the ingress port), ALLOWED_ORIGINS (var.allowed_origins, when not empty)
# Env set here: SERVER_API_KEY (from Secret Manager, only with var.server_api)
# Left unset (Cloud Run sets them): PORT, K_SERVICE
# Left unset (durable acks off, server defaults; extra_env sets them): REDIS_WAIT_REPLICAS, REDIS_WAIT_TIMEOUT_MS
# Left unset (server defaults): HOST, REDIS_TIMEOUT_MS, MAX_MESSAGE_BYTES, HISTORY_LIMIT, MEMBER_TTL_SECS, ROOM_TTL_SECS
# Left unset (server defaults): IDEMPOTENCY_TTL_SECS, SSE_KEEPALIVE_SECS, SSE_TICKET_TTL_SECS, WS_MAX_LIFETIME_SECS, WS_PING_SECS
# Left unset (server defaults): CLIENT_QUEUE_LEN, FANOUT_COALESCE_MS, SHUTDOWN_GRACE_SECS, HEADER_READ_TIMEOUT_SECS
# Left unset (server defaults, right on Cloud Run once K_SERVICE is set): LOG_FORMAT, TRUSTED_PROXY_HOPS
# Left unset (rate limits, server defaults): RATE_LIMITS, RATE_MESSAGES_PER_SEC, RATE_MESSAGE_BURST, RATE_WS_EVENTS_PER_SEC
# Left unset (rate limits, server defaults): RATE_WS_EVENT_BURST, RATE_REST_PER_SEC, RATE_REST_BURST, RATE_JOINS_PER_MIN, RATE_JOIN_BURST
# Left unset (caps, server defaults): MAX_CONNECTIONS_PER_IP, MAX_ROOMS_PER_CONNECTION, MAX_MEMBERS_PER_ROOM, MAX_CONNECTIONS
# Left unset (hardening, server defaults): REQUEST_BODY_TIMEOUT_SECS, WRITE_TIMEOUT_SECS, MAX_HTTP_CONNECTIONS_PER_IP
# Left unset (room secrets, server defaults: one hash per CPU): SECRET_HASH_CONCURRENCY, RATE_SECRET_FAILURES_PER_MIN, RATE_ROOM_SECRET_FAILURES_PER_MIN
# Left unset (JWT joins off unless var.auth sets them, as env.tf's server_env): AUTH_JWKS_URL, AUTH_ISSUER, AUTH_AUDIENCE
# Left unset (JWT joins off unless var.auth sets them): AUTH_USERNAME_CLAIM, AUTH_ROOMS_CLAIM
# Left unset (no trace export without a collector; the service name follows K_SERVICE): OTEL_EXPORTER_OTLP_ENDPOINT
# Left unset (no trace export without a collector): OTEL_EXPORTER_OTLP_TRACES_ENDPOINT, OTEL_EXPORTER_OTLP_PROTOCOL
# Left unset (no trace export without a collector): OTEL_EXPORTER_OTLP_TRACES_PROTOCOL, OTEL_SERVICE_NAME
# (any of the defaulted ones can be set through var.extra_env)

locals {
  # Memorystore of either kind: the private network, Direct VPC egress, TLS against a CA of its
  # own (mounted from Secret Manager). Then one of the two kinds.
  memorystore    = contains(["memorystore", "cluster"], var.redis_mode)
  redis_instance = var.redis_mode == "memorystore"
  redis_cluster  = var.redis_mode == "cluster"
  manage_service = var.image_tag != null

  registry   = "${var.region}-docker.pkg.dev/${var.project_id}/${google_artifact_registry_repository.images.repository_id}"
  image_path = "${local.registry}/chat-server"

  runtime_member = "serviceAccount:${google_service_account.run.email}"

  # The ingress container's port: Cloud Run sends requests there and passes it to the server
  # as $PORT. Not Cloud Run's usual 8080: that one is metrics_port.
  port = 8000
  # METRICS_PORT: the server serves /metrics there and only there (the ingress port answers
  # 404), and Cloud Run exposes only the ingress port, so the metrics never leave the instance.
  # 8080 because the sidecar's default RunMonitoring config scrapes 0.0.0.0:8080/metrics every
  # 30 s (DefaultRunMonitoringConfig in GoogleCloudPlatform/run-gmp-sidecar): no config of our
  # own to store and mount.
  metrics_port = 8080
  # Google's Managed Service for Prometheus collector for Cloud Run, pinned (a new tag is a
  # deliberate edit here and in cloudrun/service.yaml); /liveness on 13133 is its health check.
  metrics_sidecar_image       = "us-docker.pkg.dev/cloud-ops-agents-artifacts/cloud-run-gmp-sidecar/cloud-run-gmp-sidecar:1.2.0"
  metrics_sidecar_health_port = 13133
  # Where the Memorystore CA secret is mounted; SSL_CERT_FILE points rustls at it.
  redis_ca_dir  = "/etc/redis-ca"
  redis_ca_file = "ca.pem"
  # REDIS_TLS_VERIFY with Memorystore (see the env block below).
  redis_tls_verify = "chain"
  # Memorystore for Redis Cluster's service class: a service connection policy for it lets the
  # cluster create its Private Service Connect endpoints in our subnet.
  redis_cluster_service_class = "gcp-memorystore-redis"

  services = concat(
    [
      "artifactregistry.googleapis.com",
      "cloudbuild.googleapis.com",
      "iam.googleapis.com",
      "run.googleapis.com",
      "secretmanager.googleapis.com",
    ],
    local.memorystore ? ["compute.googleapis.com", "redis.googleapis.com"] : [],
    # The service connection policy, and the automation that creates the cluster's Private
    # Service Connect endpoints from it.
    local.redis_cluster ? ["networkconnectivity.googleapis.com", "serviceconsumermanagement.googleapis.com"] : [],
    # Managed Service for Prometheus stores its series in Cloud Monitoring.
    var.metrics_sidecar ? ["monitoring.googleapis.com"] : [],
  )

  # REDIS_URL. The instance's AUTH string is random URL-safe text; encoded all the same. A
  # cluster has no password (AUTH_MODE_DISABLED, below), and its one seed is its discovery
  # endpoint, which answers CLUSTER SLOTS with the nodes' private addresses.
  memorystore_url = local.redis_instance ? format(
    "rediss://:%s@%s:%d",
    urlencode(google_redis_instance.chat[0].auth_string),
    google_redis_instance.chat[0].host,
    google_redis_instance.chat[0].port,
    ) : (
    local.redis_cluster ? format(
      "rediss://%s:%d",
      google_redis_cluster.chat[0].discovery_endpoints[0].address,
      google_redis_cluster.chat[0].discovery_endpoints[0].port,
    ) : null
  )

  # SSL_CERT_FILE's content, PEM: every CA of the instance (two during a rotation), or every
  # certificate of the cluster's managed CA chains (each from the issuing CA to its root).
  memorystore_ca = local.redis_instance ? join("\n", google_redis_instance.chat[0].server_ca_certs[*].cert) : (
    local.redis_cluster ? join("\n", flatten([
      for authority in google_redis_cluster.chat[0].managed_server_ca : [
        for chain in authority.ca_certs : chain.certificates
      ]
    ])) : null
  )
}

resource "google_project_service" "apis" {
  for_each = toset(local.services)

  service = each.value
  # Other things in the project may use these APIs too: destroying this stack leaves them on.
  disable_on_destroy = false
}

# --- Images -------------------------------------------------------------------------------------

resource "google_artifact_registry_repository" "images" {
  #checkov:skip=CKV_GCP_84:Images hold only the open-source server binary, no data or secrets; Google-managed encryption at rest suffices, and a customer-managed key would add a KMS key ring, key rotation and an IAM grant to the Artifact Registry service agent for no gain.
  location      = var.region
  repository_id = var.service_name
  description   = "chat-server container images"
  format        = "DOCKER"

  cleanup_policy_dry_run = false

  cleanup_policies {
    id     = "keep-most-recent"
    action = "KEEP"
    most_recent_versions {
      keep_count = var.keep_image_versions
    }
  }

  cleanup_policies {
    id     = "delete-old"
    action = "DELETE"
    condition {
      tag_state  = "ANY"
      older_than = "${var.image_max_age_days * 86400}s"
    }
  }

  depends_on = [google_project_service.apis]
}

# --- Identity -----------------------------------------------------------------------------------

# The service's own identity, instead of the project's default compute account (Editor). It is
# granted only secretAccessor on its two secrets below, the metric writer role for the metrics
# sidecar (on by default) and, when asked, the Cloud Trace agent role; writing logs to Cloud
# Logging from stdout needs no role on Cloud Run.
resource "google_service_account" "run" {
  account_id   = "${var.service_name}-run"
  display_name = "${var.service_name} (Cloud Run runtime)"
  description  = "Runtime identity of the ${var.service_name} Cloud Run service: reads its Redis secrets."

  depends_on = [google_project_service.apis]
}

# The metrics sidecar writes what it scrapes to Managed Service for Prometheus with the
# service's identity.
resource "google_project_iam_member" "metric_writer" {
  count = var.metrics_sidecar ? 1 : 0

  project = var.project_id
  role    = "roles/monitoring.metricWriter"
  member  = local.runtime_member
}

resource "google_project_iam_member" "trace_agent" {
  count = var.grant_cloud_trace_agent ? 1 : 0

  project = var.project_id
  role    = "roles/cloudtrace.agent"
  member  = local.runtime_member
}

# Cloud Build runs `gcloud builds submit` (cloudrun/deploy.sh) as the project's default build
# service account: in newer projects that is the Compute Engine default service account, which
# may hold no role at all (the build then fails on permissions). Given its email
# (var.cloud_build_service_account), Terraform grants it the builder role: write
# images to Artifact Registry, logs, the staged source.
resource "google_project_iam_member" "cloud_build_builder" {
  #checkov:skip=CKV_GCP_49:Opt-in (null by default) and only to the build service account the user names: roles/cloudbuild.builds.builder is the role Google itself gives the legacy Cloud Build account, which newer projects' default build account lacks; builds fail without it.
  count = var.cloud_build_service_account == null ? 0 : 1

  project = var.project_id
  role    = "roles/cloudbuild.builds.builder"
  member  = "serviceAccount:${var.cloud_build_service_account}"

  depends_on = [google_project_service.apis]
}

# --- Secrets ------------------------------------------------------------------------------------

resource "google_secret_manager_secret" "redis_url" {
  secret_id = "${var.service_name}-redis-url"

  replication {
    auto {}
  }

  depends_on = [google_project_service.apis]
}

# With Memorystore the URL is built here from the instance or the cluster (so an instance's AUTH
# string is in the state either way, as an attribute of google_redis_instance: keep the state
# private). With an
# external Redis no version is created here: add the URL with `gcloud secrets versions add`
# (README), so that it never enters the state.
resource "google_secret_manager_secret_version" "redis_url" {
  count = local.memorystore ? 1 : 0

  secret      = google_secret_manager_secret.redis_url.id
  secret_data = local.memorystore_url
}

resource "google_secret_manager_secret_iam_member" "redis_url" {
  secret_id = google_secret_manager_secret.redis_url.id
  role      = "roles/secretmanager.secretAccessor"
  member    = local.runtime_member
}

# The server API's key (var.server_api): created here without a version, exactly as an external
# Redis's REDIS_URL is: the operator adds the key with `gcloud secrets versions add` (README),
# so it never enters the state. Only the runtime identity may read it.
resource "google_secret_manager_secret" "server_api_key" {
  count = var.server_api ? 1 : 0

  secret_id = "${var.service_name}-server-api-key"

  replication {
    auto {}
  }

  depends_on = [google_project_service.apis]
}

resource "google_secret_manager_secret_iam_member" "server_api_key" {
  count = var.server_api ? 1 : 0

  secret_id = google_secret_manager_secret.server_api_key[0].id
  role      = "roles/secretmanager.secretAccessor"
  member    = local.runtime_member
}

# Memorystore's server certificates are signed by a CA of the instance's (or cluster's) own,
# which no public root store holds: the service mounts it as a file and SSL_CERT_FILE makes the server trust it.
# Not a secret, but Secret Manager is how Cloud Run mounts a file.
resource "google_secret_manager_secret" "redis_ca" {
  count = local.memorystore ? 1 : 0

  secret_id = "${var.service_name}-redis-ca"

  replication {
    auto {}
  }

  depends_on = [google_project_service.apis]
}

resource "google_secret_manager_secret_version" "redis_ca" {
  count = local.memorystore ? 1 : 0

  secret      = google_secret_manager_secret.redis_ca[0].id
  secret_data = local.memorystore_ca
}

resource "google_secret_manager_secret_iam_member" "redis_ca" {
  count = local.memorystore ? 1 : 0

  secret_id = google_secret_manager_secret.redis_ca[0].id
  role      = "roles/secretmanager.secretAccessor"
  member    = local.runtime_member
}

# --- Network and Memorystore --------------------------------------------------------------------

resource "google_compute_network" "chat" {
  count = local.memorystore ? 1 : 0

  name                    = var.service_name
  description             = "Private network of ${var.service_name}: Cloud Run's Direct VPC egress and Memorystore"
  auto_create_subnetworks = false

  depends_on = [google_project_service.apis]
}

# Custom networks already deny all ingress implicitly; this says so explicitly (and logs it).
# Cloud Run only sends from this network (Direct VPC egress), and the answers to its own
# connections are let through by the firewall's connection tracking.
resource "google_compute_firewall" "deny_ingress" {
  count = local.memorystore ? 1 : 0

  name        = "${var.service_name}-deny-ingress"
  description = "Nothing enters ${var.service_name}'s network from outside."
  network     = google_compute_network.chat[0].id
  direction   = "INGRESS"
  priority    = 65534

  source_ranges = ["0.0.0.0/0"]

  deny {
    protocol = "all"
  }

  log_config {
    metadata = "INCLUDE_ALL_METADATA"
  }
}

resource "google_compute_subnetwork" "chat" {
  count = local.memorystore ? 1 : 0

  name                     = var.service_name
  region                   = var.region
  network                  = google_compute_network.chat[0].id
  ip_cidr_range            = var.subnet_cidr
  private_ip_google_access = true

  log_config {
    aggregation_interval = "INTERVAL_10_MIN"
    flow_sampling        = 0.5
    metadata             = "INCLUDE_ALL_METADATA"
  }
}

resource "google_redis_instance" "chat" {
  count = local.redis_instance ? 1 : 0

  name           = "${var.service_name}-redis"
  display_name   = "${var.service_name} rooms and history"
  region         = var.region
  tier           = var.redis_tier
  memory_size_gb = var.redis_memory_size_gb
  redis_version  = var.redis_version

  # A private IP in (a peering of) this network only; Cloud Run reaches it over Direct VPC egress.
  authorized_network = google_compute_network.chat[0].id
  connect_mode       = "DIRECT_PEERING"

  # AUTH and TLS: the URL in the secret is rediss://:<auth string>@<ip>:6378.
  auth_enabled            = true
  transit_encryption_mode = "SERVER_AUTHENTICATION"

  dynamic "persistence_config" {
    for_each = var.redis_rdb_snapshot_period == null ? [] : [var.redis_rdb_snapshot_period]
    content {
      persistence_mode    = "RDB"
      rdb_snapshot_period = persistence_config.value
    }
  }

  depends_on = [google_project_service.apis]
}

# Memorystore for Redis Cluster is reached only through Private Service Connect: endpoints (two
# addresses for its clients, one of them the discovery endpoint) that service connectivity
# automation creates in a subnet that this policy names, for the cluster's service class, in
# this network and region. Our subnet: Cloud Run's Direct VPC egress reaches them directly, as
# private addresses. One such policy per network, region and service class.
resource "google_network_connectivity_service_connection_policy" "redis" {
  count = local.redis_cluster ? 1 : 0

  name          = "${var.service_name}-redis"
  location      = var.region
  service_class = local.redis_cluster_service_class
  description   = "Lets ${var.service_name}'s Memorystore for Redis Cluster create its Private Service Connect endpoints in the service's subnet"
  network       = google_compute_network.chat[0].id

  psc_config {
    subnetworks = [google_compute_subnetwork.chat[0].id]
  }

  depends_on = [google_project_service.apis]
}

resource "google_redis_cluster" "chat" {
  count = local.redis_cluster ? 1 : 0

  name          = "${var.service_name}-redis"
  region        = var.region
  shard_count   = var.redis_cluster_shard_count
  replica_count = var.redis_cluster_replica_count
  node_type     = var.redis_cluster_node_type

  psc_configs {
    network = google_compute_network.chat[0].id
  }

  # TLS with a CA of the cluster's own (managed_server_ca, mounted through SSL_CERT_FILE).
  # No AUTH: the cluster offers IAM authentication or none, and IAM's password is an access
  # token that expires within the hour, which a REDIS_URL cannot hold. Only what reaches the
  # endpoints in this private network can connect (and nothing else runs in it).
  transit_encryption_mode = "TRANSIT_ENCRYPTION_MODE_SERVER_AUTHENTICATION"
  authorization_mode      = "AUTH_MODE_DISABLED"

  dynamic "persistence_config" {
    for_each = var.redis_rdb_snapshot_period == null ? [] : [var.redis_rdb_snapshot_period]
    content {
      mode = "RDB"
      rdb_config {
        rdb_snapshot_period = persistence_config.value
      }
    }
  }

  # Its data is the service's: the same switch as the service's own protection (README "Tear
  # it down").
  deletion_protection_enabled = var.deletion_protection

  # The policy must exist before the cluster asks for its endpoints, and go after it.
  depends_on = [
    google_project_service.apis,
    google_network_connectivity_service_connection_policy.redis,
  ]
}

# --- The service --------------------------------------------------------------------------------

resource "google_cloud_run_v2_service" "chat" {
  count = local.manage_service ? 1 : 0

  name                = var.service_name
  location            = var.region
  ingress             = "INGRESS_TRAFFIC_ALL"
  deletion_protection = var.deletion_protection
  # Public without an allUsers binding (which domain-restricted sharing refuses): Cloud Run
  # skips its invoker IAM check (run.googleapis.com/invoker-iam-disabled in service.yaml).
  invoker_iam_disabled = var.allow_unauthenticated

  template {
    service_account = google_service_account.run.email
    # Cloud Run's longest request: WebSocket and SSE streams are requests, and the server closes
    # them itself before this (WS_MAX_LIFETIME_SECS, 3300 s by default) so clients resume.
    timeout                          = "3600s"
    max_instance_request_concurrency = var.concurrency
    # A reconnecting client lands on the instance it left when it can (cheaper resume).
    session_affinity      = true
    execution_environment = "EXECUTION_ENVIRONMENT_GEN2"

    scaling {
      min_instance_count = var.min_instances
      max_instance_count = var.max_instances
    }

    dynamic "vpc_access" {
      for_each = local.memorystore ? [1] : []
      content {
        # Direct VPC egress (no connector): instances get addresses in the subnet.
        network_interfaces {
          network    = google_compute_network.chat[0].id
          subnetwork = google_compute_subnetwork.chat[0].id
        }
        # Only private ranges (Memorystore) go through the VPC; the rest goes out directly.
        egress = "PRIVATE_RANGES_ONLY"
      }
    }

    containers {
      name  = "chat-server"
      image = "${local.image_path}:${var.image_tag}"

      ports {
        name           = "http1"
        container_port = local.port
      }

      resources {
        limits = {
          cpu    = var.cpu
          memory = var.memory
        }
        # CPU stays allocated between requests (run.googleapis.com/cpu-throttling: "false"):
        # the Redis subscription, presence refreshes, member expiry and WebSocket pings run
        # in the background.
        cpu_idle          = false
        startup_cpu_boost = true
      }

      env {
        name = "REDIS_URL"
        value_source {
          secret_key_ref {
            secret  = google_secret_manager_secret.redis_url.secret_id
            version = "latest"
          }
        }
      }

      dynamic "env" {
        for_each = var.server_api ? [1] : []
        content {
          name = "SERVER_API_KEY"
          value_source {
            secret_key_ref {
              secret  = google_secret_manager_secret.server_api_key[0].secret_id
              version = "latest"
            }
          }
        }
      }

      dynamic "env" {
        for_each = local.memorystore ? [1] : []
        content {
          name  = "SSL_CERT_FILE"
          value = "${local.redis_ca_dir}/${local.redis_ca_file}"
        }
      }

      # Memorystore's server certificate names the instance's IP only in its CN (no
      # subjectAltName), which a hostname check refuses: check the chain against its CA
      # (SSL_CERT_FILE) and not the name. The same with a cluster: the server reaches its nodes at
      # the addresses CLUSTER SLOTS gives, which its certificates need not name, and trusts only
      # the cluster's own CA.
      dynamic "env" {
        for_each = local.memorystore ? [1] : []
        content {
          name  = "REDIS_TLS_VERIFY"
          value = local.redis_tls_verify
        }
      }

      # REDIS_URL names the cluster's discovery endpoint: the server follows its slots, MOVED
      # and failovers, and publishes with sharded pub/sub.
      dynamic "env" {
        for_each = local.redis_cluster ? [1] : []
        content {
          name  = "REDIS_CLUSTER"
          value = "true"
        }
      }

      env {
        name  = "RUST_LOG"
        value = var.rust_log
      }

      # Cloud Run does not set it; with it, JSON log lines name their trace as Cloud Logging
      # links it to Cloud Trace.
      env {
        name  = "GOOGLE_CLOUD_PROJECT"
        value = var.project_id
      }

      # Set with or without the sidecar: /metrics is never public.
      env {
        name  = "METRICS_PORT"
        value = local.metrics_port
      }

      # Left out when empty (any origin, said in the log): only a private service may do
      # that (the precondition below).
      dynamic "env" {
        for_each = length(var.allowed_origins) > 0 ? [join(",", var.allowed_origins)] : []
        content {
          name  = "ALLOWED_ORIGINS"
          value = env.value
        }
      }

      dynamic "env" {
        for_each = local.server_env
        content {
          name  = env.key
          value = env.value
        }
      }

      # Ready when the store answers. Direct VPC egress can take a minute or more to connect a
      # new instance, so the window is Cloud Run's longest for a startup probe:
      # failure_threshold x period_seconds = 24 x 10 s = 240 s (timeout below the period).
      startup_probe {
        http_get {
          path = "/readyz"
          port = local.port
        }
        period_seconds    = 10
        timeout_seconds   = 5
        failure_threshold = 24
      }

      # Restarted only when the process stops serving (not when Redis is away: /healthz does
      # not look at the store, so a Redis outage does not restart every instance).
      liveness_probe {
        http_get {
          path = "/healthz"
          port = local.port
        }
        period_seconds    = 15
        timeout_seconds   = 3
        failure_threshold = 3
      }

      dynamic "volume_mounts" {
        for_each = local.memorystore ? [1] : []
        content {
          name       = "redis-ca"
          mount_path = local.redis_ca_dir
        }
      }
    }

    # The Managed Service for Prometheus collector: scrapes /metrics on METRICS_PORT inside the
    # instance and writes the series to Cloud Monitoring. No ports (only the ingress container
    # has them); started once the server passes its startup probe, so its first scrape finds
    # the server listening.
    dynamic "containers" {
      for_each = var.metrics_sidecar ? [1] : []
      content {
        name       = "collector"
        image      = local.metrics_sidecar_image
        depends_on = ["chat-server"]

        resources {
          # A whole vCPU: with CPU always allocated, Cloud Run takes no fraction of one.
          limits = {
            cpu    = "1"
            memory = "256Mi"
          }
          cpu_idle = false
        }

        liveness_probe {
          http_get {
            path = "/liveness"
            port = local.metrics_sidecar_health_port
          }
          period_seconds  = 30
          timeout_seconds = 30
        }
      }
    }

    dynamic "volumes" {
      for_each = local.memorystore ? [1] : []
      content {
        name = "redis-ca"
        secret {
          secret = google_secret_manager_secret.redis_ca[0].secret_id
          items {
            version = "latest"
            path    = local.redis_ca_file
            mode    = 292 # 0444
          }
        }
      }
    }
  }

  # The rules that tie settings together (instances, origins of a public service) are the
  # preconditions of output.deploy_settings, which every plan evaluates whoever owns the
  # service: one copy, for both owners.

  depends_on = [
    google_project_iam_member.metric_writer,
    google_secret_manager_secret_iam_member.redis_url,
    google_secret_manager_secret_iam_member.redis_ca,
    google_secret_manager_secret_iam_member.server_api_key,
    google_secret_manager_secret_version.redis_url,
    google_secret_manager_secret_version.redis_ca,
  ]
}
