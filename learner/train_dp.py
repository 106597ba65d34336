"""The learner as a data-parallel worker group on Ray Train.

`LearnerGroup` starts N Ray Train ranks (`TorchTrainer`: gloo on CPU, NCCL on GPU, placed by
`runtime.learner.resources`) that each hold a replica of the policy, its optimiser and the
stage's objective, and run the library's optimiser step (`smart_r1.train.step.update`) on their
share of every step's experience. The driver (the training loop of `smart_r1.train.loop`) stays a
light controller: it builds the step's batch, collects the experience (rollout actors + scorers
for the RL objectives), splits it by scene and sends one shard to each rank; rank 0 sends the new
weights back (one `ray.put`, also announced to the `WeightStore` for the rollout actors). The
driver's model only receives weights (for collection, evaluation and checkpoints); it never
runs a backward pass and never holds gradients or optimiser moments.

    group = LearnerGroup(cfg, vocab, LearnerGroupConfig(num_workers=2), n_train=len(data.train))
    run_pipeline(cfg, ..., wrap_objective=group.wrap, updater=group.update)
    group.shutdown()

Gradient = average over the global batch. Each rank's loss is the objective's mean over its own
shard (`n_r` tokens, or DPO pairs, as the loss reports in its metrics); before the optimiser step
every rank multiplies its gradient by `n_r`, the ranks all-reduce (sum) gradients and counts in
one flat buffer, and divide by the global count `N`: the result is the gradient of the mean
over all `N` tokens, the same as one process on the whole batch (unequal shards included).
Gradient clipping then uses the global norm. The sync sits in the optimiser's `step`, after all
backward passes of the step, so it works whatever the update does inside (micro-batches with
gradient accumulation, several backward calls, a different number of them per rank).

Scenes are split across ranks by `shard_scenes` (contiguous, sizes differ by at most one); the
scene order of an epoch is the training loop's (`smart_r1.train.data.step_indices`), so every
scene of an epoch goes to exactly one rank once (`distributed_step_indices`). A rank whose
shard is empty (a last batch with fewer scenes than ranks) contributes a zero gradient and zero
count and still steps its optimiser with the others.

Commands reach the ranks through a small named mailbox actor (the Ray Train loop is a long-lived
server loop: `fit()` runs in a background thread of the driver until `shutdown`).

`run_data_parallel` (bottom) is the generic workload entry (toy workload) kept for the streaming
runtime: one fit per list of items, gradient averaging by hooks.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import os
import tempfile
import threading
import time
import uuid
import warnings
from typing import Any

import numpy as np

log = logging.getLogger(__name__)


# ----------------------------------------------------------------------------------------------
# Config: runtime.learner
# ----------------------------------------------------------------------------------------------


@dataclasses.dataclass
class LearnerGroupConfig:
    """`runtime.learner` of a run's YAML (validated at config load)."""

    num_workers: int = 0  # Ray Train ranks; 0 = the update runs in the driver process
    use_gpu: bool = False  # one GPU per rank, NCCL; else gloo on CPU
    resources: dict = dataclasses.field(default_factory=lambda: {"CPU": 1})  # per rank (Ray resources)
    torch_threads: int = 1  # torch.set_num_threads in each rank
    storage_path: str | None = None  # Ray Train RunConfig.storage_path (default <output_dir>/ray_train)

    @classmethod
    def from_dict(cls, d: Any, where: str = "runtime.learner") -> "LearnerGroupConfig":
        if d is None:
            return cls()
        if isinstance(d, LearnerGroupConfig):
            return d
        if not isinstance(d, dict):
            raise ValueError(f"{where}: expected a mapping, got {type(d).__name__} {d!r}")
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ValueError(f"{where}: unknown key(s) {unknown}; known: {sorted(known)}")
        out = cls()
        if "num_workers" in d:
            v = d["num_workers"]
            if isinstance(v, bool) or not isinstance(v, int) or v < 0:
                raise ValueError(f"{where}.num_workers: expected an integer >= 0, got {v!r}")
            out.num_workers = int(v)
        if "use_gpu" in d:
            if not isinstance(d["use_gpu"], bool):
                raise ValueError(f"{where}.use_gpu: expected true/false, got {d['use_gpu']!r}")
            out.use_gpu = d["use_gpu"]
        if "resources" in d:
            res = d["resources"]
            if not isinstance(res, dict):
                raise ValueError(f"{where}.resources: expected a mapping of Ray resources, e.g. {{CPU: 1, learner: 1}}, "
                                 f"got {res!r}")
            for k, v in res.items():
                if not isinstance(k, str) or isinstance(v, bool) or not isinstance(v, (int, float)) or v < 0:
                    raise ValueError(f"{where}.resources.{k}: expected a number >= 0, got {v!r}")
            out.resources = {str(k): float(v) for k, v in res.items()}
        if "torch_threads" in d:
            v = d["torch_threads"]
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ValueError(f"{where}.torch_threads: expected an integer >= 1, got {v!r}")
            out.torch_threads = int(v)
        if "storage_path" in d:
            if d["storage_path"] is not None and not isinstance(d["storage_path"], str):
                raise ValueError(f"{where}.storage_path: expected a path or null, got {d['storage_path']!r}")
            out.storage_path = d["storage_path"]
        if out.use_gpu and out.resources.get("GPU", 1.0) <= 0:
            raise ValueError(f"{where}: use_gpu is true but resources.GPU is {out.resources['GPU']}")
        return out

    def scaling_resources(self) -> dict:
        """resources_per_worker for Ray Train's ScalingConfig (GPU added by use_gpu when absent)."""
        res = dict(self.resources)
        if not self.use_gpu:
            res.pop("GPU", None)
        return res


# ----------------------------------------------------------------------------------------------
# Distributed sampler: scenes of a step -> ranks
# ----------------------------------------------------------------------------------------------


def shard_scenes(n_scene: int, world: int) -> list[list[int]]:
    """Positions 0..n_scene-1 of a step's scenes split into `world` contiguous shards whose sizes
    differ by at most one (the first `n_scene % world` ranks get one more; trailing ranks may
    get none when n_scene < world)."""
    if world < 1:
        raise ValueError(f"shard_scenes: world must be >= 1, got {world}")
    sizes = [n_scene // world + (1 if r < n_scene % world else 0) for r in range(world)]
    starts = np.cumsum([0] + sizes)
    return [list(range(int(starts[r]), int(starts[r + 1]))) for r in range(world)]


def distributed_step_indices(n: int, batch_size: int, seed: int, stage_index: int, step: int, rank: int,
                             world: int) -> np.ndarray:
    """Dataset indices that rank `rank` of `world` trains on at optimiser step `step`: its shard of
    the global batch `smart_r1.train.data.step_indices` (the same global batch for any world, so
    every scene of an epoch goes to exactly one rank once)."""
    from smart_r1.train.data import step_indices

    idx = step_indices(n, batch_size, seed, stage_index, step)
    return idx[shard_scenes(len(idx), world)[rank]]


# ----------------------------------------------------------------------------------------------
# Experience split by scene
# ----------------------------------------------------------------------------------------------


def _select_rows(value, rows, n_agent: int, scene_idx, n_scene: int):
    """Index a tensor along its agent axis ([n_agent, ...] or [R, n_agent, ...]) or scene axis
    ([n_scene] or [R, n_scene]); anything else is returned unchanged."""
    import torch

    if not isinstance(value, torch.Tensor) or value.ndim == 0:
        return value
    if value.ndim >= 2 and value.shape[1] == n_agent:
        return value[:, rows]
    if value.shape[0] == n_agent:
        return value[rows]
    if value.ndim >= 2 and value.shape[1] == n_scene:
        return value[:, scene_idx]
    if value.shape[0] == n_scene:
        return value[scene_idx]
    return value


# Experience fields indexed by scene ([R, n_scene]); selected by name, never guessed from a shape
# (R == n_agent or n_scene == n_agent would make a shape test pick the wrong axis).
SCENE_AXIS_EXTRAS = ("reward_valid",)


def _select_scene_columns(value, scene_idx):
    """[R, n_scene] -> [R, len(scene_idx)]."""
    return value[:, scene_idx.to(value.device)] if value is not None else None


def split_experience(exp, scene_groups: list[list[int]], keep_scenes: bool = False) -> list:
    """One `Experience` per group of scene positions (the inputs, the rollout batch, rewards,
    advantages and per-scene / per-agent extras restricted to those scenes; scalar metrics kept).
    `Scene` objects are dropped unless `keep_scenes` (the losses do not read them)."""
    import torch

    from smart_r1.objectives.base import Experience, TrainBatch

    inputs = exp.inputs
    batch = inputs.batch
    n_agent = int(batch.agent_scene.shape[0])
    n_scene = len(inputs.scenario_ids)
    out = []
    for idx in scene_groups:
        if not idx:
            out.append(None)
            continue
        scene_idx = torch.as_tensor(idx, dtype=torch.long)
        rows = torch.isin(batch.agent_scene.cpu(), scene_idx).to(batch.agent_scene.device)  # [n_agent] bool
        sub_batch = batch.select_scenes(idx)
        sub_inputs = TrainBatch(sub_batch, inputs.train_mask[rows], [inputs.scenario_ids[i] for i in idx],
                                [inputs.scenes[i] for i in idx] if (keep_scenes and inputs.scenes is not None) else None)
        rollout = exp.rollout
        if rollout is not None:
            changes = {}
            for f in dataclasses.fields(rollout):
                v = getattr(rollout, f.name)
                if v is batch:
                    changes[f.name] = sub_batch
                elif type(v) is type(batch):
                    changes[f.name] = v.select_scenes(idx)
                else:
                    changes[f.name] = _select_rows(v, rows, n_agent, scene_idx, n_scene)
            rollout = dataclasses.replace(rollout, **changes)
        sel = lambda v: _select_rows(v, rows, n_agent, scene_idx, n_scene)  # noqa: E731
        out.append(Experience(
            inputs=sub_inputs, rollout=rollout,
            rewards=_select_scene_columns(exp.rewards, scene_idx),  # [R, n_scene_shard]
            advantages=_select_scene_columns(exp.advantages, scene_idx),  # [R, n_scene_shard]
            extras={k: (_select_scene_columns(v, scene_idx) if k in SCENE_AXIS_EXTRAS else sel(v)) for k, v in exp.extras.items()},
            metrics=dict(exp.metrics),
        ))
    return out


# ----------------------------------------------------------------------------------------------
# Rank side: gradient sync in the optimiser step
# ----------------------------------------------------------------------------------------------

# The loss of every objective is a mean over the items it reports in its metrics under one of
# these keys (tokens for BC / CAT-K / MPO / GRPO, preference pairs for DPO).
LOSS_COUNT_KEYS = ("n_token", "n_pair")


def _rl_token_count(experience) -> float:
    """Tokens the RL losses average over (future tokens of trained agents with a finite reward);
    for objectives whose loss reports no count (PPO)."""
    from smart_r1.objectives.base import future_token_mask, per_token_from_scene

    rb = experience.rollout
    mask = future_token_mask(rb, experience.inputs.train_mask)  # [R, n_agent, 16]
    valid = experience.extras.get("reward_valid")
    if valid is not None:
        mask = mask & per_token_from_scene(valid.to(mask.device), experience.inputs.batch.agent_scene, mask.shape[-1])
    return float(mask.sum())


class _LossCounter:
    def __init__(self):
        self.count = 0.0
        self.seen = False
        self.expect_loss = False  # this rank has a shard this step: its update must call objective.loss

    def reset(self):
        self.count, self.seen = 0.0, False


class _CountingObjective:
    """The rank's objective: the library objective, recording how many items (tokens / pairs)
    each `loss` / `loss_from_logprobs` call averaged over (the latest call before an optimiser step)."""

    def __init__(self, inner, counter: _LossCounter):
        object.__setattr__(self, "_inner", inner)
        object.__setattr__(self, "_counter", counter)

    def __getattr__(self, name):
        return getattr(self._inner, name)

    def __setattr__(self, name, value):
        setattr(self._inner, name, value)

    def _record(self, experience, metrics) -> None:
        n = next((metrics[k] for k in LOSS_COUNT_KEYS if k in metrics), None)
        if n is None and getattr(experience, "rollout", None) is not None:
            n = _rl_token_count(experience)
        if n is None:
            raise RuntimeError(f"data-parallel learner: objective {self._inner.name!r} reports none of "
                               f"{LOSS_COUNT_KEYS} in its loss metrics; cannot weight its ranks by the global count")
        # Every evaluation of the loss between two optimiser steps is over the same shard (the
        # micro-batched update evaluates it per micro-batch on placeholders and once on the final
        # log-probs), so the latest count is the count of this step.
        self._counter.count = float(n)
        self._counter.seen = True

    def loss(self, policy, experience, reference=None):
        loss, metrics = self._inner.loss(policy, experience, reference=reference)
        self._record(experience, metrics)
        return loss, metrics

    def loss_from_logprobs(self, logp, logp_ref, mask, experience, extra=None):
        loss, metrics = self._inner.loss_from_logprobs(logp, logp_ref, mask, experience, extra)
        self._record(experience, metrics)
        return loss, metrics


class _SyncedOptimizer:
    """The rank's optimiser: `step()` first turns the local gradients (of the mean over this
    rank's `n_r` items) into the gradient of the mean over all ranks' items, then clips by the
    global norm and steps. The wrapped `update` sees `grad_clip = inf` (its local clip is a no-op)."""

    def __init__(self, inner, grad_clip: float, counter: _LossCounter):
        self.inner = inner
        self.grad_clip = float(grad_clip)
        self.counter = counter
        self.last_grad_norm = float("nan")
        self.last_global_count = float("nan")
        self.last_count = 0.0
        self.nonfinite_loss: str | None = None  # this rank's non-finite loss (a message) until the next sync

    def flag_nonfinite_loss(self, nonfinite: bool, what: str) -> None:
        """Called by `update` before `step()`: the flag travels in the gradient all-reduce, so a
        non-finite loss on any rank makes every rank raise after that collective, together."""
        self.nonfinite_loss = what if nonfinite else None

    @property
    def param_groups(self):
        return self.inner.param_groups

    @property
    def state(self):
        return self.inner.state

    def __getattr__(self, name):
        return getattr(self.inner, name)

    def zero_grad(self, set_to_none: bool = True):
        self.inner.zero_grad(set_to_none=set_to_none)  # the count is reset by step (update zeroes after its loss)

    def state_dict(self):
        return self.inner.state_dict()

    def load_state_dict(self, state):
        self.inner.load_state_dict(state)

    def _params(self) -> list:
        return [p for g in self.inner.param_groups for p in g["params"]]

    @staticmethod
    def _device(params):
        return params[0].device if params else "cpu"

    def sync(self) -> None:
        import torch
        import torch.distributed as dist

        params = self._params()
        device = self._device(params)
        n_local = float(self.counter.count)
        self.last_count = n_local
        flat = [(p.grad.detach().reshape(-1).to(torch.float32) * n_local) if p.grad is not None
                else torch.zeros(p.numel(), dtype=torch.float32, device=device) for p in params]
        has_grad = torch.tensor([1.0 if p.grad is not None else 0.0 for p in params], dtype=torch.float32, device=device)
        # A rank with a shard whose update never called `objective.loss` has no count: flagged in the
        # same all-reduce, so every rank raises together (no rank left waiting in a collective).
        uncounted = 1.0 if (self.counter.expect_loss and not self.counter.seen) else 0.0
        nonfinite = 1.0 if self.nonfinite_loss is not None else 0.0
        tail = torch.tensor([nonfinite, uncounted, n_local], dtype=torch.float32, device=device)
        buf = torch.cat(flat + [has_grad, tail])  # [sum numel + P + 3]
        dist.all_reduce(buf, op=dist.ReduceOp.SUM)
        mine, self.nonfinite_loss = self.nonfinite_loss, None
        if float(buf[-3]) > 0:
            raise FloatingPointError(
                f"data-parallel learner: non-finite loss on {int(float(buf[-3]))} of {dist.get_world_size()} ranks "
                f"(rank {dist.get_rank()}: {mine or 'finite here'}); no rank applied this step")
        if float(buf[-2]) > 0:
            raise RuntimeError("data-parallel learner: the update of a rank never evaluated the objective's loss, so its loss "
                               "count (n_token / n_pair) is unknown and the ranks cannot be weighted; the gradient sync "
                               "of learner.train_dp expects the optimiser step to follow objective.loss or loss_from_logprobs calls")
        n_global = float(buf[-1])
        self.last_global_count = n_global
        scale = 1.0 / max(n_global, 1.0)
        offset = 0
        for i, p in enumerate(params):
            k = p.numel()
            if float(buf[-3 - len(params) + i]) > 0:  # some rank has a gradient for it (else: None, like one process)
                g = (buf[offset:offset + k] * scale).view_as(p).to(p.dtype)
                if p.grad is None:
                    p.grad = g.clone()
                else:
                    p.grad.copy_(g)
            else:
                p.grad = None
            offset += k

    def step(self, closure=None):
        import torch

        self.sync()
        self.counter.reset()  # the next step's loss calls count afresh
        params = [p for p in self._params() if p.grad is not None]
        norm = torch.nn.utils.clip_grad_norm_(params, self.grad_clip) if params else torch.tensor(0.0)
        self.last_grad_norm = float(norm)
        return self.inner.step()


class _RankLearner:
    """One rank: a policy replica, the stage's objective and `TrainState` (optimiser, scheduler,
    reference), the same library code as the single-process loop."""

    def __init__(self, cfg_dict: dict, vocab, rank: int, world: int, device: str, torch_threads: int):
        import torch

        from smart_r1.train.config import config_from_dict
        from smart_r1.train.pipeline import build_model_for

        torch.set_num_threads(max(1, int(torch_threads)))
        self.cfg = config_from_dict(cfg_dict, "<learner rank>")
        self.cfg.device = device
        self.rank, self.world, self.device = rank, world, device
        self.model = build_model_for(self.cfg, vocab)
        self.state = None
        self.objective = None
        self.counter = _LossCounter()

    def begin_stage(self, stage_index: int, total_steps: int, model_state: dict, train_state: dict) -> None:
        """Build the stage's objective and TrainState, load the driver's model / optimiser /
        scheduler / reference / objective state (fresh at a stage start, a checkpoint's on resume)."""
        import torch

        from learner.weights import load_numpy_state
        from smart_r1.objectives import get_objective
        from smart_r1.train.step import build_train_state, make_reference

        stage = self.cfg.stages[stage_index]
        load_numpy_state(self.model, model_state)
        objective = get_objective(stage.objective, **stage.params)
        objective.to(self.device)
        state = build_train_state(self.model, stage, objective, total_steps, learner=self.cfg.learner)
        if train_state.get("reference_model") is not None:
            state.reference = make_reference(self.model)
            state.reference.load_state_dict({k: torch.as_tensor(np.array(v)) for k, v in train_state["reference_model"].items()})
        if train_state.get("optimizer") is not None:
            state.optimizer.load_state_dict(train_state["optimizer"])
        if train_state.get("scheduler") is not None and state.scheduler is not None:
            state.scheduler.load_state_dict(train_state["scheduler"])
        objective.load_state_dict(train_state.get("objective") or {})
        state.step = int(train_state.get("step", 0))
        if self.world > 1:
            state.optimizer = _SyncedOptimizer(state.optimizer, state.grad_clip, self.counter)
            state.grad_clip = math.inf  # the global clip is in _SyncedOptimizer.step
        self.state = state
        self.objective = _CountingObjective(objective, self.counter) if self.world > 1 else objective

    def step(self, shard, rng_state) -> dict:
        """One optimiser step (`update_epochs` of them) on this rank's shard; a None shard (no
        scene for this rank) contributes a zero gradient and a zero count."""
        import torch

        from smart_r1.train.step import update

        if rng_state is not None:
            torch.set_rng_state(rng_state)
        if shard is not None:
            shard = _to_device(shard, self.device)
            collect = shard.extras.pop(RANK_COLLECT, None)
            if collect is not None:  # CAT-K: the closed-loop rollout of this shard runs here
                gen = torch.Generator().manual_seed(int(collect))
                shard = self.objective.collect(self.model, shard.inputs, generator=gen, reference=self.state.reference)
            self.counter.expect_loss = True
            metrics = update(self.state, self.objective, shard)
            count = float(self.state.optimizer.last_count) if self.world > 1 else float("nan")
        else:
            self.counter.expect_loss = False
            metrics = self._empty_step()
            count = 0.0
        if self.world > 1:
            metrics["grad_norm"] = self.state.optimizer.last_grad_norm
        import resource

        peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        return {"metrics": metrics, "count": count, "step": self.state.step, "peak_rss_mb": peak_mb}

    def _empty_step(self) -> dict:
        """The collective part of `update` without a loss: as many zero-gradient synced optimiser
        steps as `update` takes on the other ranks, then one scheduler step (same lr and step
        count on every rank)."""
        from smart_r1.train.step import n_optimizer_steps

        for _ in range(n_optimizer_steps(self.state, self.objective)):
            self.state.optimizer.zero_grad(set_to_none=True)
            self.state.optimizer.step()
        if self.state.scheduler is not None:
            self.state.scheduler.step()
        self.state.step += 1
        return {"lr": float(self.state.optimizer.param_groups[0]["lr"])}

    def weights(self) -> dict:
        from learner.weights import state_to_numpy

        return state_to_numpy(self.model)

    def train_state(self) -> dict:
        return {"optimizer": self.state.optimizer.state_dict(),
                "scheduler": self.state.scheduler.state_dict() if self.state.scheduler is not None else None,
                "objective": self.objective.state_dict(), "step": self.state.step}


RANK_COLLECT = "__rank_collect_seed__"  # Experience.extras key: run the objective's collect on the rank


def _to_device(exp, device):
    if str(device) == "cpu":
        return exp
    import torch

    from smart_r1.objectives.base import Experience

    def mv(v):
        return v.to(device, non_blocking=True) if isinstance(v, torch.Tensor) else v

    rollout = exp.rollout
    if rollout is not None:
        rollout = dataclasses.replace(rollout, **{f.name: (getattr(rollout, f.name).to(device)
                                                           if hasattr(getattr(rollout, f.name), "to") else getattr(rollout, f.name))
                                                  for f in dataclasses.fields(rollout)})
    return Experience(inputs=exp.inputs.to(device), rollout=rollout, rewards=mv(exp.rewards), advantages=mv(exp.advantages),
                      extras={k: mv(v) for k, v in exp.extras.items()}, metrics=exp.metrics)


def _rank_loop(config: dict) -> None:
    """The Ray Train loop of every rank: serve the driver's commands until `stop`."""
    import ray
    import ray.train
    import torch

    ctx = ray.train.get_context()
    rank, world = ctx.get_world_rank(), ctx.get_world_size()
    device = "cpu"
    if config["use_gpu"] and torch.cuda.is_available():
        device = f"cuda:{ctx.get_local_rank()}" if torch.cuda.device_count() > 1 else "cuda"
        torch.cuda.set_device(torch.device(device))
    mailbox = ray.get_actor(config["mailbox"], namespace=config["namespace"])
    vocab = ray.get(config["vocab"][0])
    learner = _RankLearner(config["cfg"], vocab, rank, world, device, config["torch_threads"])
    ray.get(mailbox.put_result.remote(0, rank, {"pid": os.getpid(), "device": device,
                                                "node": ray.get_runtime_context().get_node_id()}))
    seq = 1
    while True:
        kind, payload = ray.get(mailbox.get_command.remote(seq))
        if kind == "stop":
            return
        try:
            if kind == "begin_stage":
                learner.begin_stage(**payload)
                out = None
            elif kind == "step":
                shard = ray.get(payload["shards"][rank]) if payload["shards"][rank] is not None else None
                out = learner.step(shard, payload["rng_state"])
                if rank == 0:
                    out["weights"] = [ray.put(learner.weights())]  # published by the driver as this ref
                    out["objective"] = learner.objective.state_dict()
            elif kind == "train_state":
                out = learner.train_state() if rank == 0 else None
            else:
                raise ValueError(f"unknown learner command {kind!r}")
        except Exception as err:  # noqa: BLE001  (reported to the driver, then re-raised: fit() fails)
            import traceback

            ray.get(mailbox.put_error.remote(f"rank {rank}: {type(err).__name__}: {err}\n{traceback.format_exc()}"))
            raise
        ray.get(mailbox.put_result.remote(seq, rank, out))
        seq += 1


# ----------------------------------------------------------------------------------------------
# Driver side
# ----------------------------------------------------------------------------------------------


def _mailbox_class():
    import asyncio

    import ray

    @ray.remote(num_cpus=0, max_restarts=0)
    class _LearnerMailbox:
        """Commands driver -> ranks (by sequence number) and results ranks -> driver."""

        def __init__(self):
            self.commands: dict[int, tuple] = {}
            self.results: dict[int, dict[int, Any]] = {}
            self.error: str | None = None
            self.cond = asyncio.Condition()

        async def put_command(self, seq: int, kind: str, payload) -> None:
            async with self.cond:
                self.commands[seq] = (kind, payload)
                for s in [s for s in self.commands if s < seq - 1]:
                    del self.commands[s]
                self.cond.notify_all()

        async def get_command(self, seq: int):
            async with self.cond:
                await self.cond.wait_for(lambda: seq in self.commands or self.error is not None)
                if seq not in self.commands:
                    return ("stop", None)
                return self.commands[seq]

        async def put_result(self, seq: int, rank: int, value) -> None:
            async with self.cond:
                self.results.setdefault(seq, {})[rank] = value
                self.cond.notify_all()

        async def put_error(self, message: str) -> None:
            async with self.cond:
                self.error = self.error or message
                self.cond.notify_all()

        async def get_results(self, seq: int, n: int, timeout: float):
            async with self.cond:
                try:
                    await asyncio.wait_for(self.cond.wait_for(
                        lambda: len(self.results.get(seq, {})) >= n or self.error is not None), timeout)
                except asyncio.TimeoutError:
                    return None
                if self.error is not None:
                    return {"error": self.error}
                res = self.results.pop(seq)
                return {"results": [res[r] for r in range(n)]}

    return _LearnerMailbox


class LearnerGroupError(RuntimeError):
    """A rank of the data-parallel learner failed (its message names the rank)."""


class _RemoteOptimizerView:
    """The driver-side optimiser of a stage whose update runs on the group: `state_dict()` (what
    checkpoints save) comes from rank 0; everything else is the local, never-stepped optimiser
    (its `param_groups` carry the lr the local scheduler sets)."""

    def __init__(self, local, group: "LearnerGroup"):
        self.local = local
        self.group = group

    def __getattr__(self, name):
        return getattr(self.local, name)

    @property
    def param_groups(self):
        return self.local.param_groups

    def state_dict(self):
        return self.group.train_state()["optimizer"]


class LearnerGroup:
    """Driver-side handle of the data-parallel learner (see the module docstring)."""

    def __init__(self, cfg, vocab, config: LearnerGroupConfig, n_train: int, publish=None, out_dir: str | None = None):
        import ray
        from ray.train import RunConfig, ScalingConfig
        from ray.train.torch import TorchTrainer

        from smart_r1.train.config import resolved_dict

        self.config = config
        self.world = int(config.num_workers)
        if self.world < 1:
            raise ValueError("LearnerGroup: runtime.learner.num_workers must be >= 1 (0 = update in the driver)")
        self.cfg = cfg
        self.n_train = int(n_train)
        self.publish = publish  # callable(policy, weights_ref) -> version (DistributedCollector.publish)
        self.seq = 0
        self._stage_key = None
        self._train_state_cache: tuple[int, dict] | None = None
        self.stats = {"steps": 0, "step_seconds": 0.0, "wait_seconds": 0.0, "split_seconds": 0.0, "load_seconds": 0.0}
        ns = ray.get_runtime_context().namespace
        name = f"smart_r1_learner_mailbox_{uuid.uuid4().hex[:12]}"
        from learner.cluster import on_this_node

        # Pinned to the driver's node (like the weight store): a lost rollout node must not take it along.
        self.mailbox = _mailbox_class().options(name=name, namespace=ns, **on_this_node()).remote()
        self._vocab_ref = ray.put(vocab)
        storage = config.storage_path or os.path.abspath(os.path.join(out_dir or cfg.output_dir, "ray_train"))
        if "://" not in storage:
            os.makedirs(storage, exist_ok=True)
        use_gpu = bool(config.use_gpu)
        if use_gpu and not ray.cluster_resources().get("GPU", 0):
            raise ValueError("runtime.learner.use_gpu is true but the Ray cluster has no GPU")
        trainer = TorchTrainer(
            _rank_loop,
            train_loop_config={"cfg": resolved_dict(cfg), "vocab": [self._vocab_ref], "mailbox": name, "namespace": ns,
                               "use_gpu": use_gpu, "torch_threads": config.torch_threads},
            scaling_config=ScalingConfig(num_workers=self.world, use_gpu=use_gpu,
                                         resources_per_worker=config.scaling_resources()),
            run_config=RunConfig(storage_path=storage, name=f"learner-{uuid.uuid4().hex[:8]}"),
        )
        self._fit_error: BaseException | None = None

        def fit():
            try:
                result = trainer.fit()
                if result.error:
                    raise result.error
            except BaseException as err:  # noqa: BLE001
                self._fit_error = err
                try:
                    ray.get(self.mailbox.put_error.remote(f"Ray Train fit failed: {type(err).__name__}: {err}"))
                except Exception:  # noqa: BLE001
                    pass

        t0 = time.perf_counter()
        self._thread = threading.Thread(target=fit, name="smart-r1-learner-group", daemon=True)
        self._thread.start()
        self.ranks = self._wait(0, timeout=600.0)
        self.start_seconds = time.perf_counter() - t0
        log.info("learner group: %d rank(s) ready in %.1f s: %s", self.world, self.start_seconds, self.ranks)

    # -------------------------------------------------------------------------------------------
    def _wait(self, seq: int, timeout: float = 3600.0) -> list:
        import ray

        deadline = time.monotonic() + timeout
        while True:
            out = ray.get(self.mailbox.get_results.remote(seq, self.world, 5.0))
            if out is not None:
                if "error" in out:
                    raise LearnerGroupError(f"data-parallel learner failed: {out['error']}")
                return out["results"]
            if not self._thread.is_alive():
                raise LearnerGroupError(f"data-parallel learner stopped: {self._fit_error!r}")
            if time.monotonic() > deadline:
                raise LearnerGroupError(f"data-parallel learner: no answer to command {seq} within {timeout:.0f} s")

    def _command(self, kind: str, payload) -> list:
        import ray

        self.seq += 1
        ray.get(self.mailbox.put_command.remote(self.seq, kind, payload))
        return self._wait(self.seq)

    def wrap(self, objective):
        """Trainer `wrap_objective` hook: objectives whose `collect` is a closed-loop rollout
        without rewards (CAT-K) collect on the ranks, each on its shard; RL objectives (rollouts +
        rewards, distributed by `learner.smart_collect`) and BC are unchanged."""
        if type(objective).collect is not _base_collect() and not hasattr(objective, "make_experience"):
            return _RankCollectObjective(objective)
        return objective

    def _begin_stage(self, state, objective, stage_index: int, total_steps: int) -> None:
        from learner.weights import state_to_numpy

        st = state.state_dict(objective)
        payload = {
            "stage_index": int(stage_index), "total_steps": int(total_steps),
            "model_state": state_to_numpy(state.model),
            "train_state": {"optimizer": st["optimizer"], "scheduler": st["scheduler"], "objective": st["objective"],
                            "step": st["step"],
                            "reference_model": ({k: v.detach().cpu().numpy() for k, v in st["reference_model"].items()}
                                                if st["reference_model"] is not None else None)},
        }
        self._command("begin_stage", payload)
        state.optimizer = _RemoteOptimizerView(state.optimizer, self)
        state.scheduler = _RemoteSchedulerView(state.scheduler, self) if state.scheduler is not None else None

    def update(self, state, objective, experience, stage_index: int, total_steps: int) -> dict[str, float]:
        """Trainer `updater` hook: one optimiser step on the ranks; the driver's model gets rank
        0's weights, `state.step` advances, the weights are announced to the rollout actors."""
        import ray
        import torch

        from learner.weights import load_numpy_state

        t0 = time.perf_counter()
        key = (id(state), int(stage_index))
        if key != self._stage_key:
            self._begin_stage(state, objective, stage_index, total_steps)
            self._stage_key = key
        groups = shard_scenes(len(experience.inputs.scenario_ids), self.world)
        shards = split_experience(experience, groups)
        t1 = time.perf_counter()
        refs = [ray.put(s) if s is not None else None for s in shards]
        out = self._command("step", {"shards": refs, "rng_state": torch.get_rng_state()})
        t2 = time.perf_counter()
        head = out[0]
        weights_ref = head["weights"][0]
        load_numpy_state(state.model, ray.get(weights_ref))
        objective.load_state_dict(head["objective"])
        if isinstance(state.scheduler, _RemoteSchedulerView):  # the local scheduler follows (the loop's lr)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # "scheduler.step() before optimizer.step()": by design here
                for _ in range(int(head["step"]) - state.step):
                    state.scheduler.local.step()
        state.step = int(head["step"])
        self._train_state_cache = None
        if self.publish is not None:
            self.publish(state.model, weights_ref)
        t3 = time.perf_counter()
        metrics = combine_rank_metrics([o["metrics"] for o in out], [o["count"] for o in out])
        metrics.update(experience.metrics)  # collect metrics (rewards, guards, runtime/*) of the whole batch
        for k in ("grad_norm", "lr"):
            if k in head["metrics"]:
                metrics[k] = head["metrics"][k]
        metrics["runtime/learner_ranks"] = float(self.world)
        metrics["memory/learner_rank_peak_rss_mb"] = max(float(o.get("peak_rss_mb", 0.0)) for o in out)
        metrics["runtime/learner_wait_seconds"] = t2 - t1
        self.stats["steps"] += 1
        self.stats["split_seconds"] += t1 - t0
        self.stats["wait_seconds"] += t2 - t1
        self.stats["load_seconds"] += t3 - t2
        self.stats["step_seconds"] += t3 - t0
        return metrics

    def train_state(self) -> dict:
        """Rank 0's optimiser / scheduler / objective state (for checkpoints), cached per step."""
        if self._train_state_cache is None or self._train_state_cache[0] != self.stats["steps"]:
            self._train_state_cache = (self.stats["steps"], self._command("train_state", None)[0])
        return self._train_state_cache[1]

    def shutdown(self) -> None:
        import ray

        try:
            self.seq += 1
            ray.get(self.mailbox.put_command.remote(self.seq, "stop", None))
            self._thread.join(timeout=60)
        except Exception:  # noqa: BLE001
            pass
        try:
            ray.kill(self.mailbox)
        except Exception:  # noqa: BLE001
            pass


class _RemoteSchedulerView:
    """Like `_RemoteOptimizerView` for the lr scheduler: the local one is stepped in lockstep
    (so the loop's lr is right), `state_dict()` comes from rank 0."""

    def __init__(self, local, group: LearnerGroup):
        self.local = local
        self.group = group

    def __getattr__(self, name):
        return getattr(self.local, name)

    def state_dict(self):
        return self.group.train_state()["scheduler"]


def _base_collect():
    from smart_r1.objectives.base import Objective

    return Objective.collect


class _RankCollectObjective:
    """Proxy whose `collect` defers the objective's own collect (a closed-loop rollout: CAT-K) to
    the ranks: the driver only marks the experience with the rollout seed."""

    def __init__(self, inner):
        object.__setattr__(self, "_inner", inner)

    def __getattr__(self, name):
        return getattr(self._inner, name)

    def __setattr__(self, name, value):
        setattr(self._inner, name, value)

    def collect(self, policy, inputs, generator=None, reference=None):
        from smart_r1.objectives.base import Experience

        seed = int(generator.initial_seed()) if generator is not None else 0
        return Experience(inputs=inputs, extras={RANK_COLLECT: seed})


def combine_rank_metrics(per_rank: list[dict], counts: list[float]) -> dict[str, float]:
    """The step's metrics from the ranks': counts (`n_token`, `n_pair`) summed, every other
    number averaged with the rank's loss count as weight (ranks without a shard left out)."""
    keys = []
    for m in per_rank:
        keys += [k for k in m if k not in keys]
    out: dict[str, float] = {}
    w = [c if (c is not None and math.isfinite(c)) else 1.0 for c in counts]
    for k in keys:
        vals = [(m[k], wi) for m, wi in zip(per_rank, w) if k in m and isinstance(m[k], (int, float))]
        if not vals:
            continue
        if k in LOSS_COUNT_KEYS:
            out[k] = float(sum(v for v, _ in vals))
        else:
            tot = sum(wi for _, wi in vals)
            out[k] = float(sum(v * wi for v, wi in vals) / tot) if tot > 0 else float(np.mean([v for v, _ in vals]))
    return out


# ----------------------------------------------------------------------------------------------
# Generic workload entry (toy workload of the streaming runtime)
# ----------------------------------------------------------------------------------------------


def _average_gradients_hooks(module) -> list:
    import torch.distributed as dist

    world = dist.get_world_size()
    handles = []
    for p in module.parameters():
        if p.requires_grad:
            def hook(param, world=world):
                dist.all_reduce(param.grad, op=dist.ReduceOp.SUM)
                param.grad.div_(world)

            handles.append(p.register_post_accumulate_grad_hook(hook))
    return handles


def _train_loop(config: dict) -> None:
    import ray
    import ray.train
    import torch
    import torch.distributed as dist

    from learner.learner import LearnerCore
    from learner.weights import state_to_numpy

    ctx = ray.train.get_context()
    rank, world = ctx.get_world_rank(), ctx.get_world_size()
    device = "cuda" if config["use_gpu"] and torch.cuda.is_available() else "cpu"
    core = LearnerCore(config["workload_spec"], device=device, torch_threads=config.get("torch_threads", 1))
    # Same initial weights everywhere (rank 0's).
    if dist.is_initialized() and world > 1:
        for t in core.policy.state_dict().values():
            dist.broadcast(t, src=0)
        _average_gradients_hooks(core.policy)
    items = config["items"]
    if not isinstance(items, list):
        items = ray.get(items)
    store = config.get("weight_store")
    n_steps = len(items) // world
    for k in range(n_steps):
        result, rewards = items[k * world + rank]
        metrics = core.apply(result, rewards)
        if rank == 0 and store is not None:
            ray.get(store.publish_value.remote(core.version, state_to_numpy(core.policy)))
        ray.train.report({"step": k, "version": core.version, **{k2: float(v) for k2, v in metrics.items()}})
    if rank == 0 and store is not None:
        ray.get(store.publish_value.remote(core.version, state_to_numpy(core.policy)))


def run_data_parallel(workload_spec, items, num_workers: int = 1, use_gpu: bool = False, weight_store=None,
                      cpus_per_worker: float = 0.5, torch_threads: int = 1, storage_path: str | None = None) -> dict[str, Any]:
    """Generic workloads (the toy one): run `len(items) // num_workers` synchronous data-parallel
    steps, batch `k * world + rank` on each rank, gradients averaged by hooks. Returns the last
    reported metrics. The SMART-R1 schedule uses `LearnerGroup` instead."""
    import ray
    from ray.train import RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    if isinstance(items, list):
        items = ray.put(items)
    trainer = TorchTrainer(
        _train_loop,
        train_loop_config={"workload_spec": workload_spec, "items": items, "use_gpu": use_gpu,
                           "weight_store": weight_store, "torch_threads": torch_threads},
        scaling_config=ScalingConfig(num_workers=num_workers, use_gpu=use_gpu,
                                     resources_per_worker={"CPU": cpus_per_worker}),
        run_config=RunConfig(storage_path=storage_path or tempfile.mkdtemp(prefix="smart_r1_train_"), name="dp-learner"),
    )
    result = trainer.fit()
    if result.error:
        raise result.error
    return dict(result.metrics or {})
