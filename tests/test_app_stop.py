"""`bdn app` ends its server when it ends (issue 18, item 3): a signal to `bdn app` alone (not to its process group)
stops the Streamlit child and frees the port; on Linux even kill -9 of `bdn app` does."""

from __future__ import annotations

import importlib.util
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _nothing_listens(port: int) -> bool:
    """True when a connection to the port is refused (a bind test would trip over the health checks' TIME_WAIT)."""
    with socket.socket() as sock:
        sock.settimeout(2)
        return sock.connect_ex(("127.0.0.1", port)) != 0


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return True


def _wait(condition, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.1)
    return condition()


def _start(command: list[str]) -> subprocess.Popen:
    # Its own process group, so that the test can check (and at the end clean up) every process it started; the
    # signal under test goes to `bdn app`'s pid only.
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen(
        command, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True
    )


def _cleanup(process: subprocess.Popen) -> None:
    if _group_alive(process.pid):
        os.killpg(process.pid, signal.SIGKILL)
    process.wait(timeout=10)


def test_serve_passes_a_signal_on_and_kills_a_child_that_ignores_it():
    """bdn.cli.app.serve with a stand-in server: SIGTERM reaches the child; one that ignores it is killed."""
    stubborn = (
        "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); print('up', flush=True); time.sleep(60)"
    )
    code = (
        f"import sys; from bdn.cli.app import serve; sys.exit(serve([sys.executable, '-c', {stubborn!r}], grace=1.0))"
    )
    process = _start([sys.executable, "-c", code])
    try:
        assert process.stdout.readline().strip() == b"up"
        started = time.monotonic()
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=10) == 128 + signal.SIGTERM
        assert time.monotonic() - started < 5  # killed after the 1 s grace, not after the child's 60 s
        assert _wait(lambda: not _group_alive(process.pid), 5), "the child outlived serve()"
        assert b"stopped (SIGTERM)" in process.stdout.read()
    finally:
        _cleanup(process)


@pytest.mark.skipif(importlib.util.find_spec("streamlit") is None, reason="needs Streamlit (pip install 'bdn[app]')")
@pytest.mark.parametrize(
    "signum",
    [signal.SIGTERM, pytest.param(signal.SIGKILL, marks=pytest.mark.skipif(sys.platform != "linux", reason="Linux"))],
)
def test_bdn_app_takes_its_server_down_with_it(signum):
    port = _free_port()
    process = _start([sys.executable, "-m", "bdn.cli", "app", "--port", str(port)])

    def answers() -> bool:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/_stcore/health", timeout=2) as answer:
                return answer.read().strip() == b"ok"
        except OSError:
            return process.poll() is not None  # ended early: the assertion below shows why

    try:
        assert _wait(answers, 60) and process.poll() is None, process.stdout.read().decode(errors="replace")
        os.kill(process.pid, signum)  # bdn app only, not its group
        process.wait(timeout=20)
        assert _wait(lambda: not _group_alive(process.pid), 15), "Streamlit outlived bdn app"
        assert _wait(lambda: _nothing_listens(port), 5), f"something still listens on port {port}"
    finally:
        _cleanup(process)
