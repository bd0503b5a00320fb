"""cloudrun/deploy.sh, run for real against a stand-in `gcloud` (and `docker`, and `terraform`)
on PATH that records each call and keeps the service.yaml it was asked to deploy; plus `bash -n`
and shellcheck (installed by scripts/test). The stand-in terraform answers `output -raw NAME`
with what real Terraform computes for that output from terraform/variables.tf (`terraform
console`), so the settings deploy.sh deploys are the ones terraform.tfvars holds."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

import facts
from conftest import ROOT

SCRIPT = ROOT / "cloudrun" / "deploy.sh"

STUB = """#!/usr/bin/env bash
# Records the call; keeps a copy of the file given to `run services replace`.
if [ "$(basename "$0")" = terraform ] && [ "$2 $3" = "output -raw" ]; then
    cat "$STUB_DIR/tf/$4" 2>/dev/null || { echo "No outputs found" >&2; exit 1; }
    exit 0
fi
printf '%s\\n' "$(basename "$0") $*" >> "$STUB_LOG"
if [ "$1 $2" = "builds submit" ]; then
    printf '%s %s\\n' "${CLOUDSDK_BUILDS_USE_KANIKO:-}" "${CLOUDSDK_BUILDS_KANIKO_CACHE_TTL:-}" > "$STUB_DIR/kaniko"
fi
if [ "$1 $2 $3" = "run services replace" ]; then
    cp "$4" "$STUB_DIR/replaced.yaml"
fi
if [ "$1 $2 $3" = "run services describe" ]; then
    echo "https://chat-server-abc123-ew.a.run.app"
fi
"""


@pytest.fixture
def stubs(tmp_path: Path):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (tmp_path / "tf").mkdir()
    for name in ("gcloud", "docker", "terraform"):
        path = bin_dir / name
        path.write_text(STUB)
        path.chmod(0o755)
    return tmp_path


@pytest.fixture
def applied(stubs, tf_eval):
    """`terraform apply` with the given variables (project_id my-project-1 unless given): the
    stand-in terraform then answers with the outputs real Terraform computes for them."""

    def apply(**variables) -> dict[str, str]:
        settings = tf_eval(facts.tf_output_expression("deploy_settings"), **variables)
        (stubs / "tf" / "deploy_settings").write_text(settings)
        (stubs / "tf" / "service_url").write_text("https://chat-server-tf-ew.a.run.app")
        return dict(line.split("=", 1) for line in settings.splitlines() if not line.startswith("env="))

    apply()
    return apply


def deploy(stubs: Path, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    base = {
        "PATH": f"{stubs / 'bin'}:/usr/bin:/bin",
        "HOME": str(stubs),
        "STUB_LOG": str(stubs / "calls.log"),
        "STUB_DIR": str(stubs),
    }
    return subprocess.run(
        ["bash", str(SCRIPT), *args],
        env={**base, **(env or {})},
        capture_output=True,
        text=True,
        timeout=60,
    )


def calls(stubs: Path) -> list[str]:
    log = stubs / "calls.log"
    return log.read_text().splitlines() if log.exists() else []


def rendered(stubs: Path) -> dict:
    text = (stubs / "replaced.yaml").read_text()
    assert "${" not in text, "a placeholder was left in the deployed yaml"
    return yaml.safe_load(text)


def env_of(doc: dict) -> dict[str, dict]:
    return {entry["name"]: entry for entry in facts.knative_container(doc)["env"]}


def test_bash_syntax():
    subprocess.run(["bash", "-n", str(SCRIPT)], check=True)


def test_shellcheck_clean():
    shellcheck = shutil.which("shellcheck")
    assert shellcheck, "shellcheck is needed (scripts/test installs it with apt-get)"
    result = subprocess.run([shellcheck, "--severity=style", str(SCRIPT)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_fails_clearly_without_terraform_outputs(stubs):
    result = deploy(stubs, "--tag", "v1")
    assert result.returncode == 2
    assert "run terraform apply there first" in result.stderr, result.stderr
    assert calls(stubs) == [], "nothing may run before the settings are known"


@pytest.mark.parametrize(
    "args, env, message",
    [
        (["--redis", "valkey"], {}, "--redis must be memorystore, cluster or external"),
        (["--deploy-only"], {}, "--deploy-only needs the --tag"),
        (["--bogus"], {}, "unknown argument"),
        (["--tag", "-bad"], {}, "is not a valid image tag"),
        # Issue 16, item 3: the settings have one source, terraform.tfvars.
        (["--allow-unauthenticated"], {}, "set allow_unauthenticated = true in terraform/terraform.tfvars"),
        (["--allowed-origins", "https://chat.example.com"], {}, "set allowed_origins in terraform"),
        (["--no-metrics-sidecar"], {}, "set metrics_sidecar = false in terraform"),
        (["--project", "other-project-1"], {}, "disagrees with terraform's project_id"),
        ([], {"REGION": "us-central1"}, "disagrees with terraform's region"),
        (["--service", "chat"], {}, "disagrees with terraform's service_name"),
    ],
)
def test_rejects_bad_input(stubs, applied, args, env, message):
    result = deploy(stubs, *args, env=env)
    assert result.returncode == 2 and message in result.stderr, result.stderr
    assert calls(stubs) == []


def test_refuses_a_redis_mode_that_disagrees_with_terraform(stubs, applied):
    """Issue 16, item 3: `--redis external` against a Memorystore stack (or the reverse) would
    deploy a service without (or with) the VPC and the CA that terraform made."""
    result = deploy(stubs, "--redis", "external", "--tag", "v1")
    assert result.returncode == 2
    assert "--redis 'external' disagrees with terraform's redis_mode = \"memorystore\"" in result.stderr
    assert calls(stubs) == []
    applied(redis_mode="external")
    result = deploy(stubs, "--tag", "v1", env={"REDIS_MODE": "memorystore"})
    assert result.returncode == 2 and "disagrees with terraform's redis_mode" in result.stderr
    result = deploy(stubs, "--redis", "external", "--tag", "v1")
    assert result.returncode == 0, result.stderr


def test_builds_pushes_and_deploys_with_memorystore(stubs, applied):
    applied(service_name="chat")
    result = deploy(stubs, "--project", "my-project-1", "--service", "chat", "--tag", "v7")
    assert result.returncode == 0, result.stderr
    image = "europe-west1-docker.pkg.dev/my-project-1/chat/chat-server:v7"
    log = calls(stubs)
    assert log[0].startswith(f"gcloud builds submit {ROOT} --project my-project-1 --region europe-west1 --tag {image}")
    assert log[1].startswith("gcloud run services replace ")
    assert "--project my-project-1 --region europe-west1" in log[1]
    assert result.stdout.strip().endswith("https://chat-server-abc123-ew.a.run.app")

    doc = rendered(stubs)
    assert doc["metadata"]["name"] == "chat"
    assert doc["metadata"]["labels"]["cloud.googleapis.com/location"] == "europe-west1"
    assert "run.googleapis.com/invoker-iam-disabled" not in doc["metadata"]["annotations"], "private by default"
    spec = doc["spec"]["template"]["spec"]
    assert spec["serviceAccountName"] == "chat-run@my-project-1.iam.gserviceaccount.com"
    container = facts.knative_container(doc)
    assert container["image"] == image
    env = env_of(doc)
    assert env["REDIS_URL"]["valueFrom"]["secretKeyRef"]["name"] == "chat-redis-url"
    assert env["SSL_CERT_FILE"]["value"] == "/etc/redis-ca/ca.pem"
    assert spec["volumes"][0]["secret"]["secretName"] == "chat-redis-ca"
    annotations = doc["spec"]["template"]["metadata"]["annotations"]
    assert annotations["run.googleapis.com/network-interfaces"] == '[{"network":"chat","subnetwork":"chat"}]'
    template = facts.service_yaml()
    assert spec["timeoutSeconds"] == template["spec"]["template"]["spec"]["timeoutSeconds"]
    assert container["startupProbe"] == facts.knative_container(template)["startupProbe"]


def test_memorystore_is_verified_by_chain_and_external_redis_is_not_touched(stubs, applied):
    """Issue 16, item 1 (the deploy side): Memorystore's certificate has its IP in the CN only,
    so the server checks the chain against the instance's CA and not the name."""
    assert deploy(stubs, "--deploy-only", "--tag", "v1").returncode == 0
    env = env_of(rendered(stubs))
    assert env["REDIS_TLS_VERIFY"]["value"] == "chain"
    assert env["SSL_CERT_FILE"]["value"] == "/etc/redis-ca/ca.pem"
    applied(redis_mode="external")
    assert deploy(stubs, "--deploy-only", "--tag", "v1").returncode == 0
    assert not {"REDIS_TLS_VERIFY", "SSL_CERT_FILE"} & set(env_of(rendered(stubs)))


def test_cluster_keeps_the_vpc_and_the_ca_and_sets_redis_cluster(stubs, applied):
    """Issue 18: with redis_mode = "cluster" the service reaches the cluster's Private Service
    Connect endpoints through the same Direct VPC egress, trusts the cluster's CA, and runs
    with REDIS_CLUSTER=true; only then."""
    applied(redis_mode="cluster", service_name="chat")
    result = deploy(stubs, "--deploy-only", "--tag", "v9", "--redis", "cluster")
    assert result.returncode == 0, result.stderr
    doc = rendered(stubs)
    env = env_of(doc)
    assert env["REDIS_CLUSTER"]["value"] == "true"
    assert env["REDIS_URL"]["valueFrom"]["secretKeyRef"]["name"] == "chat-redis-url"
    assert env["REDIS_TLS_VERIFY"]["value"] == "chain"
    assert env["SSL_CERT_FILE"]["value"] == "/etc/redis-ca/ca.pem"
    spec = doc["spec"]["template"]["spec"]
    assert spec["volumes"][0]["secret"]["secretName"] == "chat-redis-ca"
    annotations = doc["spec"]["template"]["metadata"]["annotations"]
    assert annotations["run.googleapis.com/network-interfaces"] == '[{"network":"chat","subnetwork":"chat"}]'
    assert annotations["run.googleapis.com/vpc-access-egress"] == "private-ranges-only"

    for mode in ("memorystore", "external"):
        applied(redis_mode=mode)
        assert deploy(stubs, "--deploy-only", "--tag", "v9").returncode == 0
        assert "REDIS_CLUSTER" not in env_of(rendered(stubs)), mode
    result = deploy(stubs, "--deploy-only", "--tag", "v9", "--redis", "cluster")
    assert result.returncode == 2 and "disagrees with terraform's redis_mode" in result.stderr


def test_external_redis_drops_the_vpc_and_the_ca(stubs, applied):
    applied(redis_mode="external", allow_unauthenticated=True, allowed_origins=["https://chat.example.com"])
    result = deploy(stubs, "--tag", "v8", env={"GOOGLE_CLOUD_PROJECT": "my-project-1", "SERVICE": "chat-server"})
    assert result.returncode == 0, result.stderr
    doc = rendered(stubs)
    annotations = doc["spec"]["template"]["metadata"]["annotations"]
    assert "run.googleapis.com/network-interfaces" not in annotations
    assert "run.googleapis.com/vpc-access-egress" not in annotations
    env = env_of(doc)
    assert set(env) == {"REDIS_URL", "RUST_LOG", "GOOGLE_CLOUD_PROJECT", "METRICS_PORT", "ALLOWED_ORIGINS"}
    assert env["GOOGLE_CLOUD_PROJECT"]["value"] == "my-project-1"
    container = facts.knative_container(doc)
    assert "volumeMounts" not in container and "volumes" not in doc["spec"]["template"]["spec"]


def test_every_terraform_setting_reaches_the_service_deploy_sh_deploys(stubs, applied):
    """Issue 16, item 3: terraform.tfvars is the one source of the service's settings, also when
    deploy.sh owns the service (before, service.yaml hard-coded its own)."""
    applied(min_instances=2, max_instances=7, concurrency=300, cpu="2", memory="1Gi",
            rust_log="chat_server=debug,info", allowed_origins=["https://a.example.com", "http://localhost:3000"],
            metrics_sidecar=False, extra_env={"HISTORY_LIMIT": "5000", "ODD": 'a&b "c" # d'})
    result = deploy(stubs, "--deploy-only", "--tag", "v2")
    assert result.returncode == 0, result.stderr
    doc = rendered(stubs)
    annotations = doc["spec"]["template"]["metadata"]["annotations"]
    assert annotations["autoscaling.knative.dev/minScale"] == "2"
    assert annotations["autoscaling.knative.dev/maxScale"] == "7"
    assert doc["spec"]["template"]["spec"]["containerConcurrency"] == 300
    container = facts.knative_container(doc)
    assert container["resources"]["limits"] == {"cpu": "2", "memory": "1Gi"}
    env = {name: entry.get("value") for name, entry in env_of(doc).items()}
    assert env["RUST_LOG"] == "chat_server=debug,info"
    assert env["ALLOWED_ORIGINS"] == "https://a.example.com,http://localhost:3000"
    assert env["HISTORY_LIMIT"] == "5000" and env["ODD"] == 'a&b "c" # d'
    assert facts.knative_sidecars(doc) == [], "metrics_sidecar = false"
    assert "run.googleapis.com/container-dependencies" not in annotations


def test_public_access_disables_the_invoker_check_instead_of_binding_all_users(stubs, applied):
    """Issue 16, item 4: domain-restricted sharing refuses an allUsers binding (and the script
    then stopped before printing the URL)."""
    applied(allow_unauthenticated=True, allowed_origins=["https://chat.example.com"])
    result = deploy(stubs, "--deploy-only", "--tag", "v3")
    assert result.returncode == 0, result.stderr
    doc = rendered(stubs)
    assert doc["metadata"]["annotations"]["run.googleapis.com/invoker-iam-disabled"] == "true"
    assert not any("iam-policy-binding" in call or "allUsers" in call for call in calls(stubs))
    assert result.stdout.strip().endswith("https://chat-server-abc123-ew.a.run.app")


def test_a_terraform_owned_service_is_deployed_by_terraform(stubs, applied):
    """Issue 16, item 3: with image_tag set Terraform owns the service; deploy.sh must not
    create it a second time (the 409) but hand the new tag to terraform apply."""
    applied(image_tag="v1")
    result = deploy(stubs, "--tag", "v5", "--docker")
    assert result.returncode == 0, result.stderr
    image = "europe-west1-docker.pkg.dev/my-project-1/chat-server/chat-server:v5"
    log = calls(stubs)
    assert log[-1] == f"terraform -chdir={ROOT / 'terraform'} apply -var image_tag=v5"
    assert f"docker push {image}" in log
    assert not any(call.startswith("gcloud run") for call in log)
    assert result.stdout.strip().endswith("https://chat-server-tf-ew.a.run.app")
    assert 'image_tag = "v5" in terraform.tfvars' in result.stderr


def test_build_only_and_deploy_only(stubs, applied):
    result = deploy(stubs, "--build-only", "--tag", "v9", "--docker")
    assert result.returncode == 0, result.stderr
    image = "europe-west1-docker.pkg.dev/my-project-1/chat-server/chat-server:v9"
    assert calls(stubs) == [
        "gcloud auth configure-docker europe-west1-docker.pkg.dev --quiet",
        f"docker build --platform linux/amd64 --tag {image} {ROOT}",
        f"docker push {image}",
    ]
    assert result.stdout.strip() == f"Pushed {image}"
    (stubs / "calls.log").unlink()
    result = deploy(stubs, "--deploy-only", "--tag", "v9")
    assert result.returncode == 0, result.stderr
    assert not any("builds submit" in call or "docker" in call for call in calls(stubs))
    assert facts.knative_container(rendered(stubs))["image"] == image


def test_local_docker_builds_for_cloud_runs_platform(stubs, applied):
    """Issue 16, item 5: on an ARM laptop docker builds arm64, which Cloud Run refuses."""
    result = deploy(stubs, "--build-only", "--tag", "v9", "--docker")
    assert result.returncode == 0, result.stderr
    [build] = [call for call in calls(stubs) if call.startswith("docker build")]
    assert "--platform linux/amd64" in build


def test_cloud_build_reuses_the_dependency_layer(stubs, applied):
    """Issue 16, item 6: Cloud Build starts with no layer cache; Kaniko's cache (gcloud's
    builds/use_kaniko property with --tag) keeps the dependency layer in the registry."""
    result = deploy(stubs, "--build-only", "--tag", "v9")
    assert result.returncode == 0, result.stderr
    [build] = [call for call in calls(stubs) if call.startswith("gcloud builds submit")]
    assert "--tag " in build, "use_kaniko applies to --tag builds"
    use_kaniko, ttl = (stubs / "kaniko").read_text().split()
    assert use_kaniko == "True"
    assert int(ttl) >= 24 * 7, "the cache outlives a week between releases"


def test_dry_run_runs_nothing(stubs, applied):
    result = deploy(stubs, "--dry-run", "--tag", "v1")
    assert result.returncode == 0, result.stderr
    assert calls(stubs) == []
    assert "+ env CLOUDSDK_BUILDS_USE_KANIKO=True" in result.stderr
    assert yaml.safe_load(result.stdout)["metadata"]["name"] == "chat-server"


def test_default_tag_is_the_commit(stubs, applied):
    result = deploy(stubs, "--build-only")
    assert result.returncode == 0, result.stderr
    commit = subprocess.run(["git", "rev-parse", "--short=12", "HEAD"], cwd=ROOT,
                            capture_output=True, text=True, check=True).stdout.strip()
    assert f"/chat-server:{commit}" in result.stdout


def test_metrics_sidecar_by_default(stubs, applied):
    result = deploy(stubs, "--deploy-only", "--tag", "v4")
    assert result.returncode == 0, result.stderr
    doc = rendered(stubs)
    [sidecar] = facts.knative_sidecars(doc)
    assert sidecar == facts.knative_sidecars(facts.service_yaml())[0]
    annotations = doc["spec"]["template"]["metadata"]["annotations"]
    assert json.loads(annotations["run.googleapis.com/container-dependencies"]) == {"collector": ["chat-server"]}
    metrics_port = {e["name"]: e.get("value") for e in facts.knative_container(doc)["env"]}["METRICS_PORT"]
    assert int(metrics_port) == facts.SIDECAR_DEFAULT_SCRAPE_PORT
    assert "ALLOWED_ORIGINS" not in env_of(doc), "any origin for a private service without allowed_origins"


def test_delete_before_terraform_destroy(stubs, applied):
    """Issue 16, item 8: a deploy.sh-owned service keeps the subnet in use (Terraform does not
    know it), and Cloud Run releases the subnet's addresses 1-2 hours after the service goes:
    --delete deletes it and says that the first terraform destroy stops at the subnet."""
    result = deploy(stubs, "--delete")
    assert result.returncode == 0, result.stderr
    assert calls(stubs) == ["gcloud run services delete chat-server --project my-project-1 --region europe-west1 --quiet"]
    assert "1-2 hours" in result.stderr and "second terraform destroy" in result.stderr
    applied(image_tag="v1")
    (stubs / "calls.log").unlink()
    result = deploy(stubs, "--delete")
    assert result.returncode == 2 and "Terraform owns the service" in result.stderr
    assert calls(stubs) == []


def test_server_api_key_only_with_server_api(stubs, applied):
    """SERVER_API_KEY reaches the service from its secret with server_api = true, and not at all
    without it (the server then has no /api/)."""
    result = deploy(stubs, "--deploy-only", "--tag", "v5")
    assert result.returncode == 0, result.stderr
    assert "SERVER_API_KEY" not in env_of(rendered(stubs))
    applied(server_api=True)
    result = deploy(stubs, "--deploy-only", "--tag", "v6")
    assert result.returncode == 0, result.stderr
    entry = env_of(rendered(stubs))["SERVER_API_KEY"]
    assert entry["valueFrom"]["secretKeyRef"] == {"name": "chat-server-server-api-key", "key": "latest"}
    assert "value" not in entry, "the key comes from Secret Manager, never inline"
