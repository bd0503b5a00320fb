"""The server binary, run the way the container runs it (no Docker engine exists here):

* a copy of the binary (CHAT_SERVER_BIN; by default target/debug/chat-server, the build the
  test suite made: the image's release build compiles the same code with LTO) in a directory
  of its own, like /usr/local/bin in the image, started as an unprivileged user (setpriv to nobody:nogroup when the tests run as
  root; the image's user is 65532) with nothing but the environment for configuration
  (`env -i`, then PORT, K_SERVICE as Cloud Run sets them, and the deployment's variables);
* it starts, /healthz and /readyz answer 200 — with the in-memory store, with a password
  protected redis-server, and with a TLS redis-server whose certificate comes from a private
  CA trusted through SSL_CERT_FILE, as Memorystore's is: a certificate naming 127.0.0.1 in an
  IP subjectAltName (checked in full, the default), and one naming it only in its CN, as
  Memorystore's does (REDIS_TLS_VERIFY=chain);
* a certificate it must not accept (another CA's; a CN-only one under the default check) keeps
  /readyz at 503, and the log says the certificate check failed;
* SIGTERM with an SSE stream open: the stream ends and the process exits with status 0 within
  SHUTDOWN_GRACE_SECS;
* no Redis password ever appears in what it prints.

scripts/deploy-checks builds the binary when missing before running this. Every
redis-server here is started by the test on a free loopback port, never 6379.
"""

from __future__ import annotations

import http.client
import json
import os
import shutil
import signal
import socket
import stat
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

import pytest

import facts
from conftest import ROOT, free_port

STARTUP_TIMEOUT = 20.0
POLL = 0.05
REDIS_PASSWORD = "s3cret-Pa55word-never-logged"


def server_binary() -> Path:
    target = Path(os.environ.get("CARGO_TARGET_DIR", ROOT / "target"))
    if not target.is_absolute():
        target = ROOT / target
    binary = Path(os.environ.get("CHAT_SERVER_BIN", target / "debug" / "chat-server"))
    if not binary.is_absolute():
        binary = ROOT / binary
    assert binary.is_file(), f"{binary} is missing: scripts/deploy-checks builds it (cargo build --bin chat-server)"
    return binary


@pytest.fixture(scope="module")
def image_dir():
    """A world-readable directory holding a copy of the binary, like the image's /usr/local/bin."""
    directory = Path(tempfile.mkdtemp(prefix="chat-server-image-"))
    directory.chmod(0o755)
    binary = directory / "chat-server"
    shutil.copy(server_binary(), binary)
    binary.chmod(0o755)
    yield directory
    shutil.rmtree(directory, ignore_errors=True)


def unprivileged_prefix() -> list[str]:
    if os.geteuid() != 0:
        return []  # already unprivileged
    setpriv = shutil.which("setpriv")
    assert setpriv, "setpriv (util-linux) is needed to drop root"
    return [setpriv, "--reuid=nobody", "--regid=nogroup", "--clear-groups", "--no-new-privs"]


@dataclass
class Server:
    process: subprocess.Popen
    port: int
    log_dir: Path
    secrets: list[str] = field(default_factory=list)

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def output(self) -> str:
        return "".join(
            (self.log_dir / name).read_text(encoding="utf-8", errors="replace")
            for name in ("stdout", "stderr")
        )

    def get(self, path: str) -> tuple[int, str]:
        try:
            with urllib.request.urlopen(self.base + path, timeout=2) as response:
                return response.status, response.read().decode()
        except urllib.error.HTTPError as err:
            return err.code, err.read().decode()

    def post_json(self, path: str, body: dict) -> tuple[int, dict]:
        request = urllib.request.Request(
            self.base + path,
            data=json.dumps(body).encode(),
            headers={"Content-Type": "application/json"},
            method="POST",
        )
        try:
            with urllib.request.urlopen(request, timeout=5) as response:
                return response.status, json.loads(response.read())
        except urllib.error.HTTPError as err:
            return err.code, json.loads(err.read() or b"{}")

    def wait_ready(self) -> None:
        deadline = time.monotonic() + STARTUP_TIMEOUT
        last = None
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                pytest.fail(f"chat-server exited with {self.process.returncode}:\n{self.output()}")
            try:
                last = self.get("/readyz")
                if last[0] == 200:
                    return
            except (urllib.error.URLError, ConnectionError, socket.timeout):
                pass
            time.sleep(POLL)
        pytest.fail(f"/readyz did not answer 200 within {STARTUP_TIMEOUT}s (last: {last}):\n{self.output()}")

    def running_uid(self) -> int:
        status = Path(f"/proc/{self.process.pid}/status").read_text()
        return int(next(line for line in status.splitlines() if line.startswith("Uid:")).split()[1])

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()


def start_server(image_dir: Path, env: dict[str, str], secrets: list[str] | None = None) -> Server:
    port = free_port()
    assert port != 6379
    log_dir = Path(tempfile.mkdtemp(prefix="logs-", dir=image_dir))  # removed with image_dir
    # As on Cloud Run: PORT and K_SERVICE from the platform, the rest from the deployment.
    variables = {"PORT": str(port), "K_SERVICE": "chat-server", **env}
    command = [
        *unprivileged_prefix(),
        "env", "-i", *[f"{k}={v}" for k, v in variables.items()],
        str(image_dir / "chat-server"),
    ]
    with (log_dir / "stdout").open("wb") as out, (log_dir / "stderr").open("wb") as err:
        process = subprocess.Popen(command, cwd="/", stdin=subprocess.DEVNULL, stdout=out, stderr=err)
    return Server(process, port, log_dir, secrets or [])


def open_sse_stream(server: Server) -> http.client.HTTPResponse:
    """Creates a room and opens its event stream, so that shutdown has a stream to end."""
    status, created = server.post_json("/rooms", {"roomId": "shutdown", "username": "alice"})
    assert status == 201, created
    connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=15)
    connection.request(
        "GET", "/rooms/shutdown/events", headers={"Authorization": f"Bearer {created['token']}"}
    )
    response = connection.getresponse()
    assert response.status == 200
    assert response.getheader("Content-Type", "").startswith("text/event-stream")
    assert response.readline().startswith(b"retry:")
    return response


def terminate_within_grace(server: Server, grace: float) -> None:
    stream = open_sse_stream(server)
    started = time.monotonic()
    os.kill(server.process.pid, signal.SIGTERM)
    try:
        status = server.process.wait(timeout=grace + 5)
    except subprocess.TimeoutExpired:
        pytest.fail(f"still running {grace + 5}s after SIGTERM:\n{server.output()}")
    elapsed = time.monotonic() - started
    assert status == 0, f"exit status {status} after SIGTERM:\n{server.output()}"
    assert elapsed < grace, f"took {elapsed:.1f}s to exit, over SHUTDOWN_GRACE_SECS={grace}"
    # The stream was ended by the server, not left hanging.
    remaining = stream.read()
    assert isinstance(remaining, bytes)


def check_output(server: Server) -> None:
    text = server.output()
    for secret in server.secrets:
        assert secret not in text, "a Redis password appeared in the server's output"
    # K_SERVICE is set, so the logs are Cloud Logging's JSON: one object per line.
    lines = [line for line in text.splitlines() if line.strip()]
    assert lines, "the server logged nothing"
    for line in lines:
        assert isinstance(json.loads(line), dict), line


# --- redis-server on a free loopback port -----------------------------------------------------


@dataclass
class Redis:
    process: subprocess.Popen
    port: int

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def start_redis(extra: list[str], tls: bool = False) -> Redis:
    redis_server = shutil.which("redis-server")
    assert redis_server, "redis-server is needed (scripts/test installs it)"
    for _ in range(5):
        port = free_port()
        assert port != 6379
        ports = ["--port", "0", "--tls-port", str(port)] if tls else ["--port", str(port)]
        process = subprocess.Popen(
            [redis_server, *ports, "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
             "--requirepass", REDIS_PASSWORD, *extra],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and process.poll() is None:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
                return Redis(process, port)
            except OSError:
                time.sleep(POLL)
        process.kill()
        process.wait()
    pytest.fail("could not start redis-server")


@pytest.fixture
def redis():
    server = start_redis([])
    yield server
    server.stop()


def openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


def issue_certificates(ip_san: bool) -> Path:
    """A private CA (like Memorystore's per-instance one) and an X.509 v3 server certificate it
    signed for the address 127.0.0.1 (Memorystore's clients also connect to an IP address):
    named in an IP subjectAltName, or (`ip_san=False`) only in the subject's CN, with no
    subjectAltName at all, as Memorystore's certificate is."""
    assert shutil.which("openssl"), "openssl is needed (scripts/test installs it)"
    directory = Path(tempfile.mkdtemp(prefix="chat-server-tls-"))
    directory.chmod(0o755)
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    openssl("req", "-x509", *ec, "-keyout", "ca.key", "-out", "ca.pem", "-days", "2",
            "-subj", "/CN=chat-server test CA", cwd=directory)
    openssl("req", "-new", *ec, "-keyout", "server.key", "-out", "server.csr",
            "-subj", "/CN=127.0.0.1", cwd=directory)
    (directory / "server.ext").write_text(
        "basicConstraints=CA:FALSE\n"
        + ("subjectAltName=IP:127.0.0.1\n" if ip_san else "")
        + "keyUsage=digitalSignature,keyEncipherment\nextendedKeyUsage=serverAuth\n"
    )
    openssl("x509", "-req", "-in", "server.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
            "-CAcreateserial", "-out", "server.pem", "-days", "2", "-extfile", "server.ext",
            cwd=directory)
    (directory / "ca.pem").chmod(0o644)
    text = subprocess.run(["openssl", "x509", "-in", "server.pem", "-noout", "-text"], cwd=directory,
                          check=True, capture_output=True, text=True).stdout
    assert "Version: 3 (0x2)" in text and "Subject: CN = 127.0.0.1" in text, text
    assert ("Subject Alternative Name" in text) == ip_san, text
    return directory


@pytest.fixture(scope="module")
def certificates():
    directory = issue_certificates(ip_san=True)
    yield directory
    shutil.rmtree(directory, ignore_errors=True)


@pytest.fixture(scope="module")
def cn_only_certificates():
    directory = issue_certificates(ip_san=False)
    yield directory
    shutil.rmtree(directory, ignore_errors=True)


def start_tls_redis(certificates: Path) -> Redis:
    return start_redis(
        ["--tls-cert-file", str(certificates / "server.pem"),
         "--tls-key-file", str(certificates / "server.key"),
         "--tls-ca-cert-file", str(certificates / "ca.pem"),
         "--tls-auth-clients", "no"],
        tls=True,
    )


@pytest.fixture
def tls_redis(certificates: Path):
    server = start_tls_redis(certificates)
    yield server
    server.stop()


@pytest.fixture
def cn_only_redis(cn_only_certificates: Path):
    server = start_tls_redis(cn_only_certificates)
    yield server
    server.stop()


def assert_certificate_refused(server: Server, reason: str) -> None:
    """/readyz answers, only ever 503, for a few seconds; the log says that the certificate
    check failed, and `reason`; SIGTERM still stops the server cleanly, and nothing it printed
    holds the password. Stops the server either way."""
    try:
        check_refused(server, reason)
    finally:
        server.stop()


def check_refused(server: Server, reason: str) -> None:
    deadline = time.monotonic() + STARTUP_TIMEOUT
    answers = []
    while time.monotonic() < deadline and len(answers) < 20:
        assert server.process.poll() is None, server.output()
        try:
            answers.append(server.get("/readyz")[0])
        except (urllib.error.URLError, ConnectionError, socket.timeout):
            pass
        time.sleep(0.2)
    assert answers and set(answers) == {503}, f"/readyz answered {answers}:\n{server.output()}"
    deadline = time.monotonic() + STARTUP_TIMEOUT
    while "TLS certificate check failed" not in server.output() and time.monotonic() < deadline:
        time.sleep(POLL)
    failures = [line for line in server.output().splitlines() if "TLS certificate check failed" in line]
    assert failures, f"the log does not say the certificate check failed:\n{server.output()[-3000:]}"
    assert reason in failures[0], failures[0]
    server.process.send_signal(signal.SIGTERM)
    assert server.process.wait(timeout=15) == 0
    check_output(server)


# --- The tests --------------------------------------------------------------------------------


def test_in_memory_store_as_the_container_runs_it(image_dir):
    server = start_server(image_dir, {})
    try:
        server.wait_ready()
        if os.geteuid() == 0:
            assert server.running_uid() != 0, "the server must not run as root"
        assert server.get("/healthz")[0] == 200
        # The container's default grace (SHUTDOWN_GRACE_SECS unset).
        terminate_within_grace(server, facts.rust_default("shutdown_grace_secs"))
        check_output(server)
    finally:
        server.stop()


def test_redis_with_a_password(image_dir, redis):
    url = f"redis://:{REDIS_PASSWORD}@127.0.0.1:{redis.port}"
    server = start_server(
        image_dir,
        {"REDIS_URL": url, "RUST_LOG": "info", "SHUTDOWN_GRACE_SECS": "3"},
        secrets=[REDIS_PASSWORD],
    )
    try:
        server.wait_ready()
        assert server.get("/healthz")[0] == 200
        terminate_within_grace(server, 3)
        check_output(server)
    finally:
        server.stop()


def start_tls_server(image_dir: Path, redis: Redis, ca: Path, env: dict[str, str]) -> Server:
    """The server on `redis` over TLS (the password in REDIS_URL), trusting `ca` through
    SSL_CERT_FILE."""
    url = f"rediss://:{REDIS_PASSWORD}@127.0.0.1:{redis.port}"
    return start_server(
        image_dir, {"REDIS_URL": url, "SSL_CERT_FILE": str(ca), **env}, secrets=[REDIS_PASSWORD]
    )


def assert_tls_store_works(server: Server) -> None:
    """Ready, a room is created in Redis, SIGTERM stops it in time, and no password printed."""
    try:
        server.wait_ready()
        status, created = server.post_json("/rooms", {"roomId": "tls", "username": "bob"})
        assert status == 201, created
        terminate_within_grace(server, 3)
        check_output(server)
    finally:
        server.stop()


def test_rediss_with_a_private_ca_trusted_through_ssl_cert_file(image_dir, tls_redis, certificates):
    server = start_tls_server(image_dir, tls_redis, certificates / "ca.pem", {"SHUTDOWN_GRACE_SECS": "3"})
    assert_tls_store_works(server)


def test_rediss_refuses_a_certificate_it_cannot_verify(image_dir, tls_redis):
    """Without the CA the TLS handshake must fail: certificates are really checked."""
    empty_roots = Path(tempfile.mkdtemp(prefix="chat-server-roots-"))
    empty_roots.chmod(0o755)
    other_ca = empty_roots / "none.pem"
    other_ca.write_text("")
    other_ca.chmod(stat.S_IRUSR | stat.S_IRGRP | stat.S_IROTH)
    try:
        server = start_tls_server(image_dir, tls_redis, other_ca, {"REDIS_TIMEOUT_MS": "500"})
        assert_certificate_refused(server, "UnknownIssuer")
    finally:
        shutil.rmtree(empty_roots, ignore_errors=True)


def test_rediss_chain_accepts_a_cn_only_certificate_from_its_ca(
    image_dir, cn_only_redis, cn_only_certificates
):
    """Memorystore's case: the certificate names the address only in its CN. `chain` checks the
    chain against SSL_CERT_FILE's CA and not the name, so the server connects."""
    server = start_tls_server(
        image_dir, cn_only_redis, cn_only_certificates / "ca.pem",
        {"REDIS_TLS_VERIFY": "chain", "SHUTDOWN_GRACE_SECS": "3"},
    )
    assert_tls_store_works(server)


def test_rediss_chain_still_refuses_a_certificate_from_another_ca(
    image_dir, cn_only_redis, certificates
):
    """`chain` skips the name, never the chain: trusting another private CA, no connection. The
    two test CAs have the same name, so it is the signature check that refuses."""
    server = start_tls_server(
        image_dir, cn_only_redis, certificates / "ca.pem",
        {"REDIS_TLS_VERIFY": "chain", "REDIS_TIMEOUT_MS": "500"},
    )
    assert_certificate_refused(server, "BadSignature")


def test_rediss_full_refuses_a_cn_only_certificate_and_says_why(
    image_dir, cn_only_redis, cn_only_certificates
):
    """The default checks the name too, which a CN-only certificate has nowhere webpki looks:
    not ready, and the log says why (so REDIS_TLS_VERIFY=chain is found)."""
    server = start_tls_server(
        image_dir, cn_only_redis, cn_only_certificates / "ca.pem", {"REDIS_TIMEOUT_MS": "500"}
    )
    assert_certificate_refused(server, "not valid for name")
