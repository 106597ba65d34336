"""Scaled-out evaluation on a real private Ray instance (`learner.distributed_eval`):

- `evaluate` with the `RayExecutor` writes the same rows as the single-process evaluation;
- a rollout actor killed mid-run is restarted, its scenes re-queued, every scene scored once;
- a run interrupted after a few scenes resumes: the rerun simulates only the missing scenes;
- `DistributedValidator` (the Trainer's `evaluator` hook) returns `loop.evaluate`'s numbers.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

pytestmark = [pytest.mark.ray]

REPO = Path(__file__).resolve().parents[2]
BASELINES = ["baseline:constant_velocity", "baseline:log_replay_noise"]
N_SCENES = 5
VOLATILE = {"seconds_rollout", "seconds_score", "finished_at"}


@pytest.fixture(scope="module")
def scenes_path(tmp_path_factory):
    from smart_r1.data.synth import write_synthetic_dataset

    root = tmp_path_factory.mktemp("dist_eval_scenes")
    return str(write_synthetic_dataset(root, num_scenes=N_SCENES, seed=5, num_shards=1, progress=False)[0])


@pytest.fixture(scope="module")
def local_rows(scenes_path, tmp_path_factory):
    from smart_r1.eval.evaluate import evaluate

    out = tmp_path_factory.mktemp("dist_eval_local")
    res = evaluate(BASELINES, scenes_path, backend="fast", num_rollouts=4, seed=3, out_dir=out, report=False, progress=False)
    assert res.n_scored == 2 * N_SCENES and not res.failed
    return res.rows


def _by_key(rows):
    from smart_r1.eval.evaluate import ScoreStore

    out = {}
    for r in rows:
        k = ScoreStore.key(r)
        assert k not in out, f"row {k} twice"
        out[k] = r
    return out


def assert_same_rows(a, b):
    ka, kb = _by_key(a), _by_key(b)
    assert set(ka) == set(kb)
    for k in ka:
        for field, va in ka[k].items():
            if field in VOLATILE:
                continue
            vb = kb[k][field]
            if isinstance(va, float):
                assert math.isclose(va, vb, rel_tol=1e-6, abs_tol=1e-9), (k, field, va, vb)
            elif isinstance(va, list):
                np.testing.assert_allclose(va, vb, rtol=1e-6, atol=1e-7, err_msg=f"{k} {field}")
            else:
                assert va == vb, (k, field, va, vb)


def _run(scenes_path, out, executor, **kw):
    from smart_r1.eval.evaluate import evaluate

    return evaluate(BASELINES, scenes_path, backend="fast", num_rollouts=4, seed=3, out_dir=out, report=False,
                    progress=False, executor=executor, **kw)


def test_distributed_rows_equal_single_process(ray_local, scenes_path, local_rows, tmp_path):
    from learner.distributed_eval import RayExecutor

    ex = RayExecutor(num_rollout_workers=2, num_scorers=1, rollout_cpus=0.5, scorer_cpus=0.5)
    res = _run(scenes_path, tmp_path, ex)
    assert res.n_scored == 2 * N_SCENES and res.n_skipped == 0 and not res.failed
    assert ex.stats["rollout_tasks"] == 2 * N_SCENES and ex.stats["score_tasks"] == 2 * N_SCENES
    assert_same_rows(res.rows, local_rows)
    assert not ex.rollout_actors and not ex.scorers  # actors removed at the end of the run


def test_cli_ray_writes_the_same_rows(ray_local, scenes_path, local_rows, tmp_path):
    """`smart-r1 evaluate --ray` (joins the running instance) -> same scores file rows."""
    import pyarrow.parquet as pq

    from smart_r1.cli import main

    argv = ["evaluate", *[a for b in BASELINES for a in ("--checkpoint", b)], "--scenes", scenes_path, "--num-rollouts", "4",
            "--seed", "3", "--out", str(tmp_path), "--no-report", "--quiet", "--ray", "--num-rollout-workers", "2",
            "--num-scorers", "1"]
    assert main(argv) == 0
    assert_same_rows(pq.read_table(tmp_path / "scores.parquet").to_pylist(), local_rows)


def test_actor_cpus_fit_the_cluster():
    from learner.distributed_eval import RayExecutor

    rc, sc = RayExecutor(num_rollout_workers=2, num_scorers=1).actor_cpus(2.0)
    assert 2 * rc + sc <= 2.0 and rc > 0.6
    assert RayExecutor(num_rollout_workers=2, num_scorers=1).actor_cpus(16.0) == (1.0, 1.0)
    with pytest.raises(ValueError, match="need 3.0 CPUs"):
        RayExecutor(num_rollout_workers=2, num_scorers=1, rollout_cpus=1.0, scorer_cpus=1.0).actor_cpus(2.0)


def test_killed_actor_restarts_and_every_scene_scored_once(ray_local, scenes_path, local_rows, tmp_path):
    import ray

    from learner.distributed_eval import RayExecutor

    killed = []

    def kill_once(ex, event, key):
        if event == "rollout" and not killed:
            pid = ray.get(ex.rollout_actors[0].pid.remote())
            ray.kill(ex.rollout_actors[0], no_restart=False)  # Ray restarts it (max_restarts)
            killed.append(pid)

    ex = RayExecutor(num_rollout_workers=2, num_scorers=1, rollout_cpus=0.5, scorer_cpus=0.5, max_restarts=2,
                     on_event=kill_once)
    res = _run(scenes_path, tmp_path, ex)
    assert killed
    assert res.n_scored == 2 * N_SCENES and not res.failed
    assert_same_rows(res.rows, local_rows)  # exactly once each (checked in _by_key), same numbers
    assert ex.stats["score_tasks"] == 2 * N_SCENES
    assert ex.stats["rollout_requeued"] >= 1  # the killed actor's in-flight task ran again


def test_interrupted_run_resumes_with_missing_scenes_only(ray_local, scenes_path, local_rows, tmp_path):
    from learner.distributed_eval import RayExecutor
    from smart_r1.eval.evaluate import ScoreStore

    scored = []

    def interrupt(ex, event, key):
        if event == "score":
            scored.append(key)
            if len(scored) == 4:
                raise KeyboardInterrupt("simulated kill")

    ex = RayExecutor(num_rollout_workers=2, num_scorers=1, rollout_cpus=0.5, scorer_cpus=0.5, on_event=interrupt)
    with pytest.raises(KeyboardInterrupt):
        _run(scenes_path, tmp_path, ex)
    kept = ScoreStore(tmp_path / "scores.parquet").done_keys()
    assert kept == set(scored)  # flushed on the way out
    ex2 = RayExecutor(num_rollout_workers=2, num_scorers=1, rollout_cpus=0.5, scorer_cpus=0.5)
    res = _run(scenes_path, tmp_path, ex2)
    assert res.n_skipped == 4 and res.n_scored == 2 * N_SCENES - 4
    assert ex2.stats["items"] == ex2.stats["rollout_tasks"] == 2 * N_SCENES - 4  # only the missing ones simulated
    assert_same_rows(res.rows, local_rows)


def test_bad_scene_reported_and_skipped(ray_local, scenes_path, tmp_path):
    """A rollout file covering a scene with rollouts of the wrong agents: that scene fails (named
    in `failed`), the others are scored."""
    from learner.distributed_eval import RayExecutor
    from smart_r1.data.scenario_io import iter_scenes
    from smart_r1.eval.evaluate import evaluate
    from smart_r1.metrics.submission import save_rollouts_npz
    from smart_r1.sim.baselines import get_baseline
    from smart_r1.sim.rollouts import Rollouts

    scenes = list(iter_scenes(scenes_path))
    roll_dir = tmp_path / "rollouts"
    roll_dir.mkdir()
    cv = get_baseline("baseline:constant_velocity")
    for i, sc in enumerate(scenes[:3]):
        r = cv(sc, 2, 0)
        if i == 1:  # wrong agent ids: the scorer refuses it
            r = Rollouts(r.scenario_id, r.agent_id + 10_000, r.trajectories)
        save_rollouts_npz(r, roll_dir / f"{sc.scenario_id}.npz")
    ex = RayExecutor(num_rollout_workers=1, num_scorers=1, rollout_cpus=0.5, scorer_cpus=0.5)
    with pytest.warns(UserWarning, match=scenes[1].scenario_id):
        res = evaluate([], scenes_path, rollouts=[str(roll_dir)], backend="fast", num_rollouts=2, out_dir=tmp_path / "o",
                       report=False, progress=False, executor=ex)
    name = res.sources[0].name
    assert list(res.failed[name]) == [scenes[1].scenario_id]
    assert sorted(r["scenario_id"] for r in res.rows) == sorted([scenes[0].scenario_id, scenes[2].scenario_id])
    assert len(res.uncovered[name]) == N_SCENES - 3


def test_distributed_validation_equals_loop_evaluate(ray_local, tiny_data):
    import dataclasses

    import torch

    from learner.distributed_eval import DistributedValidator
    from smart_r1.train.config import load_config
    from smart_r1.train.loop import evaluate
    from smart_r1.train.pipeline import build_model_for

    cfg = load_config(REPO / "configs" / "tiny_test.yaml")
    data = tiny_data
    model = build_model_for(cfg, data.vocab)
    eval_cfg = dataclasses.replace(cfg.eval, batch_size=1)  # 2 chunks, on 2 workers
    val = DistributedValidator(num_workers=2, num_scorers=1)
    try:
        for round_ in range(2):
            if round_ == 1:  # new weights: the actors must pick them up
                with torch.no_grad():
                    for p in model.parameters():
                        p.add_(0.05 * torch.randn_like(p))
            want = evaluate(model, data.val, data.vocab, eval_cfg, seed=7, max_agents=32, radius_m=100.0)
            got = val(model, data.val, data.vocab, eval_cfg, seed=7, max_agents=32, radius_m=100.0)
            assert set(got) == set(want)
            for k in want:
                assert math.isclose(got[k], want[k], rel_tol=1e-5, abs_tol=1e-6), (round_, k, got[k], want[k])
            assert val.stats["version"] == round_
            if round_ == 0:
                first = want
        assert any(first[k] != want[k] for k in want)  # the second round really used other weights
    finally:
        val.shutdown()


def test_driver_validates_on_ray(ray_local, tmp_path, monkeypatch):
    """`run_distributed` with `runtime.distributed_eval` (default true): the stage's held-out
    evaluation comes from the validator and equals `loop.evaluate` on the saved model."""
    import torch

    from learner.driver import load_config_with_runtime, run_distributed
    from smart_r1.train.checkpoint import Checkpoint, last_checkpoint
    from smart_r1.train.loop import evaluate
    from smart_r1.train.pipeline import build_model_for, prepare_data

    cfg_path = tmp_path / "bc.yaml"
    cfg_path.write_text(
        f"include: {REPO}/configs/tiny_test.yaml\n"
        f"output_dir: {tmp_path}/out\n"
        "stages!:\n  - {name: bc, objective: bc, steps: 1, lr: 1.0e-3}\n"
        "eval: {n_scenes: 2, n_rollout: 4, batch_size: 1}\n"
        "tracking: {enabled: false}\n"
        "runtime: {num_rollout_actors: 1, num_scorers: 1, rollout_cpus: 0.5, scorer_cpus: 0.25}\n"
    )
    from learner import distributed_eval

    calls = []
    real_call = distributed_eval.DistributedValidator.__call__

    def counting_call(self, *a, **k):  # a spy on our own class (Ray itself runs for real)
        calls.append(1)
        return real_call(self, *a, **k)

    monkeypatch.setattr(distributed_eval.DistributedValidator, "__call__", counting_call)
    cfg, runtime = load_config_with_runtime(str(cfg_path))
    result = run_distributed(cfg, runtime=runtime)
    assert calls == [1]  # the stage's evaluation ran on the validator
    got = result.evaluations["bc"]
    data = prepare_data(cfg, tmp_path / "out")
    model = build_model_for(cfg, data.vocab)
    model.load_state_dict({k: torch.as_tensor(v) for k, v in Checkpoint.load(last_checkpoint(tmp_path / "out")).model.items()})
    want = evaluate(model, data.val, data.vocab, cfg.eval, cfg.seed, cfg.data.max_train_agents, cfg.data.train_radius_m)
    assert set(got) == set(want)
    for k in want:
        assert math.isclose(got[k], want[k], rel_tol=1e-5, abs_tol=1e-6), (k, got[k], want[k])
