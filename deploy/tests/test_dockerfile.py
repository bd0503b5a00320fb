"""The Dockerfile, read as docker would (no engine runs here, so nothing is built): a cached
dependency layer, `cargo build --release --locked`, and a final stage that holds only the binary
and runs it as a non-root user; .dockerignore keeps the context to what the build copies.
hadolint (run by scripts/test) lints it; the server binary is exercised the container's way in
test_server_binary.py."""

from __future__ import annotations

import fnmatch
import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from conftest import ROOT, read


def instructions(text: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, continuation lines joined, comments dropped."""
    result: list[tuple[str, str]] = []
    pending = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not pending and (not line or line.startswith("#")):
            continue
        if line.startswith("#"):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        line = pending + line
        pending = ""
        keyword, _, arguments = line.partition(" ")
        result.append((keyword.upper(), arguments.strip()))
    assert not pending, "the Dockerfile ends inside a continued line"
    return result


def stages() -> list[list[tuple[str, str]]]:
    result: list[list[tuple[str, str]]] = []
    for keyword, arguments in instructions(read("Dockerfile")):
        if keyword == "FROM":
            result.append([])
        if result:
            result[-1].append((keyword, arguments))
    return result


def test_multi_stage_with_pinned_bases():
    all_stages = stages()
    assert len(all_stages) >= 2, "build and runtime stages"
    args = dict(
        arguments.split("=", 1)
        for keyword, arguments in instructions(read("Dockerfile"))
        if keyword == "ARG" and "=" in arguments
    )
    for stage in all_stages:
        image = stage[0][1].split()[0]
        image = re.sub(r"\$\{(\w+)\}", lambda m: args[m.group(1)], image)
        name, _, tag = image.rpartition(":")
        assert name and tag and tag != "latest", f"base image '{image}' must have a fixed tag"


def test_dependencies_are_built_in_their_own_layer_before_the_sources_arrive():
    build = stages()[0]
    copies = [arguments for keyword, arguments in build if keyword == "COPY"]
    runs = [arguments for keyword, arguments in build if keyword == "RUN"]
    assert copies[0].split() == ["Cargo.toml", "Cargo.lock", "./"], "manifest and lockfile first"
    assert copies[1].split()[0] == "src", "then the sources"
    assert len(runs) == 2
    assert "cargo build --release --locked" in runs[0], "the dependency layer"
    assert "cargo build --release --locked" in runs[1], "the crate"
    # Between the two builds the sources must look newer than the skeleton's build, or cargo
    # would keep the skeleton's empty binary.
    assert re.search(r"touch", runs[1].split("cargo build")[0])


def test_final_stage_holds_only_the_binary_and_runs_unprivileged():
    final = stages()[-1]
    base = final[0][1].split()[0]
    assert base.startswith(("gcr.io/distroless/cc", "debian:")), base
    if base.startswith("debian:"):
        assert "slim" in base
    keywords = [keyword for keyword, _ in final[1:]]
    assert "RUN" not in keywords, "nothing is installed or built in the runtime stage"
    copies = [arguments for keyword, arguments in final if keyword == "COPY"]
    assert len(copies) == 1 and copies[0].startswith("--from="), "only the binary, from the build stage"
    assert copies[0].split()[1] == "/chat-server"
    users = [arguments for keyword, arguments in final if keyword == "USER"]
    assert users, "the runtime stage sets a USER"
    user = users[-1].split(":")[0]
    assert user not in ("0", "root"), "not root"
    entrypoint = [arguments for keyword, arguments in final if keyword == "ENTRYPOINT"]
    assert entrypoint and json.loads(entrypoint[-1]) == ["/usr/local/bin/chat-server"], (
        "exec form, so the server is PID 1 and receives SIGTERM itself"
    )


def dockerignore_patterns() -> list[tuple[bool, str]]:
    patterns = []
    for line in read(".dockerignore").splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        negated = line.startswith("!")
        patterns.append((negated, line.lstrip("!").strip("/")))
    return patterns


def in_context(path: str) -> bool:
    """Whether docker sends `path` (relative, '/'-separated) with the build context: the last
    pattern matching the path or one of its parent directories decides."""
    included = True
    parts = path.split("/")
    prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    for negated, pattern in dockerignore_patterns():
        if any(fnmatch.fnmatchcase(prefix, pattern) for prefix in prefixes):
            included = negated
    return included


def test_dockerignore_sends_only_what_the_build_copies():
    tracked = subprocess.run(
        ["git", "ls-files"], cwd=ROOT, check=True, capture_output=True, text=True
    ).stdout.split()
    sent = {path for path in tracked if in_context(path)}
    for path in ("Cargo.toml", "Cargo.lock", "src/main.rs", "src/lib.rs"):
        assert path in sent, f"{path} must be in the build context"
    assert {p for p in tracked if p.startswith("src/")} <= sent
    for path in sent:
        assert path in ("Cargo.toml", "Cargo.lock") or path.startswith("src/"), (
            f"{path} is sent to the docker build but nothing copies it"
        )
    for path in ("target/release/chat-server", ".git/config", ".venv-ci/main/bin/python",
                 "terraform/terraform.tfvars", "terraform/terraform.tfstate", "README.md"):
        assert not in_context(path), f"{path} must stay out of the build context"


@pytest.mark.skipif(shutil.which("cargo") is None, reason="needs cargo")
def test_dependency_skeleton_matches_the_manifest(tmp_path: Path):
    """Runs the skeleton part of the dependency layer's RUN (everything before its
    `cargo build`) on a copy of the manifest and lockfile, and checks that cargo accepts the
    result with --locked and that every target `cargo build --release` builds has a file."""
    build = stages()[0]
    run = [arguments for keyword, arguments in build if keyword == "RUN"][0]
    skeleton, _, _ = run.partition("&& cargo build --release --locked")
    for name in ("Cargo.toml", "Cargo.lock"):
        shutil.copy(ROOT / name, tmp_path / name)
    subprocess.run(["bash", "-o", "pipefail", "-c", skeleton], cwd=tmp_path, check=True)

    host = re.search(
        r"^host: (\S+)$",
        subprocess.run(["rustc", "-vV"], check=True, capture_output=True, text=True).stdout,
        re.MULTILINE,
    ).group(1)

    def metadata(directory: Path) -> dict:
        # --filter-platform: only this platform's packages, which are already downloaded.
        out = subprocess.run(
            ["cargo", "metadata", "--locked", "--offline", "--format-version", "1",
             "--filter-platform", host],
            cwd=directory, check=True, capture_output=True, text=True,
            env={**os.environ, "CARGO_TARGET_DIR": str(directory / "target")},
        ).stdout
        return json.loads(out)

    skeleton_meta = metadata(tmp_path)
    real_meta = metadata(ROOT)
    root_id = real_meta["resolve"]["root"]
    package = next(p for p in real_meta["packages"] if p["id"] == root_id)
    for target in package["targets"]:
        kinds = set(target["kind"])
        if not kinds & {"lib", "bin"} or target.get("required-features"):
            continue  # `cargo build --release` builds no tests, benches or feature-gated bins
        relative = Path(target["src_path"]).relative_to(ROOT)
        assert (tmp_path / relative).is_file(), f"the skeleton lacks {relative}"
    assert skeleton_meta["resolve"]["root"], "cargo resolved the skeleton"
