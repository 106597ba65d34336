"""`ray job submit` of the real training pipeline to a real local Ray head (token auth on,
started by cluster/start_head.sh on free ports) logging to a real MLflow server; the run's
metrics, params, artifacts and registered model are then checked through the MLflow client."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from smart_r1.mlflow_server import free_port

pytestmark = [pytest.mark.ray, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[2]


def _env(state: Path, auth: str) -> dict:
    env = dict(os.environ)
    for k in ("RAY_ADDRESS", "RAY_AUTH_MODE", "RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH", "MLFLOW_TRACKING_URI"):
        env.pop(k, None)
    lo = free_port()
    taken = set(range(lo, lo + 301))  # the worker port range; Ray refuses a component port inside it

    def port() -> int:
        """A free port outside the worker range and distinct from every other one picked."""
        while True:
            p = free_port()
            if p not in taken:
                taken.add(p)
                return p

    env.update(
        SMART_R1_STATE=str(state), RAY_AUTH=auth, RAY_PORT=str(port()), RAY_DASHBOARD_PORT=str(port()),
        MLFLOW_PORT=str(port()), RAY_NUM_CPUS="2", RAY_OBJECT_STORE_BYTES="300000000",
        RAY_START_ARGS=f"--min-worker-port {lo} --max-worker-port {lo + 300} --ray-client-server-port {port()}"
                       f" --node-manager-port {port()} --object-manager-port {port()}"
                       f" --dashboard-agent-listen-port {port()} --metrics-export-port {port()}"
                       f" --runtime-env-agent-port {port()} --dashboard-agent-grpc-port {port()}",
    )
    return env


def _run(cmd, env, timeout=400):
    return subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout)


def test_ray_job_submit_training_logs_to_mlflow(tmp_path):
    from mlflow import MlflowClient

    state = Path("/tmp") / f"srt_job_{os.getpid()}"  # short: Ray socket paths are length-limited
    env = _env(state, "token")
    cfg = tmp_path / "job.yaml"
    cfg.write_text(
        f"include: {REPO}/configs/tiny_test.yaml\n"
        f"output_dir: {tmp_path}/out\n"
        "stages!:\n  - {name: bc, objective: bc, steps: 3, lr: 5.0e-3, params: {label_smoothing: 0.1}}\n"
        "eval: {after_each_stage: false}\n"
        "tracking: {enabled: true, experiment: rt-job-test}\n"
        "runtime: {num_rollout_actors: 1, num_scorers: 1, rollout_cpus: 0.25, scorer_cpus: 0.25}\n"
    )
    try:
        out = _run(["bash", "cluster/start_head.sh"], env, timeout=240)
        assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
        token = (state / "ray_auth_token").read_text()
        assert len(token) == 64 and "auth: token" in out.stdout
        uri = next(l.split()[-1] for l in out.stdout.splitlines() if l.startswith("MLflow:"))

        # Without the token the job server refuses the client.
        bad = dict(env, RAY_AUTH_MODE="token", RAY_AUTH_TOKEN="0" * 64)
        refused = _run([str(REPO / ".venv/bin/ray"), "job", "list", "--address",
                        f"http://127.0.0.1:{env['RAY_DASHBOARD_PORT']}"], bad, timeout=120)
        assert refused.returncode != 0

        sub = _run(["bash", "cluster/submit.sh", "--", "python", "-m", "learner.driver", "--config", str(cfg),
                    "--address", "auto"], env, timeout=500)
        assert sub.returncode == 0, sub.stdout[-5000:] + sub.stderr[-3000:]
        assert "succeeded" in (sub.stdout + sub.stderr)

        client = MlflowClient(uri)
        exp = client.get_experiment_by_name("rt-job-test")
        runs = client.search_runs([exp.experiment_id])
        assert len(runs) == 1
        run = runs[0]
        assert run.info.status == "FINISHED"
        assert run.data.params["runtime.num_rollout_actors"] == "1" and len(run.data.params["git_commit"]) >= 7
        assert run.data.tags["mode"] == "ray"
        hist = client.get_metric_history(run.info.run_id, "bc/loss")
        assert sorted(m.step for m in hist) == [0, 1, 2]
        top = {f.path for f in client.list_artifacts(run.info.run_id)}
        assert {"checkpoints", "vocab", "results"} <= top, top  # the model is a logged model (pyfunc), not a run artifact
        assert [f.path for f in client.list_artifacts(run.info.run_id, "checkpoints")] == ["checkpoints/00_bc.pt"]
        versions = client.search_model_versions("name='rt-job-test-policy'")
        assert len(versions) == 1 and versions[0].run_id == run.info.run_id
    finally:
        _run(["bash", "cluster/stop.sh"], env, timeout=120)
        left = subprocess.run(["pgrep", "-f", "--", str(state)], capture_output=True, text=True).stdout.split()
        if not left:
            shutil.rmtree(state, ignore_errors=True)
        assert not left, f"processes left behind: {left}"
