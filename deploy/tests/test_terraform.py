"""terraform/, checked offline (providers cannot be downloaded here, so no `terraform init` or
`validate`): every .tf file parses (python-hcl2), and the configuration has what the deployment
needs. Where a terraform binary exists, `terraform console` over variables.tf alone (which needs
no provider) evaluates the variables' validations and main.tf's preconditions as Terraform
does. checkov runs separately in scripts/test."""

from __future__ import annotations

import json
import re
from collections.abc import Callable

import hcl2
import pytest

import facts
from conftest import ROOT, markdown_section, read, terraform_console


@pytest.mark.parametrize("path", facts.tf_files(), ids=lambda p: p.name)
def test_every_tf_file_parses(path):
    with path.open(encoding="utf-8") as handle:
        assert isinstance(hcl2.load(handle), dict)


def test_expected_files():
    names = {path.name for path in facts.tf_files()}
    assert {"versions.tf", "variables.tf", "main.tf", "outputs.tf"} <= names
    assert (ROOT / "terraform" / "terraform.tfvars.example").is_file()


def test_google_provider_pinned_to_one_major_version():
    terraform = facts.tf("versions.tf")["terraform"][0]
    providers = terraform["required_providers"][0]
    google = providers["google"]
    assert facts.unquote(google["source"]) == "hashicorp/google"
    match = re.fullmatch(r"~> 6\.(\d+)", facts.unquote(google["version"]))
    assert match, google["version"]
    # google_cloud_run_v2_service's invoker_iam_disabled came with provider 6.8.0.
    assert int(match.group(1)) >= 8, "invoker_iam_disabled needs the google provider 6.8 or later"


def test_variables_have_descriptions_and_validation():
    for name, variable in facts.tf_variables().items():
        description = facts.unquote(variable.get("description", ""))
        assert len(description) > 10, f"var.{name} needs a description"
        if facts.unquote(variable.get("type")) not in ("bool", "${bool}"):
            assert variable.get("validation"), f"var.{name} needs a validation block"


def test_tfvars_example_sets_only_declared_variables_and_every_required_one():
    example = hcl2.loads(read("terraform/terraform.tfvars.example"))
    variables = facts.tf_variables()
    unknown = set(example) - set(variables) - {"__comments__"}
    assert not unknown, f"terraform.tfvars.example sets undeclared {sorted(unknown)}"
    required = {name for name, variable in variables.items() if "default" not in variable}
    assert required <= set(example), f"the example must set {sorted(required - set(example))}"


def resources() -> dict:
    return facts.tf_resources()


def test_required_services_are_enabled():
    services = facts.tf_locals()["services"]
    text = str(services)
    for api in ("run", "artifactregistry", "secretmanager", "cloudbuild", "iam", "compute", "redis", "monitoring"):
        assert f"{api}.googleapis.com" in text, f"{api}.googleapis.com is not enabled"
    assert "google_project_service.apis" in resources()


def test_artifact_registry_repository_with_cleanup_policy():
    repository = resources()["google_artifact_registry_repository.images"]
    assert facts.tf_value(repository["format"]) == "DOCKER"
    policies = repository["cleanup_policies"]
    actions = {facts.tf_value(policy["action"]) for policy in policies}
    assert actions == {"KEEP", "DELETE"}
    assert facts.tf_value(repository["cleanup_policy_dry_run"]) is False


def test_runtime_identity_is_least_privilege():
    text = read("terraform/main.tf")
    # No broad roles anywhere; the only project-level grants are the metrics sidecar's metric
    # writer and the optional trace agent.
    for role in ("roles/owner", "roles/editor", "roles/viewer", "roles/secretmanager.admin",
                 "roles/iam.serviceAccountUser", "roles/iam.serviceAccountTokenCreator"):
        assert role not in text, f"{role} is too broad for the runtime identity"
    project_grants = {k: v for k, v in resources().items() if k.startswith("google_project_iam_")}
    # (cloud_build_builder goes to the build service account, not to the runtime identity.)
    assert set(project_grants) == {"google_project_iam_member.trace_agent", "google_project_iam_member.metric_writer",
                                   "google_project_iam_member.cloud_build_builder"}
    assert "runtime_member" not in str(project_grants["google_project_iam_member.cloud_build_builder"])
    assert facts.tf_value(project_grants["google_project_iam_member.trace_agent"]["count"]) == \
        "${var.grant_cloud_trace_agent ? 1 : 0}"
    assert facts.tf_value(project_grants["google_project_iam_member.metric_writer"]["count"]) == \
        "${var.metrics_sidecar ? 1 : 0}"
    for name in ("redis_url", "redis_ca"):
        binding = resources()[f"google_secret_manager_secret_iam_member.{name}"]
        assert facts.tf_value(binding["role"]) == "roles/secretmanager.secretAccessor"
        assert f"google_secret_manager_secret.{name}" in binding["secret_id"]
    service = resources()["google_cloud_run_v2_service.chat"]
    assert service["template"][0]["service_account"] == "${google_service_account.run.email}"


def test_memorystore_has_auth_and_in_transit_encryption():
    instance = resources()["google_redis_instance.chat"]
    assert facts.tf_value(instance["auth_enabled"]) is True
    assert facts.tf_value(instance["transit_encryption_mode"]) == "SERVER_AUTHENTICATION"
    assert "google_compute_network.chat" in instance["authorized_network"]
    url = facts.tf_locals()["memorystore_url"]
    assert "rediss://:%s@%s:%d" in url, "TLS, so the URL is rediss://"
    assert "auth_string" in url


def test_redis_mode_chooses_memorystore_or_an_external_url():
    variable = facts.tf_variables()["redis_mode"]
    assert facts.tf_value(variable["default"]) == "memorystore"
    # An external URL never passes through Terraform (nor its state): the user adds it.
    assert not any("url" in name for name in facts.tf_variables())
    # What either kind of Memorystore needs: the network, its subnet, the CA and the URL.
    for name in ("google_compute_network.chat", "google_compute_subnetwork.chat",
                 "google_secret_manager_secret.redis_ca", "google_secret_manager_secret_version.redis_ca",
                 "google_secret_manager_secret_version.redis_url"):
        assert facts.tf_value(resources()[name]["count"]) == "${local.memorystore ? 1 : 0}", name
    assert facts.tf_value(resources()["google_redis_instance.chat"]["count"]) == "${local.redis_instance ? 1 : 0}"
    for name in ("google_redis_cluster.chat", "google_network_connectivity_service_connection_policy.redis"):
        assert facts.tf_value(resources()[name]["count"]) == "${local.redis_cluster ? 1 : 0}", name


# --- redis_mode = "cluster": Memorystore for Redis Cluster (issue 18) ---------------------------

MODES = ("memorystore", "cluster", "external")

# What the provider returns (google provider 6.40+, google_redis_cluster and google_redis_instance):
# discovery_endpoints {address, port, psc_config}, managed_server_ca {ca_certs {certificates}}
# (each chain from the issuing CA to the root), server_ca_certs {cert}, host, port, auth_string.
CLUSTER = {
    "discovery_endpoints": [{"address": "10.8.0.5", "port": 6379, "psc_config": [{"network": "n"}]}],
    "managed_server_ca": [{"ca_certs": [
        {"certificates": ["ISSUING-CA-1", "ROOT-CA-1"]},
        {"certificates": ["ISSUING-CA-2", "ROOT-CA-2"]},
    ]}],
}
INSTANCE = {"host": "10.9.0.3", "port": 6378, "auth_string": "a/b+c", "server_ca_certs": [{"cert": "CA-1"}, {"cert": "CA-2"}]}


def provider_values(mode: str) -> dict[str, list]:
    """The resources as `count` leaves them in each mode (none where counted out)."""
    return {
        "google_redis_instance.chat": [INSTANCE] if mode == "memorystore" else [],
        "google_redis_cluster.chat": [CLUSTER] if mode == "cluster" else [],
    }


def evaluate_in(tf_eval, mode: str, value):
    """A main.tf expression as Terraform evaluates it with redis_mode = mode."""
    return tf_eval(facts.tf_expression(value, provider_values(mode)), redis_mode=mode)


def test_redis_mode_validation(console):
    for mode in MODES:
        _, errors = console("var.redis_mode", redis_mode=mode)
        assert "Error" not in errors, errors
    for mode in ("instance", "Cluster", "valkey"):
        _, errors = console("var.redis_mode", redis_mode=mode)
        assert "redis_mode must be" in errors and "cluster" in errors, errors


@pytest.mark.parametrize(
    "variable, good, bad",
    [
        ("redis_cluster_shard_count", [1, 3, 250], [0, 251, 2.5]),
        ("redis_cluster_replica_count", [0, 1, 2], [3, -1]),
        ("redis_cluster_node_type", ["REDIS_SHARED_CORE_NANO", "REDIS_HIGHMEM_XLARGE"], ["redis-standard-small", "e2-small"]),
    ],
)
def test_cluster_size_validation(console, variable, good, bad):
    for value in good:
        _, errors = console(f"var.{variable}", **{variable: value})
        assert "Error" not in errors, (value, errors)
    for value in bad:
        _, errors = console(f"var.{variable}", **{variable: value})
        assert f"{variable} must be" in errors, (value, errors)


def test_which_resources_each_mode_creates(tf_eval):
    """Counted as Terraform counts them: the policy and the cluster only with "cluster", the
    instance only with "memorystore", the network and the CA with either."""
    expected = {
        "google_redis_instance.chat": {"memorystore": 1, "cluster": 0, "external": 0},
        "google_redis_cluster.chat": {"memorystore": 0, "cluster": 1, "external": 0},
        "google_network_connectivity_service_connection_policy.redis": {"memorystore": 0, "cluster": 1, "external": 0},
        "google_compute_subnetwork.chat": {"memorystore": 1, "cluster": 1, "external": 0},
        "google_secret_manager_secret_version.redis_ca": {"memorystore": 1, "cluster": 1, "external": 0},
        "google_secret_manager_secret_version.redis_url": {"memorystore": 1, "cluster": 1, "external": 0},
    }
    for name, counts in expected.items():
        for mode, count in counts.items():
            assert evaluate_in(tf_eval, mode, resources()[name]["count"]) == count, (name, mode)


def test_cluster_has_in_transit_encryption_and_its_network_plumbing():
    cluster = resources()["google_redis_cluster.chat"]
    v = facts.tf_value
    assert v(cluster["transit_encryption_mode"]) == "TRANSIT_ENCRYPTION_MODE_SERVER_AUTHENTICATION"
    # IAM authentication's password is a short-lived access token, which REDIS_URL cannot hold.
    assert v(cluster["authorization_mode"]) == "AUTH_MODE_DISABLED"
    assert cluster["shard_count"] == "${var.redis_cluster_shard_count}"
    assert cluster["replica_count"] == "${var.redis_cluster_replica_count}"
    assert cluster["node_type"] == "${var.redis_cluster_node_type}"
    assert cluster["region"] == "${var.region}"
    assert cluster["deletion_protection_enabled"] == "${var.deletion_protection}"
    [psc] = cluster["psc_configs"]
    assert psc["network"] == "${google_compute_network.chat[0].id}"
    # The policy is what lets the cluster create its endpoints: it must exist first.
    assert "${google_network_connectivity_service_connection_policy.redis}" in cluster["depends_on"]
    [persistence] = facts.hcl_dynamic(cluster, "persistence_config")
    assert persistence["for_each"] == "${var.redis_rdb_snapshot_period == null ? [] : [var.redis_rdb_snapshot_period]}"
    assert v(persistence["content"][0]["mode"]) == "RDB"

    policy = resources()["google_network_connectivity_service_connection_policy.redis"]
    assert v(policy["service_class"]) == "gcp-memorystore-redis"
    assert policy["location"] == "${var.region}"
    assert policy["network"] == psc["network"], "the policy is on the network the cluster's endpoints go to"
    # ... and puts them in the subnet the service's Direct VPC egress sends from.
    [interface] = facts.hcl_blocks(facts.hcl_blocks(facts.tf_service()["template"][0], "vpc_access")[0], "network_interfaces")
    assert policy["psc_config"][0]["subnetworks"] == [interface["subnetwork"]] == ["${google_compute_subnetwork.chat[0].id}"]
    vpc = facts.hcl_dynamic(facts.tf_service()["template"][0], "vpc_access")[0]
    assert vpc["for_each"] == "${local.memorystore ? [1] : []}", "cluster mode reaches Redis through the VPC too"


def test_the_cluster_needs_its_apis(tf_eval):
    expression = facts.tf_locals()["services"]
    for mode in MODES:
        services = set(evaluate_in(tf_eval, mode, expression))
        cluster_apis = {"networkconnectivity.googleapis.com", "serviceconsumermanagement.googleapis.com"}
        assert (cluster_apis <= services) == (mode == "cluster"), (mode, services)
        assert ("redis.googleapis.com" in services) == (mode != "external"), mode
        assert ("compute.googleapis.com" in services) == (mode != "external"), mode


def test_redis_url_and_ca_as_terraform_computes_them(tf_eval):
    """REDIS_URL and SSL_CERT_FILE's content in each mode, from what the provider returns:
    the cluster's discovery endpoint over TLS without a password, and every certificate of its
    managed CA chains; the instance's as before."""
    url, ca = facts.tf_locals()["memorystore_url"], facts.tf_locals()["memorystore_ca"]
    assert evaluate_in(tf_eval, "cluster", url) == "rediss://10.8.0.5:6379"
    assert evaluate_in(tf_eval, "cluster", ca).split("\n") == ["ISSUING-CA-1", "ROOT-CA-1", "ISSUING-CA-2", "ROOT-CA-2"]
    assert evaluate_in(tf_eval, "memorystore", url) == "rediss://:a%2Fb%2Bc@10.9.0.3:6378"
    assert evaluate_in(tf_eval, "memorystore", ca) == "CA-1\nCA-2"
    assert evaluate_in(tf_eval, "external", url) is None
    assert evaluate_in(tf_eval, "external", ca) is None
    secrets = resources()
    assert secrets["google_secret_manager_secret_version.redis_url"]["secret_data"] == "${local.memorystore_url}"
    assert secrets["google_secret_manager_secret_version.redis_ca"]["secret_data"] == "${local.memorystore_ca}"


def test_redis_host_output_in_each_mode(tf_eval):
    value = facts.tf_outputs()["redis_host"]["value"]
    assert evaluate_in(tf_eval, "cluster", value) == "10.8.0.5:6379"
    assert evaluate_in(tf_eval, "memorystore", value) == "10.9.0.3:6378"
    assert evaluate_in(tf_eval, "external", value) is None


def test_service_env_in_each_mode(tf_eval):
    """REDIS_CLUSTER=true only in cluster mode; the CA (SSL_CERT_FILE, its volume) and
    REDIS_TLS_VERIFY=chain with either kind of Memorystore."""
    container = facts.tf_ingress_container()
    dynamic = {facts.unquote(block["content"][0]["name"]): block for block in facts.hcl_dynamic(container, "env")}
    assert facts.unquote(dynamic["REDIS_CLUSTER"]["content"][0]["value"]) == "true"
    present = {
        name: {mode: len(evaluate_in(tf_eval, mode, dynamic[name]["for_each"])) for mode in MODES}
        for name in ("REDIS_CLUSTER", "SSL_CERT_FILE", "REDIS_TLS_VERIFY")
    }
    assert present == {
        "REDIS_CLUSTER": {"memorystore": 0, "cluster": 1, "external": 0},
        "SSL_CERT_FILE": {"memorystore": 1, "cluster": 1, "external": 0},
        "REDIS_TLS_VERIFY": {"memorystore": 1, "cluster": 1, "external": 0},
    }
    [mount] = facts.hcl_dynamic(container, "volume_mounts")
    assert len(evaluate_in(tf_eval, "cluster", mount["for_each"])) == 1
    # Set here, so extra_env may not set it behind redis_mode's back.
    assert '"REDIS_CLUSTER"' in facts.tf_variables()["extra_env"]["validation"][0]["condition"]


def test_deploy_settings_carry_the_cluster_mode(tf_eval):
    lines = tf_eval(facts.tf_output_expression("deploy_settings"), redis_mode="cluster").splitlines()
    assert "redis_mode=cluster" in lines


def test_public_access_only_when_asked():
    """Issue 16, item 4: invoker_iam_disabled, not an allUsers binding (which organisations
    with domain-restricted sharing refuse)."""
    assert facts.tf_service()["invoker_iam_disabled"] == "${var.allow_unauthenticated}"
    assert facts.tf_value(facts.tf_variables()["allow_unauthenticated"]["default"]) is False
    assert not [name for name in resources() if "_iam_" in name and "run_v2_service" in name]
    assert '"allUsers"' not in read("terraform/main.tf")


def test_the_cloud_build_service_account_may_get_its_builder_role():
    """Issue 16, item 7: newer projects build as the Compute Engine default service account,
    which may hold no role; named, Terraform grants it the builder role."""
    grant = resources()["google_project_iam_member.cloud_build_builder"]
    assert facts.tf_value(grant["role"]) == "roles/cloudbuild.builds.builder"
    assert facts.unquote(grant["member"]) == "serviceAccount:${var.cloud_build_service_account}"
    assert facts.unquote(grant["count"]) == "${var.cloud_build_service_account == null ? 0 : 1}"
    assert facts.tf_variables()["cloud_build_service_account"]["default"] is None


def test_cloud_build_service_account_validation(tf_eval):
    assert tf_eval("var.cloud_build_service_account", cloud_build_service_account="123456789012-compute@developer.gserviceaccount.com")
    assert tf_eval("var.cloud_build_service_account == null") is True


def test_one_owner_for_the_service():
    """Issue 16, item 3: image_tag decides who owns the service, and the outputs say so to
    cloudrun/deploy.sh, which reads every setting from deploy_settings."""
    outputs = facts.tf_outputs()
    assert outputs["service_owner"]["value"] == '${local.manage_service ? "terraform" : "deploy.sh"}'
    assert facts.tf_locals()["manage_service"] == "${var.image_tag != null}"
    settings = facts.tf_output_expression("deploy_settings")
    assert '"owner=${var.image_tag == null ? \"deploy.sh\" : \"terraform\"}"' in settings or \
        "owner=${var.image_tag == null ?" in settings
    # Every variable that shapes the Cloud Run service reaches deploy.sh's service too.
    for variable in ("project_id", "region", "service_name", "redis_mode", "min_instances", "max_instances",
                     "concurrency", "cpu", "memory", "rust_log", "allowed_origins", "allow_unauthenticated",
                     "metrics_sidecar"):
        assert f"var.{variable}" in settings, f"deploy_settings lacks var.{variable}"
    # extra_env and auth reach it through env.tf's server_env, as they reach terraform's service.
    assert "local.server_env" in settings, "deploy_settings lacks local.server_env"
    server_env = facts.tf_locals()["server_env"]
    assert "var.extra_env" in server_env and "local.auth_env" in server_env, server_env
    assert "var.auth" in facts.tf_locals()["auth_env"]


def test_deploy_settings_as_terraform_computes_them(tf_eval):
    expression = facts.tf_output_expression("deploy_settings")
    lines = tf_eval(expression).splitlines()
    assert "owner=deploy.sh" in lines and "redis_mode=memorystore" in lines and "public=false" in lines
    lines = tf_eval(expression, image_tag="v3", extra_env={"HISTORY_LIMIT": "5000"}).splitlines()
    assert "owner=terraform" in lines
    assert 'env={"name":"HISTORY_LIMIT","value":"5000"}' in lines


def test_deploy_settings_refuse_a_public_service_without_origins():
    """The rule lives on the output deploy.sh reads, which every plan evaluates, so a service
    owned by either side is held to it; the service carries no second copy to drift."""
    assert public_origins_precondition()["condition"]
    assert "lifecycle" not in facts.tf_service(), "the service's rules are the output's preconditions"


def test_teardown_succeeds_on_a_second_destroy():
    """Issue 16, item 8: Cloud Run keeps a Direct VPC egress subnet's addresses for 1-2 hours
    after the service stops using it, so the first destroy stops at the subnet; the README says
    so, and says to run it again. Nothing else may be left that a second destroy would trip on:
    the only resources in the subnet's way are Cloud Run's, and a deploy.sh-owned service must
    be deleted first (Terraform does not know it)."""
    section = markdown_section(read("README.md"), "Deploy to Google Cloud")
    teardown = section[section.index("**Tear it down.**"):]
    assert "1-2 hours" in teardown or "1–2 hours" in teardown
    assert teardown.count("terraform destroy") >= 2
    assert "cloudrun/deploy.sh --delete" in teardown and "gcloud run services delete" in teardown
    assert "deletion_protection=false" in teardown
    # Nothing stops the network from going once the subnet has: no peering or address of ours
    # remains in it (Memorystore's DIRECT_PEERING goes with the instance).
    names = set(resources())
    assert not {name for name in names if name.startswith(("google_compute_global_address", "google_service_networking"))}


# --- The metrics sidecar ----------------------------------------------------------------------


def test_metrics_sidecar_is_optional_on_by_default_and_may_write():
    variable = facts.tf_variables()["metrics_sidecar"]
    assert facts.tf_value(variable["default"]) is True
    assert "money" in facts.tf_value(variable["description"]), "say what it costs"
    [sidecar] = [
        block for block in facts.hcl_dynamic(facts.tf_service()["template"][0], "containers")
        if facts.unquote(block["content"][0]["name"]) == "collector"
    ]
    assert sidecar["for_each"] == "${var.metrics_sidecar ? [1] : []}"
    # Managed Service for Prometheus writes to Cloud Monitoring, with the service's identity.
    grant = resources()["google_project_iam_member.metric_writer"]
    assert facts.tf_value(grant["role"]) == "roles/monitoring.metricWriter"
    assert grant["member"] == "${local.runtime_member}"
    assert 'var.metrics_sidecar ? ["monitoring.googleapis.com"] : []' in facts.tf_locals()["services"]
    assert "${google_project_iam_member.metric_writer}" in facts.tf_service()["depends_on"]


# --- ALLOWED_ORIGINS ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def console(tmp_path_factory) -> Callable[..., tuple[str, str]]:
    """Evaluates an expression with `terraform console` over a copy of variables.tf, given
    values for the variables: Terraform's own evaluation, validations included. Returns the
    value printed and the errors (console exits with 0 either way), whitespace collapsed."""
    run = terraform_console(tmp_path_factory, "variables-only")

    def evaluate(expression: str, **variables) -> tuple[str, str]:
        # A string variable takes its value as it is; JSON lists, numbers and bools are HCL.
        assignments = ["project_id=my-project-1"] + [
            f"{name}={value if isinstance(value, str) else json.dumps(value)}" for name, value in variables.items()
        ]
        result = run(assignments, expression)
        assert result.returncode == 0, result.stderr
        return " ".join(result.stdout.split()), " ".join(result.stderr.split())

    return evaluate


def public_origins_precondition() -> dict:
    rules = facts.tf_outputs()["deploy_settings"]["precondition"]
    found = [
        rule for rule in rules
        if "var.allow_unauthenticated" in rule["condition"] and "var.allowed_origins" in rule["condition"]
    ]
    assert len(found) == 1, "deploy_settings needs one precondition tying allowed_origins to allow_unauthenticated"
    return found[0]


def test_allowed_origins_required_when_public():
    variable = facts.tf_variables()["allowed_origins"]
    assert variable["default"] == [], "optional for a private service"
    rule = public_origins_precondition()
    assert "allowed_origins" in rule["error_message"] and "allow_unauthenticated" in rule["error_message"]
    # Terraform < 1.9 refuses a validation that reads another variable: versions.tf allows 1.5.
    assert facts.unquote(facts.tf("versions.tf")["terraform"][0]["required_version"]) == ">= 1.5"


def test_allowed_origins_precondition_as_terraform_evaluates_it(console):
    condition = public_origins_precondition()["condition"]
    assert condition.startswith("${") and condition.endswith("}")
    outcomes = {}
    for public in (True, False):
        for origins in ([], ["https://chat.example.com"]):
            value, errors = console(condition[2:-1], allow_unauthenticated=public, allowed_origins=origins)
            assert "Error" not in errors, errors
            outcomes[(public, bool(origins))] = value
    assert outcomes == {
        (True, False): "false",  # public with every origin allowed: plan fails
        (True, True): "true",
        (False, False): "true",
        (False, True): "true",
    }


@pytest.mark.parametrize(
    "origins, valid",
    [
        (["https://chat.example.com"], True),
        (["https://chat.example.com", "http://localhost:3000"], True),
        (["https://chat.example.com/"], False),
        (["https://chat.example.com/app"], False),
        (["chat.example.com"], False),
        (["https://a.example.com,https://b.example.com"], False),
    ],
)
def test_allowed_origins_validation(console, origins, valid):
    _, errors = console("var.allowed_origins", allowed_origins=origins)
    if valid:
        assert "Error" not in errors, errors
    else:
        assert "allowed_origins must hold origins" in errors, errors


def test_allowed_origins_reach_the_server_only_when_set():
    container = facts.tf_ingress_container()
    [block] = [
        block for block in facts.hcl_dynamic(container, "env")
        if facts.unquote(block["content"][0]["name"]) == "ALLOWED_ORIGINS"
    ]
    assert block["for_each"] == '${length(var.allowed_origins) > 0 ? [join(",", var.allowed_origins)] : []}'
    assert block["content"][0]["value"] == "${env.value}"
    # extra_env may not set it behind the variable's back (nor METRICS_PORT behind the sidecar's).
    extra = facts.tf_variables()["extra_env"]["validation"][0]["condition"]
    assert '"ALLOWED_ORIGINS"' in extra and '"METRICS_PORT"' in extra


def test_tfvars_example_is_public_with_origins():
    example = hcl2.loads(read("terraform/terraform.tfvars.example"))
    assert example["allow_unauthenticated"] is True
    assert example["allowed_origins"], "the example's public service must list its origins"


def test_deletion_protection_comes_from_a_documented_variable():
    service = resources()["google_cloud_run_v2_service.chat"]
    assert service["deletion_protection"] == "${var.deletion_protection}"
    description = facts.tf_value(facts.tf_variables()["deletion_protection"]["description"])
    assert "v6" in description and "destroy" in description


def test_outputs():
    outputs = facts.tf_blocks(facts.tf("outputs.tf"), "output")
    assert {"service_url", "repository", "image"} <= set(outputs)
    for name, output in outputs.items():
        assert output.get("description"), f"output {name} needs a description"
    text = read("terraform/outputs.tf")
    for secret in ("auth_string", "memorystore_url", "secret_data"):
        assert secret not in text, f"outputs must not reveal {secret}"


def test_every_checkov_skip_gives_its_reason():
    skip = re.compile(r"#\s*checkov:skip=([A-Z0-9_]+)(?::(.*))?")
    found = 0
    for path in [*facts.tf_files(), ROOT / "Dockerfile", *sorted((ROOT / "cloudrun").iterdir())]:
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            match = skip.search(line)
            if not match:
                continue
            found += 1
            check, reason = match.group(1), (match.group(2) or "").strip()
            assert re.fullmatch(r"CKV2?_[A-Z]+_\d+", check), f"{path.name}:{number}: {check}"
            assert len(reason) >= 40, f"{path.name}:{number}: skipping {check} needs a real reason"
    assert found, "no checkov skips found: if none are needed any more, drop this test"


def test_readme_names_what_the_deploying_identity_needs():
    """Issue 16, item 7: the roles the identity running deploy.sh needs are written down, in
    the README and in deploy.sh --help."""
    section = markdown_section(read("README.md"), "Deploy to Google Cloud")
    usage = read("cloudrun/deploy.sh")
    for role in ("roles/run.admin", "roles/artifactregistry.writer", "roles/cloudbuild.builds.editor",
                 "roles/iam.serviceAccountUser"):
        assert role in section, f"README's deploy section does not name {role}"
        assert role in usage, f"deploy.sh --help does not name {role}"
    assert "cloud_build_service_account" in section and "roles/cloudbuild.builds.builder" in section
