"""`bdn app`: the web page (app/bdn_app.py) under Streamlit, on localhost unless --host says otherwise.

Streamlit runs as a child process that ends with `bdn app`: SIGTERM, SIGINT (Ctrl+C) and SIGHUP are passed on to it
and it is killed if it has not ended STOP_GRACE seconds later; on Linux it also gets SIGTERM should `bdn app`
itself be killed outright (kill -9), so no server is left listening on the port.
"""

from __future__ import annotations

import argparse
import contextlib
import sys
from pathlib import Path

from bdn.errors import BdnError

APP_MAX_UPLOAD_MB = 25
STOP_GRACE = 10.0  # seconds Streamlit has to end after a signal before it is killed


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1: this computer only)"
    )
    parser.add_argument("--port", type=int, default=8501, help="port (default 8501)")


def _die_with_parent() -> None:  # pragma: no cover - runs in the child, between fork and exec
    """Linux: have the kernel send this process SIGTERM when its parent (bdn app) dies, even by SIGKILL."""
    import ctypes
    import signal

    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(1, int(signal.SIGTERM))  # 1: PR_SET_PDEATHSIG


def serve(command: list[str], grace: float = STOP_GRACE) -> int:
    """Run `command` (the server) until it ends, passing SIGTERM, SIGINT and SIGHUP on to it and killing it when it
    outlives a signal by `grace` seconds; its exit status, or 128 + the signal's number when a signal stopped it."""
    import signal
    import subprocess
    import time

    received: list[int] = []
    linux = sys.platform.startswith("linux")
    child = subprocess.Popen(command, preexec_fn=_die_with_parent if linux else None)

    def forward(signum: int, _frame: object) -> None:
        received.append(signum)
        if child.poll() is None:
            child.send_signal(signum)

    forwarded = [signal.SIGTERM, signal.SIGINT] + ([signal.SIGHUP] if hasattr(signal, "SIGHUP") else [])
    previous = {signum: signal.signal(signum, forward) for signum in forwarded}
    try:
        deadline = None
        while True:
            try:
                status = child.wait(timeout=0.2)
                break
            except subprocess.TimeoutExpired:
                if received and deadline is None:
                    deadline = time.monotonic() + grace
                if deadline is not None and time.monotonic() > deadline:
                    child.kill()
    finally:
        if child.poll() is None:  # an error in this loop: never leave the server behind
            child.kill()
            child.wait()
        for signum, handler in previous.items():
            signal.signal(signum, handler)
    if received:
        print(f"bdn app: stopped ({signal.Signals(received[0]).name})", file=sys.stderr, flush=True)
        return 128 + received[0]
    return status


def run(args: argparse.Namespace) -> int:
    import importlib.util
    from importlib import resources

    script = Path(str(resources.files("bdn.app") / "bdn_app.py"))
    if importlib.util.find_spec("streamlit") is None:
        raise BdnError("the web app needs Streamlit: pip install 'bdn[app]' (or pip install streamlit)")
    if not 1 <= args.port <= 65535:
        raise BdnError(f"--port must be between 1 and 65535, got {args.port}")
    command = [sys.executable, "-m", "streamlit", "run", str(script)]
    command += ["--server.address", args.host, "--server.port", str(args.port), "--server.headless", "true"]
    # The server refuses uploads above the page's own limit (app/logic.py's MAX_UPLOAD_MB, which imports Streamlit's
    # side of things: not loaded here); no file watching, no usage statistics sent anywhere, no developer menu.
    command += ["--server.maxUploadSize", str(APP_MAX_UPLOAD_MB), "--server.fileWatcherType", "none"]
    command += ["--browser.gatherUsageStats", "false", "--client.toolbarMode", "minimal"]
    shown = f"[{args.host}]" if ":" in args.host else args.host
    print(f"bdn app: open http://{shown}:{args.port} (Ctrl+C stops it)", flush=True)
    return serve(command)
