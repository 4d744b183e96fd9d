"""`bdn app`: the web page (app/bdn_app.py) under Streamlit, on localhost unless --host says otherwise."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from bdn.errors import BdnError

APP_MAX_UPLOAD_MB = 25


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1: this computer only)"
    )
    parser.add_argument("--port", type=int, default=8501, help="port (default 8501)")


def run(args: argparse.Namespace) -> int:
    import importlib.util
    import subprocess
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
    return subprocess.call(command)
