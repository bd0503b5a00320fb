"""What the repository says about itself, read from its files: the environment variables the
server reads, the ones the README documents, its routes and defaults; the settings that the
Dockerfile, cloudrun/service.yaml and terraform/ carry. The tests compare these."""

from __future__ import annotations

import json
import re
from functools import lru_cache
from pathlib import Path
from typing import Any

import hcl2
import yaml

from conftest import ROOT, markdown_section, read

ENV_NAME = re.compile(r"^[A-Z][A-Z0-9_]*$")

# Read by the server but declared nowhere in src/config/: the log filter of tracing-subscriber's
# EnvFilter (telemetry/mod.rs).
ALWAYS_READ = {"RUST_LOG"}

# Set by the deployment without being the server's own setting: read by rustls-native-certs (the
# roots behind rediss://), to trust Memorystore's per-instance CA.
TLS_LIBRARY_VARS = {"SSL_CERT_FILE"}

# The contract's variables that the server does not read yet (docs/PROTOCOL.md, "Not
# implemented yet"), which a deployment may already set, or leave unset on purpose, for the
# server that will: e.g. REDIS_CLUSTER with terraform's redis_mode = "cluster" (issue 18). Once
# the server reads one, it leaves that list and is checked like every other.
@lru_cache
def announced_not_read() -> set[str]:
    protocol = read("docs/PROTOCOL.md")
    if not re.search(r"^#+ Not implemented yet\s*$", protocol, re.MULTILINE):
        return set()
    section = markdown_section(protocol, "Not implemented yet")
    return set(re.findall(r"`([A-Z][A-Z0-9]*(?:_[A-Z0-9]+)+)`", section))


# Cloud Run sets these itself and refuses them in a service's env.
CLOUD_RUN_RESERVED = {"PORT", "K_SERVICE", "K_REVISION", "K_CONFIGURATION"}

# The Managed Service for Prometheus sidecar for Cloud Run (GoogleCloudPlatform/run-gmp-sidecar),
# given no RunMonitoring config of its own (a file mounted in SIDECAR_CONFIG_DIR), scrapes
# 0.0.0.0:8080/metrics every 30 s (DefaultRunMonitoringConfig, confgenerator/config.go); it
# answers its own liveness probe on 13133 (entrypoint.go).
SIDECAR_IMAGE_REPOSITORY = "us-docker.pkg.dev/cloud-ops-agents-artifacts/cloud-run-gmp-sidecar/cloud-run-gmp-sidecar"
SIDECAR_DEFAULT_SCRAPE_PORT = 8080
SIDECAR_CONFIG_DIR = "/etc/rungmp"
SIDECAR_HEALTH_PORT = 13133


# --- The server -------------------------------------------------------------------------------


def rust_sources() -> dict[Path, str]:
    return {path: path.read_text(encoding="utf-8") for path in sorted((ROOT / "src").rglob("*.rs"))}


@lru_cache
def config_sources() -> str:
    """src/config/: the `Config` of sections and one file per section."""
    files = sorted((ROOT / "src" / "config").glob("*.rs"))
    assert files, "src/config/ has no Rust files"
    return "\n".join(path.read_text(encoding="utf-8") for path in files)


def macro_bodies(name: str) -> list[str]:
    """The bodies of `name! { … }` invocations in src/config/ (they close on a line of `}`)."""
    return re.findall(rf"^{name}! \{{\n(.*?)^\}}", config_sources(), re.DOTALL | re.MULTILINE)


@lru_cache
def config_sections() -> dict[str, str]:
    """The sections `Config` is made of (`sections!`), as {field: section struct}."""
    [body] = macro_bodies("sections")
    sections = dict(re.findall(r"^\s*(\w+): (\w+),", body, re.MULTILINE))
    assert sections, "`sections!` in src/config/mod.rs declares no sections"
    return sections


@lru_cache
def declared_sections() -> dict[str, set[str]]:
    """Every `section!` struct with its fields as envy reads them (upper case)."""
    found: dict[str, set[str]] = {}
    for body in macro_bodies("section"):
        name = re.search(r"pub struct (\w+)", body)
        assert name, f"a `section!` without a struct: {body[:80]}"
        fields = re.findall(r"^\s*pub (\w+):", body, re.MULTILINE)
        found[name.group(1)] = {field.upper() for field in fields}
    assert found, "src/config/ declares no `section!`"
    return found


@lru_cache
def config_fields() -> set[str]:
    """Every variable `Config` reads: the fields of its sections."""
    sections = declared_sections()
    return {
        field for section in config_sections().values() for field in sections.get(section, set())
    }


@lru_cache
def explicit_env_reads() -> set[str]:
    """Variables read by name anywhere in src/ (std::env::var, var_os, EnvFilter::from_env…)."""
    pattern = re.compile(r'(?:var|var_os|from_env|try_from_env)\(\s*"([A-Z][A-Z0-9_]*)"\s*\)')
    found: set[str] = set()
    for text in rust_sources().values():
        found.update(pattern.findall(text))
    return found


@lru_cache
def server_reads() -> set[str]:
    return config_fields() | explicit_env_reads() | ALWAYS_READ


@lru_cache
def upper_case_literals_in_src() -> set[str]:
    found: set[str] = set()
    for text in rust_sources().values():
        found.update(re.findall(r'"([A-Z][A-Z0-9]*(?:_[A-Z0-9]+)+)"', text))
    return found


@lru_cache
def cargo_dependencies() -> set[str]:
    text = read("Cargo.toml")
    section = re.search(r"^\[dependencies\]\s*$(.*?)(?=^\[)", text, re.MULTILINE | re.DOTALL)
    assert section, "Cargo.toml has no [dependencies]"
    return set(re.findall(r"^([A-Za-z0-9_-]+)\s*=", section.group(1), re.MULTILINE))


def rust_default(field: str) -> int:
    """The literal default written beside a config field: `pub field: T = 8080,`, or inside a
    constructor (`nonzero!(3300)`, `Bounded::new(30)`)."""
    match = re.search(rf"\bpub {field}: [^=\n]+= (?:[\w:]+!?\()?([0-9_]+)\)?,", config_sources())
    assert match, f"src/config/ has no literal default for `{field}`"
    return int(match.group(1).replace("_", ""))


@lru_cache
def routes() -> set[str]:
    text = read("src/http/mod.rs")
    paths = set(re.findall(r'\.route\(\s*"([^"]+)"', text))
    assert paths, "src/http/mod.rs declares no routes"
    return paths


# --- The README -------------------------------------------------------------------------------


@lru_cache
def readme() -> str:
    return read("README.md")


@lru_cache
def readme_config_table() -> set[str]:
    """The variables named in the first column of the table in README "## Configuration"."""
    section = markdown_section(readme(), "Configuration")
    names: set[str] = set()
    # A row may name several variables in its first cell: `A` / `B`.
    for first_cell in re.findall(r"^\|([^|]*)\|", section, re.MULTILINE):
        names.update(re.findall(r"`([A-Z][A-Z0-9_]*)`", first_cell))
    assert names, "README's Configuration section has no table of variables"
    return names


def all_variables() -> set[str]:
    """Everything that any deployment must account for: read by the server or documented."""
    return server_reads() | readme_config_table()


# --- "Env set here" / "Left unset (…)" declarations -------------------------------------------

DECLARATION = re.compile(r"(Env set here|Left unset \(([^)]*)\)):\s*(.+)$")


def declared(text: str) -> tuple[set[str], dict[str, str]]:
    """The declared set variables and the declared unset ones (name -> reason) of a file."""
    declared_set: set[str] = set()
    unset: dict[str, str] = {}
    # A Markdown list item may wrap: indented lines continue the line above.
    lines: list[str] = []
    for line in text.splitlines():
        if lines and re.match(r"^\s{2,}\S", line) and not line.lstrip().startswith(("-", "#")):
            lines[-1] += " " + line.strip()
        else:
            lines.append(line)
    for line in lines:
        match = DECLARATION.search(line)
        if not match:
            continue
        names = []
        for part in re.split(r",(?![^(]*\))", match.group(3)):
            part = re.sub(r"\(.*", "", part)  # drop "(why)" after a name
            found = re.findall(r"\b[A-Z][A-Z0-9_]*[A-Z0-9]\b", part)
            assert len(found) == 1, f"'{part.strip()}' in '{line.strip()}' is not one variable name"
            names.append(found[0])
        if match.group(1) == "Env set here":
            declared_set.update(names)
        else:
            for name in names:
                assert name not in unset, f"{name} is declared unset twice"
                unset[name] = match.group(2)
    return declared_set, unset


# --- cloudrun/service.yaml --------------------------------------------------------------------


@lru_cache
def service_yaml_text() -> str:
    return read("cloudrun/service.yaml")


def service_yaml() -> dict[str, Any]:
    return yaml.safe_load(service_yaml_text())


def knative_containers(doc: dict[str, Any]) -> list[dict[str, Any]]:
    return doc["spec"]["template"]["spec"]["containers"]


def knative_container(doc: dict[str, Any]) -> dict[str, Any]:
    """The server: the ingress container, the only one with ports (Cloud Run allows one)."""
    ingress = [container for container in knative_containers(doc) if container.get("ports")]
    assert len(ingress) == 1, "service.yaml should have exactly one container with ports"
    return ingress[0]


def knative_sidecars(doc: dict[str, Any]) -> list[dict[str, Any]]:
    return [container for container in knative_containers(doc) if not container.get("ports")]


# --- terraform/ -------------------------------------------------------------------------------


def tf_files() -> list[Path]:
    files = sorted((ROOT / "terraform").glob("*.tf"))
    assert files, "terraform/ has no .tf files"
    return files


@lru_cache
def tf(name: str) -> dict[str, Any]:
    with (ROOT / "terraform" / name).open(encoding="utf-8") as handle:
        return hcl2.load(handle)


def unquote(value: Any) -> Any:
    if isinstance(value, str) and len(value) >= 2 and value[0] == value[-1] == '"':
        return value[1:-1]
    return value


def tf_blocks(document: dict[str, Any], kind: str) -> dict[str, dict[str, Any]]:
    """`resource`/`variable`/`output` blocks of a parsed file as {"type.name" or "name": body}."""
    blocks: dict[str, dict[str, Any]] = {}
    for entry in document.get(kind, []):
        for first, body in entry.items():
            first = unquote(first)
            if kind in ("resource", "data"):
                for second, inner in body.items():
                    blocks[f"{first}.{unquote(second)}"] = inner
            else:
                blocks[first] = body
    return blocks


def tf_resources() -> dict[str, dict[str, Any]]:
    resources: dict[str, dict[str, Any]] = {}
    for path in tf_files():
        resources.update(tf_blocks(tf(path.name), "resource"))
    return resources


def tf_variables() -> dict[str, dict[str, Any]]:
    return tf_blocks(tf("variables.tf"), "variable")


def tf_locals() -> dict[str, Any]:
    merged: dict[str, Any] = {}
    for path in tf_files():
        for entry in tf(path.name).get("locals", []):
            merged.update(entry)
    return merged


REFERENCE = re.compile(r"\$\{(var|local)\.(\w+)\}")


def tf_value(value: Any) -> Any:
    """A literal, or `var.x` / `local.x` resolved to the variable's default or the local's
    literal value (recursively inside templates); anything else is returned as written."""
    value = unquote(value)
    if not isinstance(value, str):
        return value
    whole = REFERENCE.fullmatch(value)
    if whole:
        return _reference(whole.group(1), whole.group(2))
    return REFERENCE.sub(lambda m: str(_reference(m.group(1), m.group(2))), value)


def _reference(kind: str, name: str) -> Any:
    if kind == "var":
        variable = tf_variables()[name]
        assert "default" in variable, f"var.{name} has no default"
        return tf_value(variable["default"])
    return tf_value(tf_locals()[name])


LOCAL = re.compile(r"\blocal\.(\w+)\b")


def tf_expression(value: Any, resources: dict[str, Any] | None = None) -> str:
    """A main.tf expression as `terraform console` over variables.tf alone can evaluate it:
    every `local.x` replaced by its own expression (recursively), and every resource address in
    `resources` by the value given for it, written as JSON (which is HCL): a list of the
    objects the provider would return, one per `count`, e.g. `[]` for a resource counted out."""
    if isinstance(value, str) and value.startswith("${") and value.endswith("}"):
        text = value[2:-1]
    elif isinstance(value, str) and value.startswith('"'):
        text = value  # a string (or template) as HCL writes it
    else:
        text = json.dumps(value)
    text = LOCAL.sub(lambda m: f"({tf_expression(tf_locals()[m.group(1)], resources)})", text)
    for address, instances in (resources or {}).items():
        text = re.sub(rf"\b{re.escape(address)}\b", f"({json.dumps(instances)})", text)
    return text


def hcl_dynamic(body: dict[str, Any], name: str) -> list[dict[str, Any]]:
    """The `dynamic "name"` blocks themselves (for_each and content)."""
    return [
        inner
        for dynamic in body.get("dynamic", [])
        for label, inner in dynamic.items()
        if unquote(label) == name
    ]


def hcl_blocks(body: dict[str, Any], name: str) -> list[dict[str, Any]]:
    """Static blocks called `name` plus the `content` of `dynamic "name"` blocks."""
    found = list(body.get(name, []))
    for inner in hcl_dynamic(body, name):
        found.extend(inner["content"])
    return found


def tf_service() -> dict[str, Any]:
    return tf_resources()["google_cloud_run_v2_service.chat"]


def tf_containers() -> list[dict[str, Any]]:
    return hcl_blocks(tf_service()["template"][0], "containers")


def tf_ingress_container() -> dict[str, Any]:
    """The server: the only container with ports, as in service.yaml."""
    ingress = [container for container in tf_containers() if container.get("ports")]
    assert len(ingress) == 1, "the Cloud Run service should have exactly one container with ports"
    return ingress[0]


def tf_sidecars() -> list[dict[str, Any]]:
    return [container for container in tf_containers() if not container.get("ports")]


def tf_env(container: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """A container's env blocks (static and dynamic) by variable name."""
    return {unquote(env["name"]): env for env in hcl_blocks(container, "env")}


def tf_outputs() -> dict[str, dict[str, Any]]:
    return tf_blocks(tf("outputs.tf"), "output")


def tf_output_expression(name: str) -> str:
    """An output's value as a Terraform expression (for `terraform console`)."""
    value = tf_outputs()[name]["value"]
    assert value.startswith("${") and value.endswith("}"), value
    return value[2:-1]
