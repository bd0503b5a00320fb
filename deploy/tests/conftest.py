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
