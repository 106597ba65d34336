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

With `learner.reference_on: rollout` the training loop hands `collect` the stage's frozen
reference: it is published once per stage (`WeightStore.publish_reference`), every rollout task
names its version, and each actor keeps a second model replica for it, which the engine steps
alongside the policy to record the reference log-probs of the sampled tokens
(`RolloutBatch.ref_logprob` / `.ref_sample_logprob`); they travel back with the chunk and the
learner skips its own reference pass.

Objectives without that split (BC, CAT-K) run their own `collect` unchanged in the learner.

Two modes (`RuntimeConfig.mode`):

- `sync` (default): policy lag 0 (each step's rollouts use the weights of that step), which
  keeps the single-process resume/determinism semantics of the training loop exactly.
- `async`: the training loop announces step t+1's inputs (`prefetch`) before collecting step
  t; the proxy publishes the current weights and submits step t+1's rollout chunks at once,
  each chunk's scenes chained straight into the scorer pool (the scorer task takes the rollout
  task's per-scene output ref, so scoring starts the moment a chunk finishes, with no driver
  loop). The rollouts of t+1 therefore run on the actors while the learner does
  `make_experience` + update of step t. Each prefetched task carries the exact weights
  version it must use (not "newest"), so batch t+1 always uses the weights before update t:
  policy lag exactly 1, deterministic for a seed. `collect(inputs)` takes the in-flight batch
  whose scenario ids and rollout seed match; anything else prefetched is discarded
  (`runtime/prefetch_misses`) and the step is collected synchronously; data older than
  `max_policy_lag` is dropped and re-collected (`runtime/dropped_stale`); a prefetched batch
  lost with an actor falls back to the synchronous (re-queueing) path
  (`runtime/prefetch_failures`).

Actor constructor arguments are small inline values only (the config as a dict, actor names):
the vocabulary and the weight store are looked up by name inside the constructor, so a
restarted actor never depends on an object-store argument (ray-project/ray#53727).
"""

from __future__ import annotations

import dataclasses
import logging
import os
import time
import uuid

import numpy as np
import ray

from learner.cluster import actor_options, on_this_node
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
    # Arrays from the object store are read-only views: copy those, so nothing downstream can
    # write into shared memory (and torch does not warn about non-writable tensors).
    return cls(**{k: (torch.as_tensor(v if v.flags.writeable else v.copy()).to(device) if isinstance(v, np.ndarray) else v)
                  for k, v in fields.items()})


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

    def __init__(self, cfg_dict: dict, names: dict, torch_threads: int = 1):
        """names: {"assets": named `_AssetStore`, "weights": named `WeightStore`, "namespace": ...}
        (plain strings: nothing in the object store is a constructor argument)."""
        import torch

        from smart_r1.train.config import config_from_dict

        torch.set_num_threads(max(1, int(torch_threads)))
        self.cfg = config_from_dict(cfg_dict, "<runtime>")
        from smart_r1.train.config import resolve_device

        # `auto` (the default): this node's GPU if it has one, else cpu; a config naming cuda for
        # the learner still rolls out on a CPU rollout node.
        self.cfg.device = resolve_device(self.cfg.device) if torch.cuda.is_available() else "cpu"
        ns = names.get("namespace")
        assets = ray.get_actor(names["assets"], namespace=ns)
        vocab = ray.get(ray.get(assets.get.remote("vocab"))[0])
        from smart_r1.train.pipeline import build_model_for

        self.model = build_model_for(self.cfg, vocab)
        self.model.eval()
        self.weight_store = ray.get_actor(names["weights"], namespace=ns)
        self.version = -1
        self.n_loads = 0
        self.reference = None  # frozen reference replica, built at the first task that names one
        self.reference_version = -1

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

    def load_exact(self, version: int, weights: list) -> int:
        """Load exactly this version (weights = [ObjectRef of the numpy state]) unless loaded."""
        from learner.weights import load_numpy_state

        if int(version) != self.version:
            load_numpy_state(self.model, ray.get(weights[0]))
            self.version, self.n_loads = int(version), self.n_loads + 1
        return self.version

    def sync_reference(self, version: int):
        """The reference replica at exactly `version` (published before any task names it)."""
        import copy

        from learner.weights import load_numpy_state

        if version != self.reference_version:
            v, refs = ray.get(self.weight_store.latest_reference.remote())
            if v != version:
                raise RuntimeError(f"rollout actor: reference weights v{version} requested, the store holds v{v}")
            if self.reference is None:
                self.reference = copy.deepcopy(self.model).eval()
                self.reference.requires_grad_(False)
            load_numpy_state(self.reference, ray.get(refs[0]))
            self.reference_version = version
        return self.reference

    def rollout(self, objective_name: str, objective_params: dict, inputs, seed: int, min_version: int,
                exact_weights: list | None = None, reference_version: int = -1):
        """exact_weights=None: newest weights with version >= min_version (sync mode, one batch in
        flight); else [ref]: exactly version `min_version` (async mode: the next step's batch may
        start after a newer version was published and must not pick it up). reference_version >= 0:
        the engine also scores the sampled tokens with that reference (`learner.reference_on: rollout`)."""
        import torch

        from smart_r1.objectives import get_objective

        t0 = time.perf_counter()
        if exact_weights is None:
            self.sync(min_version)
        else:
            self.load_exact(min_version, exact_weights)
        reference = self.sync_reference(int(reference_version)) if reference_version >= 0 else None
        objective = get_objective(objective_name, **objective_params)
        gen = torch.Generator().manual_seed(int(seed))
        inputs = inputs.to(self.cfg.device)
        rb = objective.rollout(self.model, inputs, gen, reference=reference)
        per_scene = [rb.to_rollouts(s) for s in range(len(inputs.scenario_ids))]
        cls_path, fields = rollout_batch_to_numpy(rb)
        for k, v in fields.items():  # the inputs themselves are not sent back (the learner has them)
            if v is inputs.batch or isinstance(v, type(inputs.batch)):
                fields[k] = _BATCH
        return {"cls": cls_path, "fields": fields, "rollouts": per_scene, "version": self.version,
                "seconds": time.perf_counter() - t0, "pid": os.getpid()}

    def rollout_split(self, *args, **kwargs):
        """`rollout` as (chunk output without the per-scene Rollouts, Rollouts of scene 0, 1, ...):
        called with num_returns = 1 + scenes, so each scorer task depends on its scene only."""
        out = self.rollout(*args, **kwargs)
        per_scene = out.pop("rollouts")
        return (out, *per_scene)

    def info(self) -> dict:
        return {"pid": os.getpid(), "version": self.version, "weight_loads": self.n_loads,
                "reference_version": self.reference_version, **_proc_stats()}


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
        return {"pid": os.getpid(), **_proc_stats()}


def _proc_stats() -> dict:
    """This process's RSS, peak RSS and CPU seconds (user + system)."""
    import resource

    import psutil

    p = psutil.Process()
    t = p.cpu_times()
    return {"rss_bytes": int(p.memory_info().rss), "peak_rss_bytes": int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) * 1024,
            "cpu_seconds": float(t.user + t.system)}


SmartRolloutActor = ray.remote(SmartRolloutWorker)
SmartScorerActor = ray.remote(SmartScoreWorker)


@ray.remote(num_cpus=0, max_restarts=0)
class _AssetStore:
    """Named actor holding run assets (the vocabulary) as [ObjectRef]: rollout actors fetch them
    in their constructor instead of receiving object-store constructor arguments."""

    def __init__(self):
        self._refs: dict[str, list] = {}

    def put(self, key: str, refs: list) -> None:
        self._refs[key] = refs

    def get(self, key: str) -> list:
        return self._refs[key]


@dataclasses.dataclass
class _Prefetched:
    """One step's batch in flight (async mode)."""

    scenario_ids: list
    seed0: int
    version: int
    chunks: list
    bounds: np.ndarray
    chunk_refs: list  # [ObjectRef of the chunk output] per chunk
    score_refs: list  # [ObjectRef of (reward, scores, seconds)] per scene
    submitted: float


class DistributedCollector:
    """Owns the rollout actors and the scorer pool of a distributed SMART-R1 run."""

    def __init__(self, cfg, vocab, runtime, tracker=None):
        from smart_r1.train.config import resolved_dict

        self.rt = runtime
        self.tracker = tracker
        if runtime.mode not in ("sync", "async"):
            raise ValueError(f"runtime.mode: {runtime.mode!r} is not 'sync' or 'async'")
        tag = uuid.uuid4().hex[:12]
        ns = ray.get_runtime_context().namespace
        self.names = {"assets": f"smart_r1_assets_{tag}", "weights": f"smart_r1_weights_{tag}", "namespace": ns}
        # Both hold the run's state: pinned to the learner's node (a lost rollout node must not take them along).
        self.weight_store = WeightStore.options(name=self.names["weights"], namespace=ns, **on_this_node()).remote()
        self.assets = _AssetStore.options(name=self.names["assets"], namespace=ns, **on_this_node()).remote()
        self._vocab_ref = ray.put(vocab)
        ray.get(self.assets.put.remote("vocab", [self._vocab_ref]))
        self.version = -1
        self._published_fingerprint = None
        self.reference_version = -1
        self._reference_fingerprint = None
        self._weight_refs: dict[int, object] = {}  # version -> ObjectRef (recent versions, async mode)
        cfg_dict = resolved_dict(cfg)
        rg = runtime.rollout_gpus if ray.cluster_resources().get("GPU", 0) else 0
        self.rollout_actors = [
            SmartRolloutActor.options(**actor_options(runtime.rollout_cpus, runtime.rollout_resources, num_gpus=rg,
                                                      max_restarts=runtime.max_restarts, max_task_retries=0)
                                      ).remote(cfg_dict, self.names, runtime.torch_threads)
            for _ in range(runtime.num_rollout_actors)
        ]
        self.scorers = [
            SmartScorerActor.options(**actor_options(runtime.scorer_cpus, runtime.scorer_resources,
                                                     max_restarts=runtime.max_restarts, max_task_retries=0)
                                     ).remote(runtime.torch_threads)
            for _ in range(runtime.num_scorers)
        ]
        ray.get([a.info.remote() for a in self.rollout_actors + self.scorers])
        self.stats = {"collect_calls": 0, "rollout_seconds": 0.0, "score_seconds": 0.0, "publish_seconds": 0.0,
                      "collect_seconds": 0.0, "requeued": 0, "fallback_merges": 0,
                      "prefetches": 0, "prefetch_hits": 0, "prefetch_misses": 0, "prefetch_failures": 0,
                      "dropped_stale": 0, "collect_wait_seconds": 0.0}

    # -------------------------------------------------------------------------------------------
    @staticmethod
    def _fingerprint(policy):
        import torch

        with torch.no_grad():
            fp = float(sum(float(p.detach().float().sum()) for p in policy.parameters()))
        return fp, sum(int(getattr(p, "_version", 0)) for p in policy.parameters())

    def publish(self, policy, weights_ref=None) -> int:
        """Publish the policy's weights if they changed since the last publish; returns the version.
        `weights_ref`: the same weights already in the object store (put there by rank 0 of the
        data-parallel learner, `learner.train_dp.LearnerGroup`): announced as is, not put again."""
        fp = self._fingerprint(policy)
        if fp != self._published_fingerprint:
            t0 = time.perf_counter()
            self.version += 1
            ref = weights_ref if weights_ref is not None else ray.put(state_to_numpy(policy))
            ray.get(self.weight_store.publish.remote(self.version, [ref]))
            if self.rt.mode == "async":
                self._weight_refs[self.version] = ref
            for v in [v for v in self._weight_refs if v < self.version - max(2, self.rt.max_policy_lag + 1)]:
                del self._weight_refs[v]  # in-flight batches only use the last max_policy_lag+1 versions
            self._published_fingerprint = fp
            self.stats["publish_seconds"] += time.perf_counter() - t0
        return self.version

    def publish_reference(self, reference) -> int:
        """Publish the frozen reference's weights if they are not the published ones (once per RL
        stage: the stage-start snapshot); returns its version, -1 without a reference."""
        if reference is None:
            return -1
        fp = self._fingerprint(reference)
        if fp != self._reference_fingerprint:
            t0 = time.perf_counter()
            self.reference_version += 1
            ray.get(self.weight_store.publish_reference.remote(self.reference_version, [ray.put(state_to_numpy(reference))]))
            self._reference_fingerprint = fp
            self.stats["publish_seconds"] += time.perf_counter() - t0
        return self.reference_version

    def current_version(self, policy) -> int:
        """The version the policy's weights have or would get if published now (no publish)."""
        return self.version if self._fingerprint(policy) == self._published_fingerprint else self.version + 1

    def wrap(self, objective):
        if hasattr(objective, "make_experience") and hasattr(objective, "rollout") and getattr(objective, "needs_scenes", False):
            return _DistributedObjective(objective, self)
        return objective

    def _chunks(self, inputs):
        """One chunk per rollout actor (scenes split evenly), CPU tensors: (chunks, bounds)."""
        from smart_r1.objectives.base import TrainBatch

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
        return chunks, bounds

    def collect(self, objective, policy, inputs, generator=None, reference=None):
        """Synchronous collect (policy lag 0). `reference`: score the tokens with it on the actors."""
        t_start = time.perf_counter()
        version = self.publish(policy)
        ref_version = self.publish_reference(reference)
        seed0 = int(generator.initial_seed()) if generator is not None else 0
        n_scene = len(inputs.scenario_ids)
        chunks, bounds = self._chunks(inputs)
        obj_params = _objective_params(objective)
        rollouts = ResilientPool(self.rollout_actors, "rollout", 1, self.rt.max_restarts, "rollout")
        scoring = ResilientPool(self.scorers, "score", self.rt.max_inflight_scores_per_scorer, self.rt.max_restarts, "scorer")
        for c, chunk in enumerate(chunks):
            rollouts.submit(c, objective.name, obj_params, chunk, seed0 + 7919 * c, version, None, ref_version)
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
        exp, R = self._experience(objective, inputs, parts, chunks, rewards, scores)
        dt = time.perf_counter() - t_start
        self.stats["collect_calls"] += 1
        self.stats["collect_seconds"] += dt
        self.stats["collect_wait_seconds"] += dt
        exp.metrics.update({
            "runtime/collect_seconds": dt,
            "runtime/collect_wait_seconds": dt,  # the learner is blocked for the whole collect
            "runtime/weights_version": float(version),
            "runtime/policy_lag": 0.0,
            "runtime/scene_rollouts_per_second": n_scene * R / dt if dt > 0 else 0.0,
            **_stage_metrics(n_scene, R, step_rollout_s, step_score_s),
        })
        return exp

    # ---- async mode -------------------------------------------------------------------------
    def prefetch(self, objective, policy, inputs, generator=None, reference=None) -> _Prefetched:
        """Submit this batch's rollouts with the current weights (published first if changed),
        each chunk's scenes chained into the scorer pool; returns the in-flight handle."""
        version = self.publish(policy)
        ref_version = self.publish_reference(reference)
        seed0 = int(generator.initial_seed()) if generator is not None else 0
        chunks, bounds = self._chunks(inputs)
        obj_params = _objective_params(objective)
        weights = [self._weight_refs[version]]
        chunk_refs, score_refs = [], []
        for c, chunk in enumerate(chunks):
            n_c = int(bounds[c + 1] - bounds[c])
            actor = self.rollout_actors[c % len(self.rollout_actors)]
            refs = actor.rollout_split.options(num_returns=1 + n_c).remote(
                objective.name, obj_params, chunk, seed0 + 7919 * c, version, weights, ref_version)
            chunk_refs.append(refs[0])
            for j in range(n_c):
                s = int(bounds[c]) + j
                scorer = self.scorers[s % len(self.scorers)]
                score_refs.append(scorer.score.remote(objective.backend_name, objective.backend_params,
                                                      objective.reward_mode, inputs.scenes[s], refs[1 + j]))
        self.stats["prefetches"] += 1
        return _Prefetched(list(inputs.scenario_ids), seed0, version, chunks, bounds, chunk_refs, score_refs,
                           time.perf_counter())

    def finish(self, objective, policy, inputs, pending: _Prefetched):
        """Wait for a prefetched batch and build its experience; None if it was lost (an actor
        died with it: the caller re-collects synchronously)."""
        t_start = time.perf_counter()
        try:
            outs = ray.get(pending.chunk_refs)
            scored = ray.get(pending.score_refs)
        except ray.exceptions.RayError as err:
            if isinstance(err, ray.exceptions.RayTaskError) and not isinstance(err, ray.exceptions.RayActorError):
                raise RuntimeError(f"prefetched rollout/scoring of scenes {pending.scenario_ids} failed: {err}") from err
            log.warning("prefetched batch lost (%s); collecting it synchronously", type(err).__name__)
            self.stats["prefetch_failures"] += 1
            return None
        wait = time.perf_counter() - t_start
        n_scene = len(inputs.scenario_ids)
        parts = dict(enumerate(outs))
        step_rollout_s = [o["seconds"] for o in outs]
        step_score_s = [float(x[2]) for x in scored]
        self.stats["rollout_seconds"] += sum(step_rollout_s)
        self.stats["score_seconds"] += sum(step_score_s)
        exp, R = self._experience(objective, inputs, parts, pending.chunks, [x[0] for x in scored], [x[1] for x in scored])
        dt = time.perf_counter() - t_start
        self.stats["collect_calls"] += 1
        self.stats["collect_seconds"] += dt
        self.stats["collect_wait_seconds"] += wait
        span = time.perf_counter() - pending.submitted  # prefetch -> experience ready
        exp.metrics.update({
            "runtime/collect_seconds": dt,
            "runtime/collect_wait_seconds": wait,
            "runtime/weights_version": float(pending.version),
            "runtime/scene_rollouts_per_second": n_scene * R / span if span > 0 else 0.0,
            **_stage_metrics(n_scene, R, step_rollout_s, step_score_s),
        })
        return exp

    def _experience(self, objective, inputs, parts, chunks, rewards, scores):
        """Merge the chunks' rollouts and build the library experience. rewards[s]: [R] of scene s,
        scores[s]: its SceneScores. Returns (experience, R)."""
        n_scene = len(inputs.scenario_ids)
        rb = self._merge(parts, chunks, inputs)
        R = rb.token_index.shape[0]
        reward_mat = np.stack([np.asarray(rewards[s]).reshape(R) for s in range(n_scene)], axis=1)  # [R, n_scene]
        return objective.make_experience(inputs, rb, reward_mat, [scores[s] for s in range(n_scene)]), R

    def _merge(self, parts, chunks, inputs):
        import torch

        cls_path = parts[0]["cls"]
        n_agents = [int(ch.batch.agent_scene.shape[0]) for ch in chunks]
        fields = concat_agent_axis([parts[c]["fields"] for c in range(len(chunks))], n_agents) if len(chunks) > 1 else parts[0]["fields"]
        fields = {k: (inputs.batch if isinstance(v, str) and v == _BATCH else v) for k, v in fields.items()}
        device = inputs.batch.agent_scene.device
        rb = rollout_batch_from_numpy(cls_path, fields, device)
        # The logged history tokens must line up with the batch's agents.
        hist = torch.as_tensor(np.array(fields["token_index"][0, :, :2]))  # [n_agent, 2] (a copy: read-only arrays)
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


def _stage_metrics(n_scene: int, n_rollout: int, rollout_s: list[float], score_s: list[float]) -> dict[str, float]:
    """Per-stage throughput of one collect: one rollout actor's rate, one scorer's rate, busy seconds."""
    return {
        "runtime/rollout_actor_scene_rollouts_per_second": n_scene * n_rollout / max(sum(rollout_s), 1e-9),
        "runtime/scorer_scenes_per_second": n_scene / max(sum(score_s), 1e-9),
        "runtime/rollout_seconds_max": max(rollout_s),
        "runtime/rollout_seconds_total": sum(rollout_s),
        "runtime/score_seconds_total": sum(score_s),
    }


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
    """Proxy: the library objective with `collect` distributed (everything else delegated).

    In async mode it also has `prefetch` (called by the training loop with the next step's
    inputs before the current step's `collect`); see the module docstring."""

    def __init__(self, inner, collector: DistributedCollector):
        object.__setattr__(self, "_inner", inner)
        object.__setattr__(self, "_collector", collector)
        object.__setattr__(self, "_pending", [])  # [_Prefetched], oldest first
        object.__setattr__(self, "_fresh", None)  # the batch prefetched right before this step's collect
        object.__setattr__(self, "_policy", None)  # the policy module (known from the first collect)
        object.__setattr__(self, "_deferred", None)  # (inputs, generator) prefetched before the first collect
        object.__setattr__(self, "_reference", None)  # the stage's reference when the actors score with it

    def __getattr__(self, name):
        if name == "prefetch" and self._collector.rt.mode != "async":
            raise AttributeError(name)  # sync mode: the loop sees no prefetch hook
        return getattr(self._inner, name)

    def __setattr__(self, name, value):
        setattr(self._inner, name, value)

    @property
    def prefetch(self):
        """The training loop's prefetch hook: only in async mode (in sync mode the loop sees no
        hook, so it does not even build the next step's inputs: sync stays bit-identical)."""
        if self._collector.rt.mode != "async":
            raise AttributeError("prefetch")
        return self._prefetch

    def _prefetch(self, inputs, generator=None, reference=None) -> None:
        """Start the next step's rollouts now (async mode). The loop calls this before the
        stage's first `collect`, when the proxy does not know the policy yet: that request is
        deferred to the first `collect` (which then also runs its own batch on the chained path)."""
        object.__setattr__(self, "_reference", reference)
        policy = self.__dict__.get("_policy")
        if policy is None:
            object.__setattr__(self, "_deferred", (inputs, generator))
            return
        self._submit(inputs, generator, policy)

    def _submit(self, inputs, generator, policy) -> None:
        pending = self._collector.prefetch(self._inner, policy, inputs, generator, self.__dict__["_reference"])
        self._pending.append(pending)
        object.__setattr__(self, "_fresh", pending)

    def collect(self, policy, inputs, generator=None, reference=None):
        col = self._collector
        object.__setattr__(self, "_policy", policy)
        object.__setattr__(self, "_reference", reference)
        if col.rt.mode != "async":
            return col.collect(self._inner, policy, inputs, generator, reference)
        seed0 = int(generator.initial_seed()) if generator is not None else 0
        fresh = self._fresh
        object.__setattr__(self, "_fresh", None)
        # Candidates: everything prefetched before this step (the fresh one is for the next step).
        cands = [p for p in self._pending if p is not fresh]
        match = next((p for p in cands if p.scenario_ids == list(inputs.scenario_ids) and p.seed0 == seed0), None)
        for p in cands:
            self._pending.remove(p)
            if p is not match:
                col.stats["prefetch_misses"] += 1  # prefetched for this step but not what the loop asked for
                log.warning("async collect: prefetched batch %s does not match this step's %s; discarded",
                            p.scenario_ids, list(inputs.scenario_ids))
        deferred = self.__dict__.get("_deferred")
        if match is None and deferred is not None:
            # First step of a stage (or after resume): this batch goes out now with the current
            # weights (lag 0), the deferred next batch right behind it with the same weights.
            object.__setattr__(self, "_deferred", None)
            match = col.prefetch(self._inner, policy, inputs, generator, reference)
            self._pending.append(col.prefetch(self._inner, policy, deferred[0], deferred[1], reference))  # for the next step
        exp, lag, current = None, 0, col.current_version(policy)
        if match is not None:
            lag = current - match.version
            if lag > col.rt.max_policy_lag:
                col.stats["dropped_stale"] += 1
                log.info("async collect: prefetched batch with weights v%d is %d versions old (> max_policy_lag %d); "
                         "re-collected", match.version, lag, col.rt.max_policy_lag)
            else:
                exp = col.finish(self._inner, policy, inputs, match)
                if exp is not None:
                    col.stats["prefetch_hits"] += 1
        if exp is None:
            lag = 0
            exp = col.collect(self._inner, policy, inputs, generator, reference)
        exp.metrics.update({
            "runtime/policy_lag": float(lag),
            "runtime/prefetch_misses": float(col.stats["prefetch_misses"]),
            "runtime/dropped_stale": float(col.stats["dropped_stale"]),
            "runtime/prefetch_failures": float(col.stats["prefetch_failures"]),
        })
        return exp
