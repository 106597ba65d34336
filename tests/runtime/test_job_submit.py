"""`ray job submit` of the real training pipeline to a real multi-node local Ray cluster started by
the project's scripts from a checkout at a long path (issue 16: the old default state dir made a
Ray socket path exceed 107 bytes there): `cluster/start_head.sh` (token auth, free ports) plus
two `cluster/start_worker.sh` nodes (own temp dirs and ports) advertising the `rollout` /
`scorer` resources the job's actors ask for, so the job only finishes if they run on the worker
nodes. The run's metrics, params, artifacts and registered model are checked through the MLflow
client; the job's outputs are under the state dir's `runs/`, not in Ray's working-dir copy;
`cluster/job.sh status` carries the token; `cluster/stop.sh` leaves no process of the cluster
(checked by environment, independently of how stop.sh finds them)."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import psutil
import pytest

from smart_r1.mlflow_server import free_port

pytestmark = [pytest.mark.ray, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[2]
LINKED = ["cluster", "smart_r1", "learner", "rollout_workers", "configs", "benchmarks", "pyproject.toml",
          "requirements-nodeps.txt", ".venv"]


class Ports:
    """Free ports outside one worker port range (Ray refuses a component port inside it)."""

    def __init__(self):
        self.lo = free_port()
        self.taken = set(range(self.lo, self.lo + 301))

    def __call__(self) -> int:
        while True:
            p = free_port()
            if p not in self.taken:
                self.taken.add(p)
                return p

    def node_args(self, workers: tuple[int, int]) -> str:
        return (f"--min-worker-port {workers[0]} --max-worker-port {workers[1]}"
                f" --node-manager-port {self()} --object-manager-port {self()}"
                f" --dashboard-agent-listen-port {self()} --metrics-export-port {self()}"
                f" --runtime-env-agent-port {self()} --dashboard-agent-grpc-port {self()}")


def _env(auth: str, ports: Ports) -> dict:
    env = dict(os.environ)
    for k in ("RAY_ADDRESS", "RAY_AUTH_MODE", "RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH", "MLFLOW_TRACKING_URI",
              "SMART_R1_STATE", "SMART_R1_STORAGE", "RAY_TMP_DIR", "PYTHONPATH"):
        env.pop(k, None)
    env.update(
        RAY_AUTH=auth, RAY_PORT=str(ports()), RAY_DASHBOARD_PORT=str(ports()), MLFLOW_PORT=str(ports()),
        RAY_NUM_CPUS="1", RAY_OBJECT_STORE_BYTES="150000000",
        RAY_START_ARGS=ports.node_args((ports.lo, ports.lo + 100)) + f" --ray-client-server-port {ports()}",
    )
    return env


def _run(cmd, env, cwd, timeout=400):
    return subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)


def _ours(state: Path) -> list[int]:
    """Pids of every process carrying this cluster's state dir in its environment (set by env.sh)."""
    mark = f"SMART_R1_STATE={state}".encode()
    pids = []
    for p in psutil.process_iter(["pid", "uids"]):
        try:
            if p.info["uids"].real == os.getuid() and p.pid != os.getpid():
                with open(f"/proc/{p.pid}/environ", "rb") as f:
                    if mark in f.read().split(b"\0"):
                        pids.append(p.pid)
        except (OSError, psutil.Error):
            continue
    return pids


def test_ray_job_submit_multinode_from_long_path(tmp_path):
    from mlflow import MlflowClient

    # A checkout at a long path (symlinks to this one); the default state dir lies under it.
    checkout = tmp_path / ("long-checkout-path-" + "x" * 60) / "smart-r1"
    checkout.mkdir(parents=True)
    for name in LINKED:
        (checkout / name).symlink_to(REPO / name)
    state = checkout / ".smart_r1_runs" / "cluster"
    assert len(str(state)) > 107
    ports = Ports()
    env = _env("token", ports)
    cfg = tmp_path / "job.yaml"
    cfg.write_text(
        f"include: {REPO}/configs/tiny_test.yaml\n"
        "output_dir: job_out\n"  # relative: resolved under SMART_R1_STORAGE, not the working-dir copy
        "stages!:\n  - {name: bc, objective: bc, steps: 2, lr: 5.0e-3, params: {label_smoothing: 0.1}}\n"
        "eval: {after_each_stage: false}\n"
        "tracking: {enabled: true, experiment: rt-job-test}\n"
        "runtime: {num_rollout_actors: 2, num_scorers: 1, rollout_cpus: 0.25, scorer_cpus: 0.25, "
        "rollout_resources: {rollout: 1}, scorer_resources: {scorer: 1}, distributed_eval: false}\n"
    )
    try:
        out = _run(["bash", "cluster/start_head.sh"], env, checkout, timeout=240)
        assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
        token = (state / "ray_auth_token").read_text()
        assert len(token) == 64 and "auth: token" in out.stdout and str(state / "ray_auth_token") in out.stdout
        uri = next(line.split()[-1] for line in out.stdout.splitlines() if line.startswith("MLflow:"))
        for i, name in enumerate(("rollout1", "rollout2")):
            lo = ports.lo + 101 + 100 * i
            wenv = dict(env, RAY_NUM_CPUS="1", RAY_RESOURCES='{"rollout": 2, "scorer": 2}',
                        RAY_START_ARGS=ports.node_args((lo, lo + 99)))
            w = _run(["bash", "cluster/start_worker.sh", name], wenv, checkout, timeout=180)
            assert w.returncode == 0, w.stdout[-3000:] + w.stderr[-3000:]

        # Without the token the job server refuses the client.
        bad = dict(env, RAY_AUTH_MODE="token", RAY_AUTH_TOKEN="0" * 64)
        refused = _run([str(REPO / ".venv/bin/ray"), "job", "list", "--address",
                        f"http://127.0.0.1:{env['RAY_DASHBOARD_PORT']}"], bad, checkout, timeout=120)
        assert refused.returncode != 0

        sub = _run(["bash", "cluster/submit.sh", "--", "python", "-m", "learner.driver", "--config", str(cfg),
                    "--address", "auto"], env, checkout, timeout=500)
        assert sub.returncode == 0, sub.stdout[-5000:] + sub.stderr[-3000:]
        assert "succeeded" in (sub.stdout + sub.stderr)
        job_id = next(line.split()[2] for line in sub.stdout.splitlines() if line.startswith("submission id:"))
        assert job_id.startswith("smart-r1-job-")  # readable: the config's name and the time
        status = _run(["bash", "cluster/job.sh", "status", job_id], env, checkout, timeout=120)
        assert status.returncode == 0 and "succeeded" in (status.stdout + status.stderr).lower(), status.stdout + status.stderr

        assert (state / "runs" / "job_out" / "checkpoints" / "00_bc.pt").exists()  # outputs outlive the job
        client = MlflowClient(uri)
        exp = client.get_experiment_by_name("rt-job-test")
        runs = client.search_runs([exp.experiment_id])
        assert len(runs) == 1
        run = runs[0]
        assert run.info.status == "FINISHED"
        assert run.data.params["runtime.num_rollout_actors"] == "2" and len(run.data.params["git_commit"]) >= 7
        assert run.data.tags["mode"] == "ray"
        hist = client.get_metric_history(run.info.run_id, "bc/loss")
        assert sorted(m.step for m in hist) == [0, 1]
        top = {f.path for f in client.list_artifacts(run.info.run_id)}
        assert {"checkpoints", "vocab", "results"} <= top, top  # the model is a logged model (pyfunc), not a run artifact
        assert [f.path for f in client.list_artifacts(run.info.run_id, "checkpoints")] == ["checkpoints/00_bc.pt"]
        versions = client.search_model_versions("name='rt-job-test-policy'")
        assert len(versions) == 1 and versions[0].run_id == run.info.run_id
        before = _ours(state)
        names = " ".join(psutil.Process(p).name() for p in before if psutil.pid_exists(p))
        assert "raylet" in names and len(before) >= 6
    finally:
        stop = _run(["bash", "cluster/stop.sh"], env, checkout, timeout=120)
        left = _ours(state)
        if not left:
            shutil.rmtree(checkout.parent, ignore_errors=True)
        assert not left, f"processes left behind by stop.sh: {[(p, psutil.Process(p).cmdline()[:2]) for p in left]}\n{stop.stdout}{stop.stderr}"


def test_start_head_refuses_a_long_ray_temp_dir(tmp_path):
    """Fails before starting anything, naming the limit and the fix."""
    env = _env("disabled", Ports())
    env.update(SMART_R1_STATE=str(tmp_path / "state"), RAY_TMP_DIR="/tmp/" + "t" * 60)
    out = _run(["bash", "cluster/start_head.sh"], env, REPO, timeout=60)
    assert out.returncode == 2
    assert "107-byte" in out.stderr and "RAY_TMP_DIR" in out.stderr
    assert not _ours(tmp_path / "state")


def test_start_head_fails_when_the_job_server_is_not_up(tmp_path):
    """A head without its job server (dashboard off here) is an error, and nothing is left running."""
    ports = Ports()
    env = _env("disabled", ports)
    state = tmp_path / "state"
    env.update(SMART_R1_STATE=str(state), RAY_JOB_SERVER_WAIT_S="3", SMART_R1_NO_MLFLOW="1",
               RAY_START_ARGS=env["RAY_START_ARGS"] + " --include-dashboard false")
    out = _run(["bash", "cluster/start_head.sh"], env, REPO, timeout=180)
    assert out.returncode == 1, out.stdout[-2000:] + out.stderr[-2000:]
    assert "job server" in out.stderr and "dashboard.log" in out.stderr
    assert not (state / "head.env").exists()
    assert not _ours(state)
