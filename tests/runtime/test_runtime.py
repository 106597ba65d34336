"""The distributed runtime on a real local Ray instance with the toy workload (real torch
policy, real actors): weight versioning, policy-lag dropping, bad scenes, actor kills with
exactly-once scoring, learning progress."""

from __future__ import annotations

import collections

import numpy as np
import pytest

pytestmark = pytest.mark.ray

TOY = {"name": "toy", "module": "benchmarks.toy_workload", "n_rollout": 8}


def test_weight_versioning_and_lag_drop(ray_local):
    ray = ray_local
    from learner.learner import Learner
    from learner.weights import WeightStore
    from rollout_workers.rollout_actor import RolloutActor

    store = WeightStore.remote()
    learner = Learner.options(num_cpus=0.25).remote(TOY, store, 1)
    actor = RolloutActor.options(num_cpus=0.25).remote(TOY, store, "r0", 1, "cpu")
    assert ray.get(learner.stats.remote())["version"] == 0
    w0 = ray.get(learner.get_weights.remote())
    r0 = ray.get(actor.rollout.remote(0, ["a", "b"], 1))
    assert r0.policy_version == 0 and r0.scene_ids == ["a", "b"]
    assert set(r0.payload) == {"features", "actions", "logprob"}
    assert all(isinstance(v, np.ndarray) for v in r0.payload.values())  # numpy only, no torch graphs
    rewards = {s: np.linspace(0.0, 1.0, 8, dtype=np.float32) for s in r0.scene_ids}  # spread: a real update

    out = ray.get(learner.update.remote(r0, rewards))  # lag 0
    assert not out["dropped"] and out["version"] == 1
    assert ray.get(store.version.remote()) == 1
    out = ray.get(learner.update.remote(r0, rewards))  # lag 1 == bound: applied
    assert not out["dropped"] and out["policy_lag"] == 1 and out["version"] == 2
    out = ray.get(learner.update.remote(r0, rewards))  # lag 2 > 1: dropped and counted
    assert out["dropped"] and out["policy_lag"] == 2 and out["version"] == 2
    st = ray.get(learner.stats.remote())
    assert st["n_dropped"] == 1 and st["n_dropped_scenes"] == 2 and st["n_updates"] == 2

    # The actor picks up the newest version, and its weights equal the learner's.
    r1 = ray.get(actor.rollout.remote(1, ["a"], 1))
    assert r1.policy_version == 2
    lw = ray.get(learner.get_weights.remote())
    aw = ray.get(actor.weights.remote())
    assert lw and set(aw) == set(lw)
    for k in lw:
        np.testing.assert_array_equal(aw[k], lw[k], err_msg=k)
    assert any(not np.array_equal(lw[k], w0[k]) for k in lw)  # two updates changed the weights
    info = ray.get(actor.info.remote())
    assert info["version"] == 2 and info["weight_loads"] == 2
    # a stale publish never replaces a newer version
    assert ray.get(store.publish.remote(1, [ray.put({})])) == 2
    for a in (store, learner, actor):
        ray.kill(a)


def test_epoch_learns_skips_bad_scenes_and_bounds_lag(ray_local):
    from learner.runtime import DistributedRuntime

    ids = [f"s{i}" for i in range(24)] + ["bad-1", "bad-2"]
    rt = DistributedRuntime(TOY, {"num_rollout_actors": 2, "num_scorers": 1, "scenes_per_task": 4,
                                  "rollout_cpus": 0.25, "scorer_cpus": 0.25, "learner_cpus": 0.25})
    try:
        reports = [rt.run_epoch(ids, epoch=e) for e in range(4)]
        for rep in reports:
            assert sorted(rep.scores) == sorted(ids[:24])
            assert set(rep.bad_scenes) == {"bad-1", "bad-2"} and "features" in rep.bad_scenes["bad-1"]
            assert rep.n_dropped_batches == 0 and max(rep.policy_lags) <= 1  # the gate holds the bound
        r = [rep.summary()["epoch/reward_mean"] for rep in reports]
        assert r[-1] > r[0] + 0.05, f"toy RL loop did not raise the reward: {r}"

        # Free-running (no gate), deeper buffer: stale batches are dropped and counted.
        rt.cfg.lag_gate = False
        rt.cfg.max_inflight_rollouts_per_actor = 2
        rt.cfg.max_buffered_batches = 8
        rep = rt.run_epoch(ids, epoch=9)
        assert rep.n_dropped_batches > 0 and max(rep.policy_lags) > 1
        assert rep.n_updates + rep.n_dropped_batches == 6  # 24 good scenes / 4 per batch
    finally:
        rt.shutdown()


def test_actor_kills_exactly_once_scoring(ray_local, tmp_path):
    ray = ray_local
    from learner.runtime import DistributedRuntime

    ids = [f"s{i}" for i in range(40)]
    spec = dict(TOY, rollout_seconds=0.3, score_seconds=0.02, crash_score_on="s13", crash_marker=str(tmp_path / "crashed"))
    rt = DistributedRuntime(spec, {"num_rollout_actors": 2, "num_scorers": 2, "scenes_per_task": 2,
                                   "max_inflight_rollouts_per_actor": 2, "max_policy_lag": 3,
                                   "rollout_cpus": 0.25, "scorer_cpus": 0.25, "learner_cpus": 0.25})
    accepted = []
    killed = {}

    def on_event(kind, obj):
        if kind == "rollout" and not killed:
            pool = rt.current_rollout_pool
            for ref, (i, work_id, _) in list(pool.inflight.items()):
                if not ray.wait([ref], timeout=0)[0]:  # still running on actor i: kill it mid-task
                    killed.update(index=i, work_id=work_id)
                    ray.kill(rt.rollout_actors[i], no_restart=False)  # restarted by Ray (max_restarts)
                    return

    try:
        rep = rt.run_epoch(ids, epoch=0, on_event=on_event, on_score=lambda s: accepted.append(s.scene_id))
        assert killed, "no rollout task was in flight to kill"
        assert (tmp_path / "crashed").exists()  # the scorer really died on s13
        assert rep.n_rollout_requeued >= 1 and rep.n_score_requeued >= 1
        counts = collections.Counter(accepted)
        assert set(counts) == set(ids) and all(c == 1 for c in counts.values())  # exactly once
        assert sorted(rep.scores) == sorted(ids) and not rep.failed_scenes
        # The restarted rollout actor was re-sent the current weights.
        learner_version = ray.get(rt.learner.stats.remote())["version"]
        ray.get([a.rollout.remote(99, ["x"], 0) for a in rt.rollout_actors])
        versions = [i["version"] for i in ray.get([a.info.remote() for a in rt.rollout_actors])]
        assert versions == [learner_version, learner_version]
        # And the next epoch runs normally on the restarted actors.
        rep2 = rt.run_epoch(ids[:8], epoch=1)
        assert sorted(rep2.scores) == sorted(ids[:8])
    finally:
        rt.shutdown()


def test_torch_trainer_one_worker_same_update_path(ray_local, tmp_path):
    """Ray Train TorchTrainer (1 CPU worker) runs the same LearnerCore update as the single
    learner: same batches -> same weights, published with versions to the WeightStore."""
    ray = ray_local
    from learner.learner import LearnerCore
    from learner.train_dp import run_data_parallel
    from learner.weights import WeightStore
    from rollout_workers.rollout_actor import RolloutWorker

    worker = RolloutWorker(TOY, None, "local", 1, "cpu")
    items = []
    for k in range(3):
        res = worker.rollout(k, [f"s{k}a", f"s{k}b"], seed=k)
        rewards = {s: worker.workload.score(s, res.scoring[s])[0] for s in res.scene_ids}
        items.append((res, rewards))
    store = WeightStore.remote()
    run_data_parallel(TOY, items, num_workers=1, weight_store=store, cpus_per_worker=0.5,
                      storage_path=str(tmp_path / "train"))
    version, refs, _ = ray.get(store.latest.remote())
    assert version == 3
    dp_weights = ray.get(refs[0])

    single = LearnerCore(TOY, device="cpu")
    for res, rewards in items:
        single.apply(res, rewards)
    ref_weights = single.weights()
    assert set(dp_weights) == set(ref_weights)
    for k in ref_weights:
        np.testing.assert_allclose(dp_weights[k], ref_weights[k], rtol=1e-5, atol=1e-6)
    ray.kill(store)


def test_evaluation_parquet_resumable(ray_local, tmp_path):
    import pyarrow.parquet as pq

    from learner.evaluation import done_scene_ids, evaluate_to_parquet
    from learner.runtime import DistributedRuntime

    ids = [f"e{i}" for i in range(10)] + ["bad-e"]
    rt = DistributedRuntime(TOY, {"num_rollout_actors": 2, "num_scorers": 1, "scenes_per_task": 2, "rollout_cpus": 0.25,
                                  "scorer_cpus": 0.25}, learner=False)
    try:
        first = evaluate_to_parquet(rt, ids[:6], tmp_path / "eval", flush_every=4)  # "killed" after 6 scenes
        assert first["evaluated"] == 6 and done_scene_ids(tmp_path / "eval") == set(ids[:6])
        second = evaluate_to_parquet(rt, ids, tmp_path / "eval", flush_every=4)
        assert second["skipped_done"] == 6 and second["evaluated"] == 4 and set(second["bad_scenes"]) == {"bad-e"}
        table = pq.read_table(tmp_path / "eval")
        assert sorted(table.column("scenario_id").to_pylist()) == sorted(ids[:10])  # each scene once
        assert "realism/metametric" in table.column_names
    finally:
        rt.shutdown()
