"""SMART-R1 RL experience collection on Ray: the library objective's `collect`, with its three
pieces (`objective.rollout`, `score_scene`, `objective.make_experience`) run by rollout actors,
the scorer pool and the learner (the training process) respectively.

`DistributedCollector.wrap(objective)` returns a proxy that behaves exactly like the library
objective (same loss, update, state, calibration) except that `collect` for RL objectives
(those with `rollout` + `make_experience`, i.e. MPO/GRPO/DPO/PPO) is distributed:

1. the learner publishes its current weights once (new version only after an update) to the
   object store (`WeightStore`);
2. the batch's scenes are split into one chunk per rollout actor (`AgentBatch.select_scenes`);
   each actor pulls the newest weights by version and runs the library rollout on its chunk,
   returning numpy arrays (no torch graph) plus each scene's `Rollouts`;
3. every scene goes to the scorer pool as soon as its chunk arrives (`score_scene` with the
   objective's metric backend and reward mode; the `official` backend runs TF in its own
   process inside the scorer actor);
4. the chunks are concatenated back along the agent axis into one `RolloutBatch` (checked
   against the batch's logged history tokens) and `make_experience` builds the experience the
   library `update` consumes.

Objectives without that split (BC, CAT-K) run their own `collect` unchanged in the learner.
This synchronous mode has policy lag 0 (each step's rollouts use the weights of that step),
which keeps the single-process resume/determinism semantics of the training loop.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import time

import numpy as np
import ray

from learner.runtime import ResilientPool
from learner.weights import WeightStore, state_to_numpy

log = logging.getLogger(__name__)


_BATCH = "__inputs.batch__"  # placeholder for a RolloutBatch field holding the input AgentBatch


def _to_numpy(obj):
    import torch

    if isinstance(obj, torch.Tensor):
        return obj.detach().cpu().numpy()
    return obj


def rollout_batch_to_numpy(rb) -> tuple[str, dict]:
    """(class path, {field: numpy or value}) of a dataclass RolloutBatch."""
    cls = type(rb)
    fields = {f.name: _to_numpy(getattr(rb, f.name)) for f in dataclasses.fields(rb)}
    return f"{cls.__module__}:{cls.__qualname__}", fields


def rollout_batch_from_numpy(cls_path: str, fields: dict, device="cpu"):
    import importlib

    import torch

    mod, name = cls_path.split(":")
    cls = getattr(importlib.import_module(mod), name)
    return cls(**{k: (torch.as_tensor(v).to(device) if isinstance(v, np.ndarray) else v) for k, v in fields.items()})


def concat_agent_axis(parts: list[dict], n_agents: list[int]) -> dict:
    """Concatenate per-chunk RolloutBatch fields along the agent axis (axis 1 of [R, n_agent, ...],
    axis 0 of [n_agent, ...]); other fields must agree across chunks."""
    out = {}
    for k in parts[0]:
        vals = [p[k] for p in parts]
        v0 = vals[0]
        if isinstance(v0, np.ndarray) and v0.ndim >= 2 and all(v.shape[1] == n for v, n in zip(vals, n_agents)):
            out[k] = np.concatenate(vals, axis=1)
        elif isinstance(v0, np.ndarray) and v0.ndim >= 1 and all(v.shape[0] == n for v, n in zip(vals, n_agents)):
            out[k] = np.concatenate(vals, axis=0)
        elif isinstance(v0, str) and v0 == _BATCH:
            out[k] = v0
        elif isinstance(v0, list) and len(parts) > 1:
            out[k] = [x for v in vals for x in v]
        else:
            out[k] = v0
    return out


class SmartRolloutWorker:
    """Rollout actor for SMART-R1: a model replica built from the config, newest weights by version."""

    def __init__(self, cfg_dict: dict, vocab_ref: list, weight_store, torch_threads: int = 1):
        import torch

        from smart_r1.train.config import config_from_dict

        torch.set_num_threads(max(1, int(torch_threads)))
        self.cfg = config_from_dict(cfg_dict, "<runtime>")
        if not torch.cuda.is_available():
            self.cfg.device = "cpu"  # a CPU rollout node (the learner may be on a GPU)
        vocab = ray.get(vocab_ref[0])
        from smart_r1.train.pipeline import build_model_for

        self.model = build_model_for(self.cfg, vocab)
        self.model.eval()
        self.weight_store = weight_store
        self.version = -1
        self.n_loads = 0

    def sync(self, min_version: int) -> int:
        from learner.weights import load_numpy_state

        v, refs, _ = ray.get(self.weight_store.latest.remote())
        while v < min_version:
            time.sleep(0.005)
            v, refs, _ = ray.get(self.weight_store.latest.remote())
        if v > self.version:
            load_numpy_state(self.model, ray.get(refs[0]))
            self.version, self.n_loads = v, self.n_loads + 1
        return self.version

    def rollout(self, objective_name: str, objective_params: dict, inputs, seed: int, min_version: int):
        import torch

        from smart_r1.objectives import get_objective

        t0 = time.perf_counter()
        self.sync(min_version)
        objective = get_objective(objective_name, **objective_params)
        gen = torch.Generator().manual_seed(int(seed))
        inputs = inputs.to(self.cfg.device)
        rb = objective.rollout(self.model, inputs, gen)
        per_scene = [rb.to_rollouts(s) for s in range(len(inputs.scenario_ids))]
        cls_path, fields = rollout_batch_to_numpy(rb)
        for k, v in fields.items():  # the inputs themselves are not sent back (the learner has them)
            if v is inputs.batch or isinstance(v, type(inputs.batch)):
                fields[k] = _BATCH
        return {"cls": cls_path, "fields": fields, "rollouts": per_scene, "version": self.version,
                "seconds": time.perf_counter() - t0, "pid": os.getpid()}

    def info(self) -> dict:
        import psutil

        return {"pid": os.getpid(), "version": self.version, "weight_loads": self.n_loads,
                "rss_bytes": int(psutil.Process().memory_info().rss)}


class SmartScoreWorker:
    def __init__(self, torch_threads: int = 1):
        import torch

        torch.set_num_threads(max(1, int(torch_threads)))
        self._backends: dict = {}

    def score(self, backend: str, backend_params: dict, reward_mode: str, scene, rollouts):
        from smart_r1.metrics.base import get_backend
        from smart_r1.objectives.base import score_scene

        key = (backend, tuple(sorted((backend_params or {}).items())))
        if key not in self._backends:
            self._backends[key] = get_backend(backend, **(backend_params or {}))
        t0 = time.perf_counter()
        reward, scores = score_scene(self._backends[key], reward_mode, scene, rollouts)
        return np.asarray(reward), scores, time.perf_counter() - t0

    def info(self) -> dict:
        import psutil

        return {"pid": os.getpid(), "rss_bytes": int(psutil.Process().memory_info().rss)}


SmartRolloutActor = ray.remote(SmartRolloutWorker)
SmartScorerActor = ray.remote(SmartScoreWorker)


class DistributedCollector:
    """Owns the rollout actors and the scorer pool of a distributed SMART-R1 run."""

    def __init__(self, cfg, vocab, runtime, tracker=None):
        from smart_r1.train.config import resolved_dict

        self.rt = runtime
        self.tracker = tracker
        self.weight_store = WeightStore.remote()
        self.version = -1
        self._published_fingerprint = None
        vocab_ref = [ray.put(vocab)]
        cfg_dict = resolved_dict(cfg)
        rg = runtime.rollout_gpus if ray.cluster_resources().get("GPU", 0) else 0
        self.rollout_actors = [
            SmartRolloutActor.options(num_cpus=runtime.rollout_cpus, num_gpus=rg, max_restarts=runtime.max_restarts,
                                      max_task_retries=0).remote(cfg_dict, vocab_ref, self.weight_store, runtime.torch_threads)
            for _ in range(runtime.num_rollout_actors)
        ]
        self.scorers = [
            SmartScorerActor.options(num_cpus=runtime.scorer_cpus, max_restarts=runtime.max_restarts,
                                     max_task_retries=0).remote(runtime.torch_threads)
            for _ in range(runtime.num_scorers)
        ]
        ray.get([a.info.remote() for a in self.rollout_actors + self.scorers])
        self.stats = {"collect_calls": 0, "rollout_seconds": 0.0, "score_seconds": 0.0, "publish_seconds": 0.0,
                      "collect_seconds": 0.0, "requeued": 0, "fallback_merges": 0}

    # -------------------------------------------------------------------------------------------
    def publish(self, policy) -> int:
        """Publish the policy's weights if they changed since the last publish; returns the version."""
        import torch

        with torch.no_grad():
            fp = float(sum(float(p.detach().float().sum()) for p in policy.parameters()))
        fp = (fp, sum(int(getattr(p, "_version", 0)) for p in policy.parameters()))
        if fp != self._published_fingerprint:
            t0 = time.perf_counter()
            self.version += 1
            ray.get(self.weight_store.publish.remote(self.version, [ray.put(state_to_numpy(policy))]))
            self._published_fingerprint = fp
            self.stats["publish_seconds"] += time.perf_counter() - t0
        return self.version

    def wrap(self, objective):
        if hasattr(objective, "make_experience") and hasattr(objective, "rollout") and getattr(objective, "needs_scenes", False):
            return _DistributedObjective(objective, self)
        return objective

    def collect(self, objective, policy, inputs, generator=None):
        from smart_r1.objectives.base import TrainBatch

        t_start = time.perf_counter()
        version = self.publish(policy)
        seed0 = int(generator.initial_seed()) if generator is not None else 0
        n_scene = len(inputs.scenario_ids)
        n_chunk = max(1, min(len(self.rollout_actors), n_scene))
        bounds = np.linspace(0, n_scene, n_chunk + 1).astype(int)
        chunks = []
        for c in range(n_chunk):
            idx = list(range(bounds[c], bounds[c + 1]))
            sub = inputs.batch.select_scenes(idx)
            rows = torch_isin(inputs.batch.agent_scene, idx)
            chunks.append(TrainBatch(sub, inputs.train_mask[rows], [inputs.scenario_ids[i] for i in idx],
                                     [inputs.scenes[i] for i in idx]).to("cpu"))  # CPU tensors cross processes
        obj_params = _objective_params(objective)
        rollouts = ResilientPool(self.rollout_actors, "rollout", 1, self.rt.max_restarts, "rollout")
        scoring = ResilientPool(self.scorers, "score", self.rt.max_inflight_scores_per_scorer, self.rt.max_restarts, "scorer")
        for c, chunk in enumerate(chunks):
            rollouts.submit(c, objective.name, obj_params, chunk, seed0 + 7919 * c, version)
        parts: dict[int, dict] = {}
        step_rollout_s, step_score_s = [], []
        rewards: dict[int, np.ndarray] = {}
        scores: dict[int, object] = {}
        while rollouts.busy or scoring.busy:
            rollouts.dispatch()
            scoring.dispatch()
            ready, _ = ray.wait(rollouts.refs() + scoring.refs(), num_returns=1, timeout=5.0)
            for ref in ready:
                if ref in rollouts.inflight:
                    status, c, out = rollouts.handle(ref)
                    if status != "ok":
                        if status == "failed":
                            raise RuntimeError(f"rollout of scenes {chunks[c].scenario_ids} failed: {out}") from out
                        continue
                    parts[c] = out
                    self.stats["rollout_seconds"] += out["seconds"]
                    step_rollout_s.append(out["seconds"])
                    for j, ro in enumerate(out["rollouts"]):
                        s = int(bounds[c]) + j
                        scoring.submit(s, objective.backend_name, objective.backend_params, objective.reward_mode,
                                       inputs.scenes[s], ro)
                else:
                    status, s, out = scoring.handle(ref)
                    if status == "failed":
                        raise RuntimeError(f"scoring scene {inputs.scenario_ids[s]!r} failed: {out}") from out
                    if status == "ok" and s not in rewards:  # exactly once per scene
                        rewards[s], scores[s], dt = out
                        self.stats["score_seconds"] += dt
                        step_score_s.append(dt)
        self.stats["requeued"] += rollouts.n_requeued + scoring.n_requeued
        rb = self._merge(parts, chunks, inputs)
        R = rb.token_index.shape[0]
        reward_mat = np.stack([np.asarray(rewards[s]).reshape(R) for s in range(n_scene)], axis=1)  # [R, n_scene]
        exp = objective.make_experience(inputs, rb, reward_mat, [scores[s] for s in range(n_scene)])
        dt = time.perf_counter() - t_start
        self.stats["collect_calls"] += 1
        self.stats["collect_seconds"] += dt
        exp.metrics.update({
            "runtime/collect_seconds": dt,
            "runtime/weights_version": float(version),
            "runtime/policy_lag": 0.0,
            "runtime/scene_rollouts_per_second": n_scene * R / dt if dt > 0 else 0.0,
            # per-stage throughput: one rollout actor's rate, one scorer's rate
            "runtime/rollout_actor_scene_rollouts_per_second": n_scene * R / max(sum(step_rollout_s), 1e-9),
            "runtime/scorer_scenes_per_second": n_scene / max(sum(step_score_s), 1e-9),
            "runtime/rollout_seconds_max": max(step_rollout_s),
            "runtime/score_seconds_total": sum(step_score_s),
        })
        return exp

    def _merge(self, parts, chunks, inputs):
        import torch

        cls_path = parts[0]["cls"]
        n_agents = [int(ch.batch.agent_scene.shape[0]) for ch in chunks]
        fields = concat_agent_axis([parts[c]["fields"] for c in range(len(chunks))], n_agents) if len(chunks) > 1 else parts[0]["fields"]
        fields = {k: (inputs.batch if isinstance(v, str) and v == _BATCH else v) for k, v in fields.items()}
        device = inputs.batch.agent_scene.device
        rb = rollout_batch_from_numpy(cls_path, fields, device)
        # The logged history tokens must line up with the batch's agents.
        hist = torch.as_tensor(fields["token_index"])[0, :, :2]  # [n_agent, 2]
        want = inputs.batch.token_index[:, :2].cpu()  # [n_agent, 2]
        valid = inputs.batch.token_valid[:, :2].cpu().bool()  # [n_agent, 2]
        if hist.shape != want.shape or not torch.equal(hist[valid], want[valid]):
            raise RuntimeError("distributed rollout: merged chunks do not line up with the batch's agents")
        return rb

    def actor_info(self) -> dict:
        return {"rollout": ray.get([a.info.remote() for a in self.rollout_actors]),
                "scorer": ray.get([a.info.remote() for a in self.scorers])}

    def shutdown(self) -> None:
        for a in self.rollout_actors + self.scorers + [self.weight_store]:
            try:
                ray.kill(a)
            except Exception:  # noqa: BLE001
                pass


def torch_isin(agent_scene, idx):
    import torch

    return torch.isin(agent_scene, torch.as_tensor(idx, dtype=agent_scene.dtype, device=agent_scene.device))


def _objective_params(objective) -> dict:
    """The constructor parameters the rollout needs (sampler, n_rollout, ...), from the objective."""
    import inspect

    accepted = inspect.signature(type(objective).__init__).parameters
    out = {}
    for k in accepted:
        if k == "self":
            continue
        if k == "alpha" and getattr(objective, "alpha", None) is None:
            out[k] = "calibrate"
            continue
        if k == "backend" and hasattr(objective, "backend_name"):
            out[k] = objective.backend_name
            continue
        if k == "reward" and hasattr(objective, "reward_mode"):
            out[k] = objective.reward_mode
            continue
        if hasattr(objective, k) and not callable(getattr(type(objective), k, None)):
            v = getattr(objective, k)
            if isinstance(v, (int, float, str, bool, dict, list, type(None))):
                out[k] = v
    return out


class _DistributedObjective:
    """Proxy: the library objective with `collect` distributed (everything else delegated)."""

    def __init__(self, inner, collector: DistributedCollector):
        object.__setattr__(self, "_inner", inner)
        object.__setattr__(self, "_collector", collector)

    def __getattr__(self, name):
        return getattr(self._inner, name)

    def __setattr__(self, name, value):
        setattr(self._inner, name, value)

    def collect(self, policy, inputs, generator=None, reference=None):
        return self._collector.collect(self._inner, policy, inputs, generator)
