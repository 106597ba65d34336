"""The processes of one local Ray cluster started by cluster/start_head.sh / start_worker.sh.

    python cluster/ray_procs.py list TMP_DIR [TMP_DIR ...]   # pids, one per line, with names
    python cluster/ray_procs.py kill TMP_DIR [TMP_DIR ...]   # SIGTERM, then SIGKILL after a grace period

A process belongs to the cluster when its command line names one of the nodes' Ray temp dirs
(gcs_server, raylet, dashboard, log monitor, ...), when its environment carries
`RAY_TMP_DIR=<one of them>` (cluster/env.sh exports it, so every process `ray start` spawned from
the scripts has it, e.g. the Ray client server, whose command line names no directory), or when
it descends from such a process (the workers, `ray::DashboardAgent`, `ray::RuntimeEnvAgent` and
job drivers, which Ray renames so their command line no longer shows the temp dir). The whole tree is collected before anything
is signalled, so children re-parented to init by a dying raylet are not missed. Only this
user's processes are considered; nothing else on the machine is touched (unlike `ray stop`).
"""

from __future__ import annotations

import os
import re
import sys
import time

import psutil


def _names_dir(cmd: str, path: str) -> bool:
    """`path` appears in `cmd` as a whole path (followed by a separator, quote, space or the end):
    /tmp/sr1-bob must not match a neighbour cluster's /tmp/sr1-bob2."""
    return re.search(re.escape(path) + r"(?=[/\s\"'=:,]|$)", cmd) is not None


def cluster_processes(tmp_dirs: list[str]) -> list[psutil.Process]:
    dirs = [os.path.abspath(d) for d in tmp_dirs if d]
    marks = {f"RAY_TMP_DIR={d}".encode() for d in dirs}
    me = {os.getpid()} | {a.pid for a in psutil.Process().parents()}  # this script and the shells that called it
    roots = []
    for p in psutil.process_iter(["pid", "uids", "cmdline"]):
        try:
            if p.info["uids"] is None or p.info["uids"].real != os.getuid() or p.pid in me:
                continue
            cmd = " ".join(p.info["cmdline"] or [])
            if any(_names_dir(cmd, d) for d in dirs) or _env_names(p.pid, marks):
                roots.append(p)
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
    found: dict[int, psutil.Process] = {}
    for r in roots:
        found[r.pid] = r
        try:
            for c in r.children(recursive=True):
                if c.pid not in me:
                    found[c.pid] = c
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            pass
    return list(found.values())


def _env_names(pid: int, marks: set[bytes]) -> bool:
    try:
        with open(f"/proc/{pid}/environ", "rb") as f:
            return not marks.isdisjoint(f.read().split(b"\0"))
    except OSError:
        return False


def _name(p: psutil.Process) -> str:
    try:
        return " ".join(p.cmdline())[:100] or p.name()
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return "?"


def main(argv: list[str]) -> int:
    if len(argv) < 2 or argv[0] not in ("list", "kill"):
        print(__doc__, file=sys.stderr)
        return 2
    procs = cluster_processes(argv[1:])
    if argv[0] == "list":
        for p in procs:
            print(p.pid, _name(p))
        return 0
    for p in procs:
        try:
            p.terminate()
        except psutil.NoSuchProcess:
            pass
    _, alive = psutil.wait_procs(procs, timeout=float(os.environ.get("RAY_STOP_GRACE_S", "5")))
    for p in alive:
        try:
            p.kill()
        except psutil.NoSuchProcess:
            pass
    psutil.wait_procs(alive, timeout=5)
    time.sleep(0.2)
    left = cluster_processes(argv[1:])
    print(f"stopped {len(procs)} processes" + (f"; {len(left)} left: {[p.pid for p in left]}" if left else ""))
    return 1 if left else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
