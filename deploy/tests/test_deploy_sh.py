"""cloudrun/deploy.sh, run for real against a stand-in `gcloud` (and `docker`) on PATH that
records each call and keeps the service.yaml it was asked to deploy; plus `bash -n` and
shellcheck (installed by scripts/test)."""

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
printf '%s\\n' "$(basename "$0") $*" >> "$STUB_LOG"
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
    for name in ("gcloud", "docker"):
        path = bin_dir / name
        path.write_text(STUB)
        path.chmod(0o755)
    return tmp_path


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


def test_bash_syntax():
    subprocess.run(["bash", "-n", str(SCRIPT)], check=True)


def test_shellcheck_clean():
    shellcheck = shutil.which("shellcheck")
    assert shellcheck, "shellcheck is needed (scripts/test installs it with apt-get)"
    result = subprocess.run([shellcheck, "--severity=style", str(SCRIPT)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize(
    "args, env, missing",
    [
        ([], {}, ["the project", "the region", "the service name"]),
        (["--region", "europe-west1", "--service", "chat-server"], {}, ["the project"]),
        (["--project", "my-project-1", "--service", "chat-server"], {}, ["the region"]),
        ([], {"PROJECT_ID": "my-project-1", "REGION": "europe-west1"}, ["the service name"]),
    ],
)
def test_fails_clearly_when_something_is_missing(stubs, args, env, missing):
    result = deploy(stubs, *args, env=env)
    assert result.returncode == 2
    for what in missing:
        assert f"missing {what}" in result.stderr
    assert calls(stubs) == [], "nothing may run before the inputs are complete"


@pytest.mark.parametrize(
    "args, message",
    [
        (["--redis", "valkey"], "--redis must be memorystore or external"),
        (["--project", "Not_A_Project"], "is not a project id"),
        (["--deploy-only"], "--deploy-only needs the --tag"),
        (["--bogus"], "unknown argument"),
        (["--allowed-origins", "https://chat.example.com/"], "is not an origin"),
        (["--allowed-origins", "https://a.example.com, https://b.example.com"], "is not an origin"),
        (["--allowed-origins", "https://a.example.com,"], "is not an origin"),
        (["--allowed-origins", 'https://a.example.com"'], "is not an origin"),
    ],
)
def test_rejects_bad_input(stubs, args, message):
    base = {"PROJECT_ID": "my-project-1", "REGION": "europe-west1", "SERVICE": "chat-server"}
    result = deploy(stubs, *args, env=base)
    assert result.returncode == 2 and message in result.stderr, result.stderr
    assert calls(stubs) == []


def rendered(stubs: Path) -> dict:
    text = (stubs / "replaced.yaml").read_text()
    assert "${" not in text, "a placeholder was left in the deployed yaml"
    return yaml.safe_load(text)


def test_builds_pushes_and_deploys_with_memorystore(stubs):
    result = deploy(stubs, "--project", "my-project-1", "--region", "europe-west1",
                    "--service", "chat", "--tag", "v7")
    assert result.returncode == 0, result.stderr
    image = "europe-west1-docker.pkg.dev/my-project-1/chat/chat-server:v7"
    log = calls(stubs)
    assert log[0].startswith(f"gcloud builds submit {ROOT} --project my-project-1 --region europe-west1 --tag {image}")
    assert log[1].startswith("gcloud run services replace ")
    assert "--project my-project-1 --region europe-west1" in log[1]
    assert not any("add-iam-policy-binding" in call for call in log), "private unless asked"
    assert result.stdout.strip().endswith("https://chat-server-abc123-ew.a.run.app")
    assert "WARNING" not in result.stderr, "a private service may leave ALLOWED_ORIGINS unset"

    doc = rendered(stubs)
    assert doc["metadata"]["name"] == "chat"
    assert doc["metadata"]["labels"]["cloud.googleapis.com/location"] == "europe-west1"
    spec = doc["spec"]["template"]["spec"]
    assert spec["serviceAccountName"] == "chat-run@my-project-1.iam.gserviceaccount.com"
    container = facts.knative_container(doc)
    assert container["image"] == image
    env = {entry["name"]: entry for entry in container["env"]}
    assert env["REDIS_URL"]["valueFrom"]["secretKeyRef"]["name"] == "chat-redis-url"
    assert env["SSL_CERT_FILE"]["value"] == "/etc/redis-ca/ca.pem"
    assert spec["volumes"][0]["secret"]["secretName"] == "chat-redis-ca"
    annotations = doc["spec"]["template"]["metadata"]["annotations"]
    assert annotations["run.googleapis.com/network-interfaces"] == '[{"network":"chat","subnetwork":"chat"}]'
    # Apart from the placeholders, the deployed yaml is service.yaml itself.
    template = facts.service_yaml()
    assert doc["spec"]["template"]["spec"]["timeoutSeconds"] == template["spec"]["template"]["spec"]["timeoutSeconds"]
    assert container["startupProbe"] == facts.knative_container(template)["startupProbe"]


def test_external_redis_drops_the_vpc_and_the_ca(stubs):
    result = deploy(stubs, "--redis", "external", "--tag", "v8", "--allow-unauthenticated",
                    env={"GOOGLE_CLOUD_PROJECT": "my-project-1", "REGION": "us-central1", "SERVICE": "chat-server"})
    assert result.returncode == 0, result.stderr
    doc = rendered(stubs)
    annotations = doc["spec"]["template"]["metadata"]["annotations"]
    assert "run.googleapis.com/network-interfaces" not in annotations
    assert "run.googleapis.com/vpc-access-egress" not in annotations
    container = facts.knative_container(doc)
    env = {entry["name"]: entry for entry in container["env"]}
    assert set(env) == {"REDIS_URL", "RUST_LOG", "GOOGLE_CLOUD_PROJECT", "METRICS_PORT"}
    assert env["GOOGLE_CLOUD_PROJECT"]["value"] == "my-project-1"
    assert "volumeMounts" not in container and "volumes" not in doc["spec"]["template"]["spec"]
    assert any(
        call.startswith("gcloud run services add-iam-policy-binding chat-server")
        and "--member allUsers --role roles/run.invoker" in call
        for call in calls(stubs)
    )


def test_build_only_and_deploy_only(stubs):
    env = {"PROJECT_ID": "my-project-1", "REGION": "europe-west1", "SERVICE": "chat-server"}
    result = deploy(stubs, "--build-only", "--tag", "v9", "--docker", env=env)
    assert result.returncode == 0, result.stderr
    image = "europe-west1-docker.pkg.dev/my-project-1/chat-server/chat-server:v9"
    assert calls(stubs) == [
        "gcloud auth configure-docker europe-west1-docker.pkg.dev --quiet",
        f"docker build --tag {image} {ROOT}",
        f"docker push {image}",
    ]
    assert result.stdout.strip() == f"Pushed {image}"
    (stubs / "calls.log").unlink()
    result = deploy(stubs, "--deploy-only", "--tag", "v9", env=env)
    assert result.returncode == 0, result.stderr
    assert not any("builds submit" in call or "docker" in call for call in calls(stubs))
    assert facts.knative_container(rendered(stubs))["image"] == image


def test_dry_run_runs_nothing(stubs):
    env = {"PROJECT_ID": "my-project-1", "REGION": "europe-west1", "SERVICE": "chat-server"}
    result = deploy(stubs, "--dry-run", "--tag", "v1", env=env)
    assert result.returncode == 0, result.stderr
    assert calls(stubs) == []
    assert "+ gcloud builds submit" in result.stderr
    assert yaml.safe_load(result.stdout)["metadata"]["name"] == "chat-server"


def test_default_tag_is_the_commit(stubs):
    env = {"PROJECT_ID": "my-project-1", "REGION": "europe-west1", "SERVICE": "chat-server"}
    result = deploy(stubs, "--build-only", env=env)
    assert result.returncode == 0, result.stderr
    commit = subprocess.run(["git", "rev-parse", "--short=12", "HEAD"], cwd=ROOT,
                            capture_output=True, text=True, check=True).stdout.strip()
    assert f"/chat-server:{commit}" in result.stdout


def public_any_origin_warnings(stderr: str) -> int:
    return stderr.count("WARNING: the service is public (--allow-unauthenticated) and ALLOWED_ORIGINS is")


def test_public_service_without_origins_is_deployed_with_a_loud_warning(stubs):
    env = {"PROJECT_ID": "my-project-1", "REGION": "europe-west1", "SERVICE": "chat-server"}
    result = deploy(stubs, "--deploy-only", "--tag", "v3", "--allow-unauthenticated", env=env)
    assert result.returncode == 0, result.stderr
    # Before the deploy, and again last, under the URL.
    assert public_any_origin_warnings(result.stderr) == 2, result.stderr
    assert "EVERY web site may call it" in result.stderr
    assert "--allowed-origins https://" in result.stderr, "say how to fix it"
    assert result.stderr.rstrip().endswith("=" * 20)
    env_names = {entry["name"] for entry in facts.knative_container(rendered(stubs))["env"]}
    assert "ALLOWED_ORIGINS" not in env_names


def test_allowed_origins_reach_the_server(stubs):
    origins = "https://chat.example.com,http://localhost:3000"
    env = {"PROJECT_ID": "my-project-1", "REGION": "europe-west1", "SERVICE": "chat-server"}
    result = deploy(stubs, "--deploy-only", "--tag", "v3", "--allow-unauthenticated",
                    "--allowed-origins", origins, env=env)
    assert result.returncode == 0, result.stderr
    assert "WARNING" not in result.stderr
    container = facts.knative_container(rendered(stubs))
    assert {entry["name"]: entry.get("value") for entry in container["env"]}["ALLOWED_ORIGINS"] == origins
    # ALLOWED_ORIGINS from the environment does the same.
    result = deploy(stubs, "--deploy-only", "--tag", "v3", "--allow-unauthenticated",
                    env={**env, "ALLOWED_ORIGINS": "https://chat.example.com"})
    assert result.returncode == 0 and "WARNING" not in result.stderr, result.stderr


def test_metrics_sidecar_by_default_and_dropped_on_request(stubs):
    env = {"PROJECT_ID": "my-project-1", "REGION": "europe-west1", "SERVICE": "chat-server"}
    result = deploy(stubs, "--deploy-only", "--tag", "v4", env=env)
    assert result.returncode == 0, result.stderr
    doc = rendered(stubs)
    [sidecar] = facts.knative_sidecars(doc)
    assert sidecar == facts.knative_sidecars(facts.service_yaml())[0]
    annotations = doc["spec"]["template"]["metadata"]["annotations"]
    assert json.loads(annotations["run.googleapis.com/container-dependencies"]) == {"collector": ["chat-server"]}
    metrics_port = {e["name"]: e.get("value") for e in facts.knative_container(doc)["env"]}["METRICS_PORT"]
    assert int(metrics_port) == facts.SIDECAR_DEFAULT_SCRAPE_PORT

    result = deploy(stubs, "--deploy-only", "--tag", "v4", "--no-metrics-sidecar", env=env)
    assert result.returncode == 0, result.stderr
    doc = rendered(stubs)
    assert facts.knative_sidecars(doc) == []
    assert "run.googleapis.com/container-dependencies" not in doc["spec"]["template"]["metadata"]["annotations"]
    # /metrics stays off the ingress port without a collector too.
    assert {e["name"] for e in facts.knative_container(doc)["env"]} >= {"METRICS_PORT"}
