#!/usr/bin/env bash
# Build chat-server's image, push it to the project's Artifact Registry repository, and deploy
# it to Cloud Run from cloudrun/service.yaml (`gcloud run services replace`).
#
# Needs the project, region and service name, from flags or the environment; the rest of the
# names (repository, service account, secrets, network) derive from the service name exactly as
# terraform/ names them, so `terraform apply` first, then this. Run with --help for the flags.
#
# Nothing secret passes through here: REDIS_URL stays in Secret Manager and reaches the service
# by reference.
set -euo pipefail

usage() {
    cat <<'EOF'
Usage: cloudrun/deploy.sh [options]

Builds the image (Cloud Build, or the local docker with --docker), pushes it to
REGION-docker.pkg.dev/PROJECT/SERVICE/chat-server:TAG and deploys cloudrun/service.yaml.

Required (flag or environment variable):
  -p, --project ID       Google Cloud project id              (PROJECT_ID, or GOOGLE_CLOUD_PROJECT)
  -r, --region REGION    region, e.g. europe-west1            (REGION)
  -s, --service NAME     service name, as in terraform        (SERVICE)

Optional:
  -t, --tag TAG          image tag (TAG; default: the git commit, else a timestamp)
      --redis MODE       memorystore (default) or external    (REDIS_MODE)
      --docker           build and push with the local docker instead of Cloud Build
      --build-only       build and push, do not deploy (for a Terraform-managed service)
      --deploy-only      deploy TAG, already pushed, without building
      --allow-unauthenticated
                         make the service public (roles/run.invoker for allUsers)
      --allowed-origins LIST
                         comma-separated browser origins allowed to call the API, e.g.
                         https://chat.example.com (ALLOWED_ORIGINS; the service's own
                         origin is always allowed). Without it every origin is, and a
                         public service gets a warning
      --no-metrics-sidecar
                         no Managed Service for Prometheus collector (as terraform's
                         metrics_sidecar = false); /metrics stays internal either way
      --dry-run          print the commands and the rendered service.yaml, run nothing
  -h, --help             this text
EOF
}

die() {
    printf 'deploy.sh: %s\n' "$*" >&2
    exit 2
}

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(dirname "$here")"

project="${PROJECT_ID:-${GOOGLE_CLOUD_PROJECT:-}}"
region="${REGION:-}"
service="${SERVICE:-}"
tag="${TAG:-}"
redis_mode="${REDIS_MODE:-memorystore}"
origins="${ALLOWED_ORIGINS:-}"
metrics_sidecar=1
builder="cloudbuild"
build=1
deploy=1
public=0
dry_run=0

need_value() {
    if [ "$#" -lt 2 ] || [ -z "$2" ]; then
        die "$1 needs a value (see --help)"
    fi
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
        --allow-unauthenticated) public=1; shift ;;
        --allowed-origins) need_value "$@"; origins="$2"; shift 2 ;;
        --no-metrics-sidecar) metrics_sidecar=0; shift ;;
        --dry-run) dry_run=1; shift ;;
        -h | --help) usage; exit 0 ;;
        *) die "unknown argument '$1' (see --help)" ;;
    esac
done

missing=()
[ -n "$project" ] || missing+=("the project (--project or PROJECT_ID)")
[ -n "$region" ] || missing+=("the region (--region or REGION)")
[ -n "$service" ] || missing+=("the service name (--service or SERVICE)")
if [ "${#missing[@]}" -gt 0 ]; then
    for what in "${missing[@]}"; do
        printf 'deploy.sh: missing %s\n' "$what" >&2
    done
    die "nothing was built or deployed (see --help)"
fi
[[ "$project" =~ ^[a-z][a-z0-9-]{4,28}[a-z0-9]$ ]] || die "'$project' is not a project id"
[[ "$region" =~ ^[a-z]+-[a-z]+[0-9]+$ ]] || die "'$region' is not a region"
[[ "$service" =~ ^[a-z][a-z0-9-]{0,24}[a-z0-9]$ ]] ||
    die "'$service' is not a service name (2-26 lowercase letters, digits, hyphens)"
case "$redis_mode" in
    memorystore | external) ;;
    *) die "--redis must be memorystore or external, not '$redis_mode'" ;;
esac
if [ -n "$origins" ]; then
    # Origins exactly as browsers send them; the list lands in service.yaml as a quoted string.
    IFS=',' read -r -a origin_list <<<"$origins,"
    for origin in "${origin_list[@]}"; do
        [[ "$origin" =~ ^https?://[A-Za-z0-9.-]+(:[0-9]{1,5})?$ ]] ||
            die "'$origin' in --allowed-origins is not an origin such as https://chat.example.com (scheme, host, optional port; no path, no spaces)"
    done
fi
[ "$build" -eq 1 ] || [ "$deploy" -eq 1 ] || die "--build-only and --deploy-only exclude each other"
if [ -z "$tag" ]; then
    [ "$build" -eq 1 ] || die "--deploy-only needs the --tag of an image already pushed"
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

# A public service without ALLOWED_ORIGINS answers every web site's CORS requests and
# WebSocket upgrades. Said, not refused: the first deploy cannot know the service's URL yet,
# and the bundled browser client is same-origin (always allowed), so there may be nothing to
# list before the service exists. terraform/ refuses it instead (allowed_origins).
warn_any_origin() {
    if [ "$public" -eq 1 ] && [ -z "$origins" ]; then
        cat >&2 <<'EOF'
deploy.sh: WARNING ==========================================================================
deploy.sh: WARNING: the service is public (--allow-unauthenticated) and ALLOWED_ORIGINS is
deploy.sh: WARNING: empty: EVERY web site may call it from its visitors' browsers (CORS and
deploy.sh: WARNING: WebSocket upgrades). Deploy again with
deploy.sh: WARNING:   --allowed-origins https://your.site[,https://other.site]
deploy.sh: WARNING: (the service's own origin, and so the bundled browser client, is always allowed).
deploy.sh: WARNING ==========================================================================
EOF
    fi
}

# Runs a command, or only shows it with --dry-run.
run() {
    printf '+ %s\n' "$*" >&2
    if [ "$dry_run" -eq 0 ]; then
        "$@"
    fi
}

if [ "$dry_run" -eq 0 ]; then
    if [ "$builder" = "docker" ] && [ "$build" -eq 1 ]; then
        command -v docker >/dev/null 2>&1 || die "--docker needs the docker command"
    fi
    command -v gcloud >/dev/null 2>&1 || die "needs the gcloud command (Google Cloud SDK)"
fi

if [ "$build" -eq 1 ]; then
    printf 'Building %s\n' "$image" >&2
    if [ "$builder" = "docker" ]; then
        run gcloud auth configure-docker "$region-docker.pkg.dev" --quiet
        run docker build --tag "$image" "$root"
        run docker push "$image"
    else
        # A release build with LTO takes minutes: more time and cores than Cloud Build's
        # 10-minute default on its 2-vCPU default machine.
        run gcloud builds submit "$root" --project "$project" --region "$region" \
            --tag "$image" --timeout 40m --machine-type e2-highcpu-8
    fi
fi

if [ "$deploy" -eq 0 ]; then
    printf 'Pushed %s\n' "$image"
    exit 0
fi

# Render service.yaml: the placeholders, and the lines marked for an option kept only with it
# (their marker removed): "# memorystore" (the VPC, CA mount and SSL_CERT_FILE),
# "# metrics-sidecar" (the collector), "# allowed-origins" (ALLOWED_ORIGINS). Comment lines
# are left out.
rendered="$(mktemp "${TMPDIR:-/tmp}/chat-server-service.XXXXXX")"
trap 'rm -f "$rendered"' EXIT
while IFS= read -r line || [ -n "$line" ]; do
    [[ "$line" =~ ^[[:space:]]*# ]] && continue
    case "$line" in
        *" # memorystore") [ "$redis_mode" = "memorystore" ] || continue ;;
        *" # metrics-sidecar") [ "$metrics_sidecar" -eq 1 ] || continue ;;
        *" # allowed-origins") [ -n "$origins" ] || continue ;;
    esac
    line="${line% # memorystore}"
    line="${line% # metrics-sidecar}"
    line="${line% # allowed-origins}"
    line="${line//"\${PROJECT_ID}"/$project}"
    line="${line//"\${REGION}"/$region}"
    line="${line//"\${SERVICE}"/$service}"
    line="${line//"\${IMAGE}"/$image}"
    line="${line//"\${ALLOWED_ORIGINS}"/$origins}"
    printf '%s\n' "$line"
done <"$here/service.yaml" >"$rendered"
if grep -nF "\${" "$rendered" >&2; then
    die "service.yaml has a placeholder this script does not know (above)"
fi

if [ "$dry_run" -eq 1 ]; then
    printf -- '--- rendered service.yaml\n' >&2
    cat "$rendered"
fi
warn_any_origin
run gcloud run services replace "$rendered" --project "$project" --region "$region" --quiet
if [ "$public" -eq 1 ]; then
    run gcloud run services add-iam-policy-binding "$service" --project "$project" \
        --region "$region" --member allUsers --role roles/run.invoker --quiet
fi
if [ "$dry_run" -eq 0 ]; then
    url="$(gcloud run services describe "$service" --project "$project" --region "$region" \
        --format 'value(status.url)')"
    printf 'Deployed %s\n%s\n' "$image" "$url"
fi
# Again last, where it is seen.
warn_any_origin
