"""The data-parallel learner (`learner.train_dp`): config validation, the distributed sampler,
and 2 Ray Train CPU ranks (gloo) giving the same weights as one process on the same global
batch for one BC step and one MPO step (unequal shards: 3 scenes over 2 ranks)."""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[2]


# ---------------------------------------------------------------------------------------------
# No Ray
# ---------------------------------------------------------------------------------------------


def test_learner_config_validation(tmp_path):
    from learner.driver import load_config_with_runtime
    from learner.train_dp import LearnerGroupConfig

    c = LearnerGroupConfig.from_dict({"num_workers": 2, "resources": {"CPU": 1, "learner": 0.5}})
    assert c.num_workers == 2 and c.resources == {"CPU": 1.0, "learner": 0.5} and not c.use_gpu
    assert LearnerGroupConfig.from_dict(None).num_workers == 0  # default: the update stays in the driver
    for bad, key in (({"num_worker": 2}, "num_worker"), ({"num_workers": -1}, "num_workers"),
                     ({"use_gpu": "yes"}, "use_gpu"), ({"resources": {"CPU": "one"}}, "resources.CPU"),
                     ({"resources": [1]}, "resources"), ({"torch_threads": 0}, "torch_threads")):
        with pytest.raises(ValueError, match=key):
            LearnerGroupConfig.from_dict(bad)
    cfg_path = tmp_path / "bad.yaml"
    cfg_path.write_text(f"include: {REPO}/configs/tiny_test.yaml\nruntime: {{learner: {{num_workers: 1, gpus: 1}}}}\n")
    with pytest.raises(ValueError, match=r"bad\.yaml: runtime\.learner: unknown key\(s\) \['gpus'\]"):
        load_config_with_runtime(str(cfg_path))


@pytest.mark.parametrize("n,batch_size,world", [(13, 4, 2), (13, 4, 3), (10, 5, 2), (3, 4, 2)])
def test_distributed_sampler_each_scene_once_per_epoch(n, batch_size, world):
    from learner.train_dp import distributed_step_indices, shard_scenes
    from smart_r1.train.data import step_indices, steps_per_epoch

    for epoch in range(2):
        seen = []
        for step in range(epoch * steps_per_epoch(n, batch_size), (epoch + 1) * steps_per_epoch(n, batch_size)):
            per_rank = [distributed_step_indices(n, batch_size, 7, 1, step, r, world) for r in range(world)]
            sizes = [len(p) for p in per_rank]
            assert max(sizes) - min(sizes) <= 1  # balanced
            # The ranks' shards, in rank order, are the single-process batch of that step.
            assert np.array_equal(np.concatenate(per_rank), step_indices(n, batch_size, 7, 1, step))
            seen += [int(i) for p in per_rank for i in p]
        assert sorted(seen) == list(range(n))  # every scene exactly once per epoch, across ranks
    assert shard_scenes(3, 2) == [[0, 1], [2]] and shard_scenes(1, 2) == [[0], []]


# ---------------------------------------------------------------------------------------------
# Ray Train ranks
# ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """tiny_test data (6 synthetic scenes) with a BC and an MPO stage."""
    from smart_r1.train.config import load_config
    from smart_r1.train.pipeline import prepare_data

    out = tmp_path_factory.mktemp("dp")
    cfg = load_config(REPO / "configs/tiny_test.yaml",
                      [f"output_dir={out}",
                       "stages=[{name: bc, objective: bc, steps: 3, lr: 5.0e-3, params: {label_smoothing: 0.1}},"
                       " {name: rft, objective: mpo, steps: 2, lr: 1.0e-3,"
                       "  params: {alpha: 0.5, beta: 0.04, n_rollout: 2}}]"])
    return cfg, prepare_data(cfg, out)


def _one_step_each(cfg, data, stage_index, step_fn):
    """Weights after one step of stage `stage_index` on 3 scenes, the step run by `step_fn`."""
    import torch

    from smart_r1.objectives import get_objective
    from smart_r1.train.data import make_inputs
    from smart_r1.train.pipeline import build_model_for
    from smart_r1.train.step import build_train_state, make_reference

    stage = cfg.stages[stage_index]
    model = build_model_for(cfg, data.vocab)
    objective = get_objective(stage.objective, **stage.params)
    state = build_train_state(model, stage, objective, 2)
    if objective.needs_reference:
        state.reference = make_reference(model)
    inputs = make_inputs(data.train, [0, 3, 5], data.vocab, with_scenes=objective.needs_scenes)
    torch.manual_seed(123)
    experience = objective.collect(model, inputs, generator=torch.Generator().manual_seed(5), reference=state.reference)
    before = {k: v.detach().clone() for k, v in model.state_dict().items()}
    metrics = step_fn(state, objective, experience, stage_index)
    after = {k: v.detach().clone() for k, v in model.state_dict().items()}
    opt = state.optimizer.state_dict()["state"]  # the group's: rank 0's, fetched for checkpoints
    exp_avg = {i: opt[i]["exp_avg"] for i in sorted(opt)}  # (1 - beta1) * clipped gradient after step 1
    return before, after, metrics, exp_avg


def _rel_all(a: dict, b: dict) -> float:
    """||a - b|| / ||b|| over all floating tensors together (AdamW's first step is ~ lr * sign(g),
    so elements whose gradient is float noise, e.g. attention key biases, flip at random; they
    weigh nothing in the whole model's norm but dominate a per-tensor comparison)."""
    keys = [k for k in b if b[k].is_floating_point()]
    num = sum(float(((a[k].double() - b[k].double()) ** 2).sum()) for k in keys)
    den = sum(float((b[k].double() ** 2).sum()) for k in keys)
    return (num / max(den, 1e-300)) ** 0.5


@pytest.mark.ray
def test_two_ranks_same_weights_as_one_process_bc_and_mpo(ray_local, tiny, tmp_path):
    """One BC step and one MPO step: 2 gloo ranks (shards of 2 and 1 scenes, unequal token
    counts) == the library `update` in one process on the whole batch, to <= 1e-5 relative."""
    from learner.train_dp import LearnerGroup, LearnerGroupConfig
    from smart_r1.train.step import update

    cfg, data = tiny
    cfg = copy.deepcopy(cfg)
    published = []
    group = LearnerGroup(cfg, data.vocab, LearnerGroupConfig(num_workers=2, resources={"CPU": 0.5}), n_train=len(data.train),
                         publish=lambda policy, ref: published.append(ref), out_dir=str(tmp_path))
    try:
        assert len({r["pid"] for r in group.ranks}) == 2
        for stage_index, name in ((0, "bc"), (1, "mpo")):
            before, ref_after, ref_metrics, ref_grad = _one_step_each(cfg, data, stage_index,
                                                                      lambda s, o, e, i: update(s, o, e))
            def on_group(state, objective, experience, i):
                metrics = group.update(state, objective, experience, stage_index=i, total_steps=2)
                assert all(p.grad is None for p in state.model.parameters())  # the driver never holds gradients
                return metrics

            _, dp_after, dp_metrics, dp_grad = _one_step_each(cfg, data, stage_index, on_group)
            assert _rel_all(ref_after, before) > 1e-4, f"{name}: the step did not change the weights"
            assert _rel_all(dp_after, ref_after) <= 1e-5, f"{name}: weights of 2 ranks vs 1 process"
            assert _rel_all(dp_grad, ref_grad) <= 1e-5, f"{name}: averaged gradient (Adam exp_avg) of 2 ranks vs 1 process"
            assert dp_metrics["n_token"] == ref_metrics["n_token"]  # the ranks' counts add up to the batch's
            assert dp_metrics["grad_norm"] == pytest.approx(ref_metrics["grad_norm"], rel=1e-5)  # global norm, global clip
            assert dp_metrics["loss"] == pytest.approx(ref_metrics["loss"], rel=1e-5)  # token-weighted mean of the ranks
        assert len(published) == 2  # rank 0's weights announced once per step
    finally:
        group.shutdown()


@pytest.mark.ray
@pytest.mark.slow
def test_run_distributed_uses_worker_group(ray_local, tmp_path):
    """`smart-r1 train --ray` (run_distributed) with runtime.learner.num_workers: 2 runs BC, CAT-K
    and MPO steps on the ranks; a mid-stage checkpoint carries rank 0's optimiser state."""
    import torch

    from learner.driver import load_config_with_runtime, run_distributed
    from smart_r1.train.checkpoint import Checkpoint, last_checkpoint

    cfg_path = tmp_path / "dp.yaml"
    cfg_path.write_text(
        f"include: {REPO}/configs/tiny_test.yaml\n"
        f"output_dir: {tmp_path}/out\n"
        "stages!:\n"
        "  - {name: bc, objective: bc, steps: 1, lr: 5.0e-3, params: {label_smoothing: 0.1}}\n"
        "  - {name: sft, objective: catk, steps: 1, lr: 1.0e-3, params: {top_k: 8}, freeze: [map_encoder, embeddings]}\n"
        "  - {name: rft, objective: mpo, steps: 2, lr: 1.0e-3, checkpoint_every: 1,\n"
        "     params: {alpha: 0.5, beta: 0.04, n_rollout: 2}}\n"
        "eval: {after_each_stage: false}\n"
        "tracking: {enabled: false}\n"
        "runtime: {num_rollout_actors: 1, num_scorers: 1, rollout_cpus: 0.25, scorer_cpus: 0.25,\n"
        "          learner: {num_workers: 2, resources: {CPU: 0.5}}}\n"
    )
    cfg, runtime = load_config_with_runtime(str(cfg_path))
    result = run_distributed(cfg, runtime=runtime, stop_after_steps=3)  # stops right after rft step 0's checkpoint
    hist = result.history
    assert [(h["stage"], h["step"]) for h in hist] == [("bc", 0), ("sft", 0), ("rft", 0)]
    assert all(h["runtime/learner_ranks"] == 2.0 for h in hist)
    assert all(h["n_token"] > 0 and h["grad_norm"] > 0 and h["loss"] == h["loss"] for h in hist)
    ck = Checkpoint.load(last_checkpoint(tmp_path / "out"))
    assert (ck.stage_name, ck.step, ck.stage_done) == ("rft", 1, False)
    moments = ck.optimizer["state"]  # rank 0's AdamW state, fetched by the driver for the checkpoint
    assert moments and all(int(v["step"]) == 1 and torch.count_nonzero(v["exp_avg"]) > 0 for v in moments.values())
    assert ck.scheduler["last_epoch"] == 1


def _nonfinite_rank(rank: int, world: int, port: int, results) -> None:
    """One gloo rank: a linear model, `update`'s non-finite check on rank 1 only, then the synced step."""
    import math

    import torch
    import torch.distributed as dist

    from learner.train_dp import _LossCounter, _SyncedOptimizer

    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world,
                            timeout=__import__("datetime").timedelta(seconds=60))
    try:
        model = torch.nn.Linear(3, 1)
        counter = _LossCounter()
        opt = _SyncedOptimizer(torch.optim.AdamW(model.parameters(), lr=1e-2), grad_clip=1.0, counter=counter)
        loss = model(torch.ones(2, 3)).sum() * (math.nan if rank == 1 else 1.0)
        loss.backward()
        counter.count, counter.seen, counter.expect_loss = 2.0, True, True
        opt.flag_nonfinite_loss(not math.isfinite(float(loss)), f"loss {float(loss)}")
        before = [p.detach().clone() for p in model.parameters()]
        try:
            opt.step()
            results.put((rank, "stepped", ""))
        except FloatingPointError as e:
            unchanged = all(torch.equal(a, b) for a, b in zip(before, model.parameters()))
            results.put((rank, "raised" if unchanged else "raised-after-changing-weights", str(e)))
    finally:
        dist.destroy_process_group()


def test_nonfinite_loss_on_one_rank_raises_on_every_rank_without_hanging():
    """A NaN loss on rank 1 must not leave rank 0 waiting in the gradient all-reduce (until the
    gloo timeout): the flag travels in that all-reduce and both ranks raise, weights untouched."""
    import socket

    import torch.multiprocessing as mp

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    ctx = mp.get_context("spawn")
    results = ctx.Queue()
    procs = [ctx.Process(target=_nonfinite_rank, args=(r, 2, port, results)) for r in range(2)]
    for p in procs:
        p.start()
    got = sorted(results.get(timeout=120) for _ in procs)
    for p in procs:
        p.join(timeout=30)
    assert [(r, what) for r, what, _ in got] == [(0, "raised"), (1, "raised")], got
    assert "non-finite loss on 1 of 2 ranks" in got[0][2] and "finite here" in got[0][2]
    assert "loss nan" in got[1][2]
