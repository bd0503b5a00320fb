"""Shared helpers for the deploy checks (run by scripts/test with .venv-ci/main's pytest).

Everything here reads the repository as it is: the server's sources for what it reads and
serves, and the deploy files for what they set, so a change on either side shows up as a
failing test rather than as a silent drift.
"""

from __future__ import annotations

import re
import socket
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def read(relative: str) -> str:
    return (ROOT / relative).read_text(encoding="utf-8")


def free_port() -> int:
    """A TCP port that was free a moment ago on every local address."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("0.0.0.0", 0))
        return sock.getsockname()[1]


def markdown_section(text: str, heading: str) -> str:
    """The body of the `## heading` section (up to the next heading of the same or a higher level)."""
    lines = text.splitlines(keepends=True)
    body: list[str] = []
    level = 0
    fenced = False
    for line in lines:
        if line.startswith("```"):
            fenced = not fenced
        heading_match = None if fenced else re.match(r"^(#+) (.*?)\s*$", line)
        if level == 0:
            if heading_match and heading_match.group(2) == heading:
                level = len(heading_match.group(1))
            continue
        if heading_match and len(heading_match.group(1)) <= level:
            break
        body.append(line)
    assert level, f"README has no section '{heading}'"
    return "".join(body)


@pytest.fixture(scope="session")
def root() -> Path:
    return ROOT


def terraform_console(tmp_path_factory, name: str):
    """A copy of terraform/variables.tf and env.tf, initialised offline (no provider needed), and a
    function running `terraform console` over it with the given `-var` arguments and input:
    Terraform's own evaluation of variables, validations and expressions. Skips the test when no
    terraform binary is installed (none is installable; the parsed checks still run)."""
    import os
    import shutil
    import subprocess

    terraform = shutil.which("terraform")
    if not terraform:
        pytest.skip("no terraform binary here: the checks that need Terraform's evaluation skip")
    directory = tmp_path_factory.mktemp(name)
    shutil.copy(ROOT / "terraform" / "variables.tf", directory)
    # The locals outputs.tf's deploy_settings reads (no resources, so no provider needed).
    shutil.copy(ROOT / "terraform" / "env.tf", directory)
    (directory / "empty.tfrc").write_text("")
    env = {**os.environ, "CHECKPOINT_DISABLE": "1", "TF_IN_AUTOMATION": "1", "TF_INPUT": "0",
           "TF_CLI_CONFIG_FILE": str(directory / "empty.tfrc")}
    subprocess.run([terraform, "init", "-backend=false"], cwd=directory, env=env, check=True,
                   capture_output=True, timeout=120)

    def run(variables: list[str], expression: str) -> subprocess.CompletedProcess:
        args = [terraform, "console", "-no-color"]
        for assignment in variables:
            args += ["-var", assignment]
        return subprocess.run(args, input=expression + "\n", cwd=directory, env=env,
                              capture_output=True, text=True, timeout=120)

    return run


@pytest.fixture(scope="session")
def tf_eval(tmp_path_factory):
    """Evaluates an expression over terraform/variables.tf with `terraform console`, given
    values for the variables, and returns its value decoded from JSON: what Terraform itself
    computes, e.g. the output deploy_settings that cloudrun/deploy.sh reads."""
    import json

    console = terraform_console(tmp_path_factory, "tf-eval")

    def evaluate(expression: str, **variables):
        variables.setdefault("project_id", "my-project-1")
        # A string variable takes its value as it is; lists, maps, numbers and bools as HCL
        # (which their JSON is).
        assignments = [
            f"{name}={value if isinstance(value, str) else json.dumps(value)}"
            for name, value in variables.items()
        ]
        result = console(assignments, f"jsonencode({expression})")
        assert result.returncode == 0 and "Error" not in result.stderr, result.stderr
        return json.loads(json.loads(result.stdout))

    return evaluate
