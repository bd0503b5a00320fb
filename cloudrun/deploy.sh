#!/usr/bin/env bash
# Build chat-server's image, push it to the project's Artifact Registry repository, and deploy
# it to Cloud Run.
#
# terraform/ is the one source of the service's settings (terraform.tfvars): this script reads
# them from `terraform output deploy_settings`, so `terraform apply` first, then this. Who owns
# the service follows terraform's image_tag:
#   unset (default)  this script does: it renders cloudrun/service.yaml from those settings and
#                    runs `gcloud run services replace`;
#   set              Terraform does: this script builds and pushes, then runs
#                    `terraform apply -var image_tag=TAG`.
# The names (repository, service account, secrets, network) derive from the service name
# exactly as terraform/ names them. Run with --help for the flags.
#
# Nothing secret passes through here: REDIS_URL stays in Secret Manager and reaches the service
# by reference.
set -euo pipefail
# Replacement text is taken literally (bash 5.2 would otherwise expand '&' in ${x//a/b}).
shopt -u patsub_replacement 2>/dev/null || true

usage() {
    cat <<'EOF'
Usage: cloudrun/deploy.sh [options]

Builds the image (Cloud Build, or the local docker with --docker), pushes it to
REGION-docker.pkg.dev/PROJECT/SERVICE/chat-server:TAG and deploys it with the settings of
terraform/ (`terraform output deploy_settings`): scaling, resources, public access
(allow_unauthenticated), allowed_origins, metrics_sidecar, extra_env, the Redis mode. Change
them in terraform/terraform.tfvars and `terraform apply`, then run this again.

With terraform's image_tag unset this script owns the service (cloudrun/service.yaml,
`gcloud run services replace`); with image_tag set Terraform does, and this script runs
`terraform apply -var image_tag=TAG` after the push.

Options:
  -t, --tag TAG          image tag (TAG; default: the git commit, else a timestamp)
      --docker           build (for linux/amd64) and push with the local docker instead of
                         Cloud Build
      --build-only       build and push, do not deploy
      --deploy-only      deploy TAG, already pushed, without building
      --terraform-dir DIR
                         where `terraform apply` ran (TF_DIR; default: terraform/ here)
      --delete           delete the service this script owns (before terraform destroy:
                         the subnet stays in use while it exists)
      --dry-run          print the commands and the rendered service.yaml, run nothing
  -h, --help             this text

Checks, refused when they disagree with terraform's settings:
  -p, --project ID       (PROJECT_ID, or GOOGLE_CLOUD_PROJECT)
  -r, --region REGION    (REGION)
  -s, --service NAME     (SERVICE)
      --redis MODE       memorystore, cluster or external (REDIS_MODE)

The identity running this needs roles/run.admin, roles/artifactregistry.writer,
roles/cloudbuild.builds.editor (not with --docker) and roles/iam.serviceAccountUser on the
service's runtime service account (README "Deploy to Google Cloud").
EOF
}

die() {
    printf 'deploy.sh: %s\n' "$*" >&2
    exit 2
}

# Runs a command, or only shows it with --dry-run.
run() {
    printf '+ %s\n' "$*" >&2
    if [ "$dry_run" -eq 0 ]; then
        "$@"
    fi
}

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(dirname "$here")"

project="${PROJECT_ID:-${GOOGLE_CLOUD_PROJECT:-}}"
region="${REGION:-}"
service="${SERVICE:-}"
tag="${TAG:-}"
redis_mode="${REDIS_MODE:-}"
tf_dir="${TF_DIR:-$root/terraform}"
builder="cloudbuild"
build=1
deploy=1
delete=0
dry_run=0

need_value() {
    if [ "$#" -lt 2 ] || [ -z "$2" ]; then
        die "$1 needs a value (see --help)"
    fi
}

# Settings that were flags once: terraform.tfvars is their one source.
moved() {
    die "$1 is gone: set $2 in terraform/terraform.tfvars and run terraform apply (one source for every setting; see --help)"
}

while [ "$#" -gt 0 ]; do
    case "$1" in
        -p | --project) need_value "$@"; project="$2"; shift 2 ;;
        -r | --region) need_value "$@"; region="$2"; shift 2 ;;
        -s | --service) need_value "$@"; service="$2"; shift 2 ;;
        -t | --tag) need_value "$@"; tag="$2"; shift 2 ;;
        --redis) need_value "$@"; redis_mode="$2"; shift 2 ;;
        --docker) builder="docker"; shift ;;
        --build-only) deploy=0; shift ;;
        --deploy-only) build=0; shift ;;
        --terraform-dir) need_value "$@"; tf_dir="$2"; shift 2 ;;
        --delete) delete=1; shift ;;
        --allow-unauthenticated) moved "$1" "allow_unauthenticated = true" ;;
        --allowed-origins) moved "$1" "allowed_origins" ;;
        --no-metrics-sidecar) moved "$1" "metrics_sidecar = false" ;;
        --dry-run) dry_run=1; shift ;;
        -h | --help) usage; exit 0 ;;
        *) die "unknown argument '$1' (see --help)" ;;
    esac
done

case "$redis_mode" in
    "" | memorystore | cluster | external) ;;
    *) die "--redis must be memorystore, cluster or external, not '$redis_mode'" ;;
esac
[ "$build" -eq 1 ] || [ "$deploy" -eq 1 ] || die "--build-only and --deploy-only exclude each other"
[ -n "$tag" ] || [ "$build" -eq 1 ] || die "--deploy-only needs the --tag of an image already pushed"
if [ "$delete" -eq 1 ] && { [ "$build" -eq 0 ] || [ "$deploy" -eq 0 ] || [ -n "$tag" ] || [ "$builder" = "docker" ]; }; then
    die "--delete takes no build or deploy options"
fi

# --- The settings, from terraform -------------------------------------------------------------

command -v terraform >/dev/null 2>&1 ||
    die "needs the terraform command: the service's settings come from terraform/ (README step 2)"
if ! settings="$(terraform -chdir="$tf_dir" output -raw deploy_settings)"; then
    die "no deploy_settings from terraform in $tf_dir: run terraform apply there first (README step 2), or pass --terraform-dir"
fi
declare -A setting=()
extra_env=()
while IFS= read -r line; do
    [ -n "$line" ] || continue
    key="${line%%=*}"
    value="${line#*=}"
    if [ "$key" = "env" ]; then
        extra_env+=("$value")
    else
        setting["$key"]="$value"
    fi
done <<<"$settings"
for key in owner project_id region service_name redis_mode min_instances max_instances \
    concurrency cpu memory rust_log allowed_origins public metrics_sidecar server_api; do
    [ -n "${setting[$key]+set}" ] ||
        die "terraform's deploy_settings has no $key: terraform apply with this checkout's terraform/ first"
done

# What the flags and the environment say must be what terraform says.
agree() {
    if [ -n "$2" ] && [ "$2" != "$3" ]; then
        die "$1 '$2' disagrees with terraform's $4 = \"$3\" (in $tf_dir): change terraform.tfvars and terraform apply, or drop $1"
    fi
}
agree "--project" "$project" "${setting[project_id]}" "project_id"
agree "--region" "$region" "${setting[region]}" "region"
agree "--service" "$service" "${setting[service_name]}" "service_name"
agree "--redis" "$redis_mode" "${setting[redis_mode]}" "redis_mode"
project="${setting[project_id]}"
region="${setting[region]}"
service="${setting[service_name]}"
redis_mode="${setting[redis_mode]}"
owner="${setting[owner]}"

[[ "$project" =~ ^[a-z][a-z0-9-]{4,28}[a-z0-9]$ ]] || die "'$project' is not a project id"
[[ "$region" =~ ^[a-z]+-[a-z]+[0-9]+$ ]] || die "'$region' is not a region"
[[ "$service" =~ ^[a-z][a-z0-9-]{0,24}[a-z0-9]$ ]] ||
    die "'$service' is not a service name (2-26 lowercase letters, digits, hyphens)"
case "$owner" in
    deploy.sh | terraform) ;;
    *) die "terraform's deploy_settings names no owner of the service ('$owner')" ;;
esac

# Run it before `terraform destroy` when this script owns the service: Terraform does not know
# the service, and the subnet cannot be deleted while a service uses it.
if [ "$delete" -eq 1 ]; then
    [ "$owner" = "deploy.sh" ] ||
        die "Terraform owns the service (image_tag is set): terraform apply -var deletion_protection=false, then terraform destroy"
    if [ "$dry_run" -eq 0 ]; then
        command -v gcloud >/dev/null 2>&1 || die "needs the gcloud command (Google Cloud SDK)"
    fi
    run gcloud run services delete "$service" --project "$project" --region "$region" --quiet
    cat >&2 <<EOF
deploy.sh: deleted $service. Cloud Run releases its Direct VPC egress addresses in the subnet
deploy.sh: 1-2 hours later: until then terraform destroy stops at the subnet ("being used by");
deploy.sh: everything else is gone by then, and a second terraform destroy removes the rest.
EOF
    exit 0
fi

if [ -z "$tag" ]; then
    if git -C "$root" rev-parse --short=12 HEAD >/dev/null 2>&1; then
        tag="$(git -C "$root" rev-parse --short=12 HEAD)"
        if [ -n "$(git -C "$root" status --porcelain --untracked-files=no 2>/dev/null)" ]; then
            tag="$tag-dirty-$(date -u +%Y%m%d%H%M%S)"
        fi
    else
        tag="$(date -u +%Y%m%d%H%M%S)"
    fi
fi
[[ "$tag" =~ ^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$ ]] || die "'$tag' is not a valid image tag"

image="$region-docker.pkg.dev/$project/$service/chat-server:$tag"

if [ "$dry_run" -eq 0 ]; then
    if [ "$builder" = "docker" ] && [ "$build" -eq 1 ]; then
        command -v docker >/dev/null 2>&1 || die "--docker needs the docker command"
    fi
    command -v gcloud >/dev/null 2>&1 || die "needs the gcloud command (Google Cloud SDK)"
fi

# --- Build and push ---------------------------------------------------------------------------

if [ "$build" -eq 1 ]; then
    printf 'Building %s\n' "$image" >&2
    if [ "$builder" = "docker" ]; then
        run gcloud auth configure-docker "$region-docker.pkg.dev" --quiet
        # Cloud Run runs linux/amd64 images: on an ARM machine docker would build arm64.
        run docker build --platform linux/amd64 --tag "$image" "$root"
        run docker push "$image"
    else
        # A release build with LTO takes minutes: more time and cores than Cloud Build's
        # 10-minute default on its 2-vCPU default machine. Cloud Build starts with no layer
        # cache; with the builds/use_kaniko property, a `--tag` build runs Kaniko, which keeps
        # each layer in the repository (IMAGE/cache) for builds/kaniko_cache_ttl hours: the
        # dependency layer (the Dockerfile's step 1) is reused until Cargo.toml or Cargo.lock
        # changes.
        run env CLOUDSDK_BUILDS_USE_KANIKO=True CLOUDSDK_BUILDS_KANIKO_CACHE_TTL=168 \
            gcloud builds submit "$root" --project "$project" --region "$region" \
            --tag "$image" --timeout 40m --machine-type e2-highcpu-8
    fi
fi

if [ "$deploy" -eq 0 ]; then
    printf 'Pushed %s\n' "$image"
    exit 0
fi

# --- Deploy -----------------------------------------------------------------------------------

if [ "$owner" = "terraform" ]; then
    # Terraform owns the service (image_tag set): it deploys the image, with its settings.
    run terraform -chdir="$tf_dir" apply -var "image_tag=$tag"
    if [ "$dry_run" -eq 0 ]; then
        url="$(terraform -chdir="$tf_dir" output -raw service_url)"
        printf 'Deployed %s\n%s\n' "$image" "$url"
    fi
    printf 'deploy.sh: set image_tag = "%s" in terraform.tfvars as well, or a plain terraform apply rolls the service back to the tag written there\n' "$tag" >&2
    exit 0
fi

# Render service.yaml: the placeholders, and the lines marked for an option kept only with it
# (their marker removed): "# memorystore" (the VPC, CA mount, SSL_CERT_FILE, REDIS_TLS_VERIFY:
# a Memorystore instance or cluster), "# cluster" (REDIS_CLUSTER), "# metrics-sidecar" (the collector), "# allowed-origins" (ALLOWED_ORIGINS), "# server-api" (SERVER_API_KEY from its secret), "# public" (no
# invoker IAM check); extra_env's entries go where "# extra-env" is. Other comment lines are
# left out. The string settings arrive JSON-quoted, so they are YAML scalars as they are.
rendered="$(mktemp "${TMPDIR:-/tmp}/chat-server-service.XXXXXX")"
trap 'rm -f "$rendered"' EXIT
while IFS= read -r line || [ -n "$line" ]; do
    if [[ "$line" =~ ^([[:space:]]*)#[[:space:]]extra-env$ ]]; then
        for entry in ${extra_env[@]+"${extra_env[@]}"}; do
            printf '%s- %s\n' "${BASH_REMATCH[1]}" "$entry"
        done
        continue
    fi
    [[ "$line" =~ ^[[:space:]]*# ]] && continue
    case "$line" in
        *" # memorystore") [ "$redis_mode" = "memorystore" ] || [ "$redis_mode" = "cluster" ] || continue ;;
        *" # cluster") [ "$redis_mode" = "cluster" ] || continue ;;
        *" # metrics-sidecar") [ "${setting[metrics_sidecar]}" = "true" ] || continue ;;
        *" # allowed-origins") [ "${setting[allowed_origins]}" != '""' ] || continue ;;
        *" # server-api") [ "${setting[server_api]}" = "true" ] || continue ;;
        *" # public") [ "${setting[public]}" = "true" ] || continue ;;
    esac
    line="${line% # memorystore}"
    line="${line% # cluster}"
    line="${line% # metrics-sidecar}"
    line="${line% # allowed-origins}"
    line="${line% # server-api}"
    line="${line% # public}"
    line="${line//"\${PROJECT_ID}"/$project}"
    line="${line//"\${REGION}"/$region}"
    line="${line//"\${SERVICE}"/$service}"
    line="${line//"\${IMAGE}"/$image}"
    line="${line//"\${MIN_INSTANCES}"/${setting[min_instances]}}"
    line="${line//"\${MAX_INSTANCES}"/${setting[max_instances]}}"
    line="${line//"\${CONCURRENCY}"/${setting[concurrency]}}"
    line="${line//"\${CPU}"/${setting[cpu]}}"
    line="${line//"\${MEMORY}"/${setting[memory]}}"
    line="${line//"\${RUST_LOG}"/${setting[rust_log]}}"
    line="${line//"\${ALLOWED_ORIGINS}"/${setting[allowed_origins]}}"
    printf '%s\n' "$line"
done <"$here/service.yaml" >"$rendered"
if grep -nF "\${" "$rendered" >&2; then
    die "service.yaml has a placeholder this script does not know (above)"
fi

if [ "$dry_run" -eq 1 ]; then
    printf -- '--- rendered service.yaml\n' >&2
    cat "$rendered"
fi
run gcloud run services replace "$rendered" --project "$project" --region "$region" --quiet
if [ "$dry_run" -eq 0 ]; then
    url="$(gcloud run services describe "$service" --project "$project" --region "$region" \
        --format 'value(status.url)')"
    printf 'Deployed %s\n%s\n' "$image" "$url"
fi
