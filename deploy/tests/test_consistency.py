"""The deployment agrees with the server.

* The variables the server reads (the fields of `Config`'s sections in src/config/, explicit
  env reads in src/, RUST_LOG) and the README's Configuration table are the same list.
* terraform/main.tf, cloudrun/service.yaml and the README's deploy section each account for
  every one of them: set, or declared left unset with a reason ("Left unset (…): A, B"), and
  what they declare is what they do.
* Ports, probe paths and time limits match the server's routes and defaults; /metrics is on
  METRICS_PORT, off the ingress port, where the metrics sidecar scrapes it.
* cloudrun/service.yaml and terraform's google_cloud_run_v2_service carry the same settings.

Nothing is hard-coded about which variables exist: a variable added to the server or the README
shows up here as one the deployment has not accounted for.
"""

from __future__ import annotations

import json
import re

import pytest

import facts
from conftest import markdown_section, read


# --- The server's variables vs the README -----------------------------------------------------


def test_every_config_section_is_read():
    declared = set(facts.declared_sections())
    read = set(facts.config_sections().values())
    assert declared == read, (
        f"sections declared but not in Config: {sorted(declared - read)}; "
        f"in Config but not declared with section!: {sorted(read - declared)}"
    )
    assert len(facts.config_fields()) >= 40, "the sections' fields were not found"


def test_every_variable_the_server_reads_is_in_the_readme_table():
    undocumented = facts.server_reads() - facts.readme_config_table()
    assert not undocumented, (
        f"the server reads {sorted(undocumented)} but README's Configuration table does not list them"
    )


def test_every_variable_in_the_readme_table_is_read_by_the_server():
    known = facts.server_reads() | facts.upper_case_literals_in_src()
    # OpenTelemetry's SDK reads the standard OTEL_* variables itself.
    otel = any(dep.startswith("opentelemetry") for dep in facts.cargo_dependencies())
    stale = {
        name
        for name in facts.readme_config_table() - known
        if not (otel and name.startswith("OTEL_"))
    }
    assert not stale, f"README documents {sorted(stale)} but nothing in src/ reads them"


# --- Each deployment accounts for every variable ----------------------------------------------


def terraform_env() -> set[str]:
    service = facts.tf_resources()["google_cloud_run_v2_service.chat"]
    container = service["template"][0]["containers"][0]
    names = set()
    for env in facts.hcl_blocks(container, "env"):
        name = facts.unquote(env["name"])
        if name != "${env.key}":  # var.extra_env: the user's own additions
            names.add(name)
    return names


def service_yaml_env() -> set[str]:
    container = facts.knative_container(facts.service_yaml())
    return {entry["name"] for entry in container.get("env", [])}


def readme_deploy_section() -> str:
    return markdown_section(facts.readme(), "Deploy to Google Cloud")


DEPLOYMENTS = {
    "terraform/main.tf": (lambda: read("terraform/main.tf"), terraform_env),
    "cloudrun/service.yaml": (facts.service_yaml_text, service_yaml_env),
    "README.md (Deploy to Google Cloud)": (readme_deploy_section, None),
}


@pytest.mark.parametrize("where", DEPLOYMENTS)
def test_deployment_accounts_for_every_variable(where):
    text_of, env_of = DEPLOYMENTS[where]
    declared_set, unset = facts.declared(text_of())
    assert declared_set or unset, f"{where} declares no 'Env set here:' / 'Left unset (…):' lines"
    actually_set = env_of() if env_of else declared_set
    if env_of:
        assert declared_set == actually_set, (
            f"{where}: 'Env set here' says {sorted(declared_set)} but the env set is {sorted(actually_set)}"
        )
    variables = facts.all_variables()
    both = actually_set & set(unset)
    assert not both, f"{where} both sets and leaves unset {sorted(both)}"
    missing = variables - actually_set - set(unset)
    assert not missing, (
        f"{where} neither sets nor declares left unset {sorted(missing)}: set them, or add them "
        "to a 'Left unset (reason): …' line"
    )
    unknown = (actually_set | set(unset)) - variables - facts.TLS_LIBRARY_VARS - facts.announced_not_read()
    assert not unknown, f"{where} names {sorted(unknown)}, which the server does not read"
    reserved = actually_set & facts.CLOUD_RUN_RESERVED
    assert not reserved, f"{where} sets {sorted(reserved)}, which Cloud Run sets (and refuses)"


def test_memorystore_ca_is_trusted_through_ssl_cert_file_in_both():
    yaml_container = facts.knative_container(facts.service_yaml())
    yaml_env = {entry["name"]: entry for entry in yaml_container["env"]}
    mount = yaml_container["volumeMounts"][0]["mountPath"]
    item = facts.service_yaml()["spec"]["template"]["spec"]["volumes"][0]["secret"]["items"][0]
    assert yaml_env["SSL_CERT_FILE"]["value"] == f"{mount}/{item['path']}"

    service = facts.tf_resources()["google_cloud_run_v2_service.chat"]
    container = service["template"][0]["containers"][0]
    tf_env = {facts.unquote(env["name"]): env for env in facts.hcl_blocks(container, "env")}
    assert facts.tf_value(tf_env["SSL_CERT_FILE"]["value"]) == yaml_env["SSL_CERT_FILE"]["value"]
    tf_mount = facts.hcl_blocks(container, "volume_mounts")[0]
    assert facts.tf_value(tf_mount["mount_path"]) == mount


# --- Ports, probes and time limits ------------------------------------------------------------


def ingress_ports() -> tuple[int, int]:
    """The ingress port of service.yaml and of Terraform's service."""
    container = facts.knative_container(facts.service_yaml())
    [yaml_port] = [p["containerPort"] for p in container["ports"]]
    [tf_port] = [facts.tf_value(p["container_port"]) for p in facts.tf_ingress_container()["ports"]]
    return yaml_port, tf_port


def test_ports_agree_with_the_server_and_each_other():
    # The image's own default (docker run, local runs); Cloud Run passes its ingress port as $PORT.
    port = facts.rust_default("port")
    assert port == 8080
    dockerfile = read("Dockerfile")
    assert re.findall(r"^EXPOSE\s+(\d+)\s*$", dockerfile, re.MULTILINE) == [str(port)]

    yaml_port, tf_port = ingress_ports()
    assert yaml_port == tf_port
    container = facts.knative_container(facts.service_yaml())
    for probe in ("startupProbe", "livenessProbe"):
        assert container[probe]["httpGet"]["port"] == yaml_port, f"{probe} must reach the server"
    tf_container = facts.tf_ingress_container()
    for probe in ("startup_probe", "liveness_probe"):
        assert facts.tf_value(tf_container[probe][0]["http_get"][0]["port"]) == tf_port


def test_metrics_port_is_where_the_sidecar_scrapes_and_not_the_ingress_port():
    yaml_env = {entry["name"]: entry for entry in facts.knative_container(facts.service_yaml())["env"]}
    tf_env = facts.tf_env(facts.tf_ingress_container())
    assert "METRICS_PORT" in yaml_env and "METRICS_PORT" in tf_env, "both deployments set METRICS_PORT"
    yaml_port = int(yaml_env["METRICS_PORT"]["value"])
    tf_port = int(facts.tf_value(tf_env["METRICS_PORT"]["value"]))
    # The sidecar runs without a RunMonitoring config of its own (checked below), so it scrapes
    # its default port: METRICS_PORT must be that one.
    assert yaml_port == tf_port == facts.SIDECAR_DEFAULT_SCRAPE_PORT
    # Cloud Run exposes only the ingress port: /metrics on another one stays inside the instance.
    assert facts.SIDECAR_DEFAULT_SCRAPE_PORT not in ingress_ports()
    assert "/metrics" in facts.routes()


def test_metrics_sidecar_in_both_deployments():
    doc = facts.service_yaml()
    server = facts.knative_container(doc)
    [sidecar] = facts.knative_sidecars(doc)
    assert sidecar["name"] == "collector"
    assert sidecar["image"].startswith(facts.SIDECAR_IMAGE_REPOSITORY + ":")
    assert not sidecar.get("ports"), "only the ingress container may have ports"
    mounts = [mount["mountPath"].rstrip("/") for mount in sidecar.get("volumeMounts", [])]
    assert facts.SIDECAR_CONFIG_DIR not in mounts, "a RunMonitoring config would move the scrape target"
    assert sidecar["livenessProbe"]["httpGet"]["port"] == facts.SIDECAR_HEALTH_PORT
    # Started after the server is up, so its first scrape finds METRICS_PORT listening.
    annotations = doc["spec"]["template"]["metadata"]["annotations"]
    assert json.loads(annotations["run.googleapis.com/container-dependencies"]) == {"collector": [server["name"]]}

    v = facts.tf_value
    [tf_sidecar] = facts.tf_sidecars()
    assert facts.unquote(tf_sidecar["name"]) == sidecar["name"]
    assert v(tf_sidecar["image"]) == sidecar["image"], "both deployments run the same collector"
    assert "volume_mounts" not in tf_sidecar
    assert [facts.unquote(name) for name in tf_sidecar["depends_on"]] == [
        facts.unquote(facts.tf_ingress_container()["name"])
    ]
    tf_limits = tf_sidecar["resources"][0]["limits"]
    assert {key: v(value) for key, value in tf_limits.items()} == {
        key: str(value) for key, value in sidecar["resources"]["limits"].items()
    }
    assert v(tf_sidecar["resources"][0]["cpu_idle"]) is False
    tf_probe = tf_sidecar["liveness_probe"][0]
    assert v(tf_probe["http_get"][0]["port"]) == sidecar["livenessProbe"]["httpGet"]["port"]
    assert v(tf_probe["http_get"][0]["path"]) == sidecar["livenessProbe"]["httpGet"]["path"]
    assert v(tf_probe["period_seconds"]) == sidecar["livenessProbe"]["periodSeconds"]
    assert v(tf_probe["timeout_seconds"]) == sidecar["livenessProbe"]["timeoutSeconds"]


def test_probe_paths_are_the_servers_routes():
    routes = facts.routes()
    assert {"/readyz", "/healthz"} <= routes
    container = facts.knative_container(facts.service_yaml())
    assert container["startupProbe"]["httpGet"]["path"] == "/readyz"
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    tf_container = facts.tf_resources()["google_cloud_run_v2_service.chat"]["template"][0]["containers"][0]
    assert facts.tf_value(tf_container["startup_probe"][0]["http_get"][0]["path"]) == "/readyz"
    assert facts.tf_value(tf_container["liveness_probe"][0]["http_get"][0]["path"]) == "/healthz"


def test_time_limits_fit_cloud_run():
    timeout = facts.service_yaml()["spec"]["template"]["spec"]["timeoutSeconds"]
    assert timeout == 3600
    tf_template = facts.tf_resources()["google_cloud_run_v2_service.chat"]["template"][0]
    assert facts.tf_value(tf_template["timeout"]) == f"{timeout}s"
    # Streams must end (and clients resume) before Cloud Run cuts the request.
    assert facts.rust_default("ws_max_lifetime_secs") < timeout
    # Cloud Run sends SIGKILL 10 s after SIGTERM.
    assert facts.rust_default("shutdown_grace_secs") < 10


# --- service.yaml and Terraform say the same ---------------------------------------------------


def test_service_yaml_and_terraform_carry_the_same_settings():
    doc = facts.service_yaml()
    annotations = doc["spec"]["template"]["metadata"]["annotations"]
    spec = doc["spec"]["template"]["spec"]
    container = facts.knative_container(doc)

    service = facts.tf_resources()["google_cloud_run_v2_service.chat"]
    template = service["template"][0]
    tf_container = template["containers"][0]
    resources = tf_container["resources"][0]
    v = facts.tf_value

    # What terraform.tfvars decides reaches service.yaml through the output deploy_settings
    # (cloudrun/deploy.sh fills the placeholder from the KEY= line) and the Terraform-owned
    # service through the same variable: one source either way.
    settings = facts.tf_output_expression("deploy_settings")
    for yaml_value, key, variable, tf_value in (
        (annotations["autoscaling.knative.dev/minScale"], "min_instances", "min_instances",
         template["scaling"][0]["min_instance_count"]),
        (annotations["autoscaling.knative.dev/maxScale"], "max_instances", "max_instances",
         template["scaling"][0]["max_instance_count"]),
        (spec["containerConcurrency"], "concurrency", "concurrency", template["max_instance_request_concurrency"]),
        (container["resources"]["limits"]["cpu"], "cpu", "cpu", resources["limits"]["cpu"]),
        (container["resources"]["limits"]["memory"], "memory", "memory", resources["limits"]["memory"]),
    ):
        assert yaml_value == "${" + key.upper() + "}", f"service.yaml must take {key} from terraform"
        assert f'"{key}=${{var.{variable}}}"' in settings or f'"{key}=${{jsonencode(var.{variable})}}"' in settings
        assert tf_value == f"${{var.{variable}}}"
    yaml_env = {entry["name"]: entry for entry in container["env"]}
    assert yaml_env["RUST_LOG"]["value"] == "${RUST_LOG}"
    assert '"rust_log=${jsonencode(var.rust_log)}"' in settings
    assert facts.tf_env(tf_container)["RUST_LOG"]["value"] == "${var.rust_log}"

    assert annotations["run.googleapis.com/cpu-throttling"] == "false"
    assert v(resources["cpu_idle"]) is False
    assert annotations["run.googleapis.com/startup-cpu-boost"] == "true"
    assert v(resources["startup_cpu_boost"]) is True
    assert annotations["run.googleapis.com/sessionAffinity"] == "true"
    assert v(template["session_affinity"]) is True
    assert annotations["run.googleapis.com/execution-environment"] == "gen2"
    assert v(template["execution_environment"]) == "EXECUTION_ENVIRONMENT_GEN2"

    for yaml_probe, tf_probe in (("startupProbe", "startup_probe"), ("livenessProbe", "liveness_probe")):
        probe = container[yaml_probe]
        tf_settings = tf_container[tf_probe][0]
        for yaml_key, tf_key in (
            ("periodSeconds", "period_seconds"),
            ("timeoutSeconds", "timeout_seconds"),
            ("failureThreshold", "failure_threshold"),
        ):
            assert probe[yaml_key] == v(tf_settings[tf_key]), f"{yaml_probe}.{yaml_key}"

    # Names: service.yaml derives them from ${SERVICE}, Terraform from var.service_name.
    service_name = v(facts.tf_variables()["service_name"]["default"])
    assert spec["serviceAccountName"] == "${SERVICE}-run@${PROJECT_ID}.iam.gserviceaccount.com"
    account = facts.tf_resources()["google_service_account.run"]
    assert v(account["account_id"]) == f"{service_name}-run"
    yaml_env = {entry["name"]: entry for entry in container["env"]}
    assert yaml_env["REDIS_URL"]["valueFrom"]["secretKeyRef"] == {"name": "${SERVICE}-redis-url", "key": "latest"}
    assert v(facts.tf_resources()["google_secret_manager_secret.redis_url"]["secret_id"]) == f"{service_name}-redis-url"
    assert v(facts.tf_resources()["google_secret_manager_secret.redis_ca"]["secret_id"]) == f"{service_name}-redis-ca"
    volume = spec["volumes"][0]["secret"]
    assert volume["secretName"] == "${SERVICE}-redis-ca"
    tf_env = {facts.unquote(env["name"]): env for env in facts.hcl_blocks(tf_container, "env")}
    assert yaml_env["GOOGLE_CLOUD_PROJECT"]["value"] == "${PROJECT_ID}"
    assert tf_env["GOOGLE_CLOUD_PROJECT"]["value"] == "${var.project_id}"

    # Direct VPC egress into the service's own network, private ranges only.
    interfaces = annotations["run.googleapis.com/network-interfaces"]
    assert '"network":"${SERVICE}"' in interfaces and '"subnetwork":"${SERVICE}"' in interfaces
    assert annotations["run.googleapis.com/vpc-access-egress"] == "private-ranges-only"
    vpc = facts.hcl_blocks(template, "vpc_access")[0]
    assert v(vpc["egress"]) == "PRIVATE_RANGES_ONLY"
    network = facts.tf_resources()["google_compute_network.chat"]
    assert v(network["name"]) == service_name
    assert v(facts.tf_resources()["google_compute_subnetwork.chat"]["name"]) == service_name


# --- Issue 16 -----------------------------------------------------------------------------------


def test_startup_probe_allows_several_minutes_in_both():
    """Issue 16, item 2: Direct VPC egress can take a minute or more to connect a new instance;
    the probes allowed 60 s. Cloud Run's startup window (failureThreshold x periodSeconds) is at
    most 240 s, and a probe's timeout must be below its period."""
    probe = facts.knative_container(facts.service_yaml())["startupProbe"]
    window = probe["failureThreshold"] * probe["periodSeconds"]
    assert 180 <= window <= 240, f"service.yaml's startup window is {window} s"
    assert probe["timeoutSeconds"] < probe["periodSeconds"] <= 240
    tf_probe = facts.tf_ingress_container()["startup_probe"][0]
    v = facts.tf_value
    assert v(tf_probe["failure_threshold"]) * v(tf_probe["period_seconds"]) == window
    assert v(tf_probe["timeout_seconds"]) == probe["timeoutSeconds"]


def test_memorystore_tls_is_verified_by_chain_in_both():
    """Issue 16, item 1 (deploy side): Memorystore's certificate names its IP in the CN only,
    so both deployments set REDIS_TLS_VERIFY=chain, with Memorystore only."""
    yaml_text = facts.service_yaml_text()
    assert re.search(r"- name: REDIS_TLS_VERIFY # memorystore\n\s+value: chain # memorystore\n", yaml_text)
    [block] = [
        block for block in facts.hcl_dynamic(facts.tf_ingress_container(), "env")
        if facts.unquote(block["content"][0]["name"]) == "REDIS_TLS_VERIFY"
    ]
    assert block["for_each"] == "${local.memorystore ? [1] : []}"
    assert facts.tf_value(block["content"][0]["value"]) == "chain"
    assert '"REDIS_TLS_VERIFY"' in facts.tf_variables()["extra_env"]["validation"][0]["condition"]


def test_public_access_is_the_same_switch_in_both():
    """Issue 16, item 4: no allUsers binding anywhere; the invoker IAM check is off when
    allow_unauthenticated is true, in the YAML (annotation) as in Terraform."""
    yaml_text = facts.service_yaml_text()
    assert re.search(r'^  annotations:\n(?:    .*\n)*?    run.googleapis.com/invoker-iam-disabled: "true" # public$',
                     yaml_text, re.MULTILINE), "the service's own metadata.annotations, marked # public"
    assert facts.tf_service()["invoker_iam_disabled"] == "${var.allow_unauthenticated}"
    assert '"public=${var.allow_unauthenticated}"' in facts.tf_output_expression("deploy_settings")
    for text in (read("terraform/main.tf"), yaml_text, read("cloudrun/deploy.sh")):
        assert '"allUsers"' not in text and "--member allUsers" not in text
        assert "add-iam-policy-binding" not in text


def test_redis_cluster_only_with_a_cluster_in_both():
    """Issue 18 (deploy side): REDIS_CLUSTER=true reaches the server from either owner of the
    service exactly when terraform's redis_mode is "cluster" (deploy.sh keeps the lines marked
    "# cluster" only then), next to the CA and REDIS_TLS_VERIFY it shares with the instance."""
    yaml_text = facts.service_yaml_text()
    assert re.search(r'- name: REDIS_CLUSTER # cluster\n\s+value: "true" # cluster\n', yaml_text)
    assert 'value: "true" # cluster' in yaml_text and yaml_text.count("# cluster\n") == 2
    [block] = [
        block for block in facts.hcl_dynamic(facts.tf_ingress_container(), "env")
        if facts.unquote(block["content"][0]["name"]) == "REDIS_CLUSTER"
    ]
    assert block["for_each"] == "${local.redis_cluster ? [1] : []}"
    assert facts.tf_locals()["redis_cluster"] == '${var.redis_mode == "cluster"}'
    script = read("cloudrun/deploy.sh")
    assert '*" # cluster") [ "$redis_mode" = "cluster" ] || continue ;;' in script
