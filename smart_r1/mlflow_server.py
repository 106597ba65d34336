"""Start / stop a small local MLflow tracking server (sqlite backend, local artifact store).

    server = start_local_server("runs/mlflow")      # picks a free port, waits for /health
    print(server.uri)                                # http://127.0.0.1:<port>
    server.stop()

`ensure_tracking_uri(config)` returns the configured URI (config `tracking.uri` or
`MLFLOW_TRACKING_URI`) or starts a local server when none is configured.

Kept small on purpose: `--workers 1` and `MLFLOW_SERVER_ENABLE_JOB_EXECUTION=false` (two
processes, ~0.4 GB). Artifacts are served through the server (`--artifacts-destination`), so
clients on other nodes upload over HTTP. The server runs in its own process group so `stop()`
ends exactly the processes it started.

Command line (used by `cluster/start_head.sh` / `stop.sh`):
    python -m smart_r1.mlflow_server start --root DIR [--host H] [--port P]   # prints the URI, writes DIR/server.json
    python -m smart_r1.mlflow_server stop --root DIR
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def wait_healthy(uri: str, timeout: float = 60.0, proc: subprocess.Popen | None = None) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            return False
        try:
            with urllib.request.urlopen(uri.rstrip("/") + "/health", timeout=2) as r:
                if r.status == 200:
                    return True
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(0.25)
    return False


@dataclass
class LocalMlflowServer:
    uri: str
    pid: int
    root: Path
    port: int
    host: str
    proc: subprocess.Popen | None = None

    def stop(self, timeout: float = 10.0) -> None:
        stop_pid(self.pid, timeout)
        if self.proc is not None:
            try:
                self.proc.wait(timeout=1)
            except subprocess.TimeoutExpired:
                pass
        info = self.root / "server.json"
        if info.exists():
            try:
                if json.loads(info.read_text()).get("pid") == self.pid:
                    info.unlink()
            except (OSError, ValueError):
                pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.stop()


def stop_pid(pid: int, timeout: float = 10.0) -> None:
    """Stop the server's process group (the launcher and its uvicorn worker)."""
    try:
        pgid = os.getpgid(pid)
    except ProcessLookupError:
        return
    if pgid != pid:  # not a group we lead: stop only this pid
        sig_target = lambda s: os.kill(pid, s)  # noqa: E731
    else:
        sig_target = lambda s: os.killpg(pgid, s)  # noqa: E731
    try:
        sig_target(signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            os.killpg(pgid, 0) if pgid == pid else os.kill(pid, 0)
        except ProcessLookupError:
            return
        # reap if it is our child
        try:
            os.waitpid(pid, os.WNOHANG)
        except ChildProcessError:
            pass
        time.sleep(0.1)
    try:
        sig_target(signal.SIGKILL)
    except ProcessLookupError:
        pass


def start_local_server(
    root: str | os.PathLike,
    host: str = "127.0.0.1",
    port: int | None = None,
    timeout: float = 90.0,
) -> LocalMlflowServer:
    """Start `mlflow server` with `root/mlflow.db` and `root/artifacts`; wait until healthy."""
    root = Path(root).resolve()
    root.mkdir(parents=True, exist_ok=True)
    port = port or free_port(host)
    env = dict(os.environ)
    env.update(
        MLFLOW_SERVER_ENABLE_JOB_EXECUTION="false",
        MLFLOW_DISABLE_TELEMETRY="true",
        DO_NOT_TRACK="1",
    )
    env.pop("MLFLOW_TRACKING_URI", None)
    mlflow_bin = Path(sys.executable).with_name("mlflow")
    cmd = [str(mlflow_bin) if mlflow_bin.exists() else "mlflow"]
    cmd += [
        "server",
        "--backend-store-uri", f"sqlite:///{root / 'mlflow.db'}",
        "--artifacts-destination", str(root / "artifacts"),
        "--host", host,
        "--port", str(port),
        "--workers", "1",
    ]
    if host not in ("127.0.0.1", "localhost"):
        cmd += ["--allowed-hosts", "*"]
    log_file = open(root / f"server-{port}.log", "ab")
    proc = subprocess.Popen(cmd, stdout=log_file, stderr=subprocess.STDOUT, env=env, start_new_session=True, cwd=root)
    log_file.close()
    uri_host = "127.0.0.1" if host in ("0.0.0.0", "::") else host
    uri = f"http://{uri_host}:{port}"
    server = LocalMlflowServer(uri=uri, pid=proc.pid, root=root, port=port, host=host, proc=proc)
    if not wait_healthy(uri, timeout, proc):
        server.stop()
        tail = (root / f"server-{port}.log").read_text(errors="replace")[-2000:]
        raise RuntimeError(f"MLflow server on {uri} did not become healthy in {timeout:.0f} s; log tail:\n{tail}")
    (root / "server.json").write_text(json.dumps({"uri": uri, "pid": proc.pid, "port": port, "host": host}))
    return server


def ensure_tracking_uri(config: Any = None, root: str | os.PathLike = ".smart_r1_runs/mlflow") -> tuple[str, LocalMlflowServer | None]:
    """The configured tracking URI, or a freshly started local server's (then also returned, to stop it).

    A server already started for `root` (its `server.json`, healthy) is reused.
    """
    from smart_r1.tracking import _tracking_section

    sec = _tracking_section(config)
    uri = sec.get("uri") or os.environ.get("MLFLOW_TRACKING_URI")
    if uri:
        return str(uri), None
    info = Path(root) / "server.json"
    if info.exists():
        try:
            data = json.loads(info.read_text())
            if wait_healthy(data["uri"], timeout=2):
                return data["uri"], None
        except (OSError, ValueError, KeyError):
            pass
    server = start_local_server(sec.get("server_root") or root)
    return server.uri, server


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m smart_r1.mlflow_server")
    sub = p.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("start")
    s.add_argument("--root", default=".smart_r1_runs/mlflow")
    s.add_argument("--host", default="127.0.0.1")
    s.add_argument("--port", type=int, default=None)
    t = sub.add_parser("stop")
    t.add_argument("--root", default=".smart_r1_runs/mlflow")
    args = p.parse_args(argv)
    if args.cmd == "start":
        server = start_local_server(args.root, host=args.host, port=args.port)
        print(server.uri)
        return 0
    info = Path(args.root) / "server.json"
    if not info.exists():
        print(f"no server recorded in {info}", file=sys.stderr)
        return 1
    data = json.loads(info.read_text())
    stop_pid(int(data["pid"]))
    info.unlink()
    print(f"stopped MLflow server pid {data['pid']} ({data['uri']})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
