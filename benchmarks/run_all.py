"""Run every benchmark: `python -m benchmarks.run_all [--full] [--only NAME ...] [--list]` (`make bench`).

By default each benchmark runs its quick variant (small sizes, one repeat: minutes in all on a
2-core machine), to check that every benchmark still runs and to give rough figures; `--full`
runs each with its own defaults (the settings behind the numbers in benchmarks/README.md).
Each benchmark runs in its own subprocess (`python -m benchmarks.<name> ...`) with its output
shown as it comes; a summary of exit codes and wall seconds follows, and the exit status is 1
if any benchmark failed. `benchmarks/make_parity_fixtures.py` makes test fixtures, it is not a
benchmark and is not run.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

# benchmark module -> arguments of its quick variant (`--full`: no arguments, its defaults)
QUICK_ARGS: dict[str, list[str]] = {
    "synth_speed": ["--scenes", "10", "--repeats", "1"],
    "cache_read": ["--scenes", "4", "--repeats", "1"],
    "metrics_speed": ["--repeats", "1", "--skip-official", "--cases", "real", "--threads", "1"],
    "render_speed": [],
    "rollout_speed": ["--agents", "32", "--rollouts", "4"],
    "distributed_eval": ["--scenes", "4", "--rollouts", "2"],
    "runtime": ["--quick"],
}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--full", action="store_true", help="each benchmark with its own (full-size) defaults")
    ap.add_argument("--only", nargs="+", choices=sorted(QUICK_ARGS), default=None, help="run just these")
    ap.add_argument("--list", action="store_true", help="list the benchmarks and their quick arguments")
    args = ap.parse_args(argv)
    if args.list:
        for name, quick in QUICK_ARGS.items():
            print(f"{name}: python -m benchmarks.{name} {' '.join(quick)}")
        return 0
    names = args.only or list(QUICK_ARGS)
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH", "")) if p)
    results = []
    for name in names:
        cmd = [sys.executable, "-m", f"benchmarks.{name}"] + ([] if args.full else QUICK_ARGS[name])
        print(f"\n=== {' '.join(cmd[1:])}", flush=True)
        t0 = time.perf_counter()
        rc = subprocess.call(cmd, cwd=ROOT, env=env)
        results.append((name, rc, time.perf_counter() - t0))
    print(f"\n{'benchmark':<18} {'exit':>4} {'seconds':>8}   (load average {os.getloadavg()[0]:.1f})")
    for name, rc, seconds in results:
        print(f"{name:<18} {rc:>4} {seconds:>8.1f}")
    return 1 if any(rc for _, rc, _ in results) else 0


if __name__ == "__main__":
    sys.exit(main())
