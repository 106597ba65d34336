"""Scaled-out evaluation on Ray: `smart-r1 evaluate --ray` and distributed training-time validation.

Evaluation (`RayExecutor`, an executor of `smart_r1.eval.evaluate.evaluate`):

- the library builds the work list (one `WorkItem` per (source, scene) not yet in the scores
  file) and keeps the rows, the Parquet `ScoreStore`, resume and the report: one code path for
  single-process and distributed evaluation;
- rollout actors (`EvalRolloutWorker`) rebuild each source from its spec once
  (`smart_r1.eval.sources.source_from_spec`: checkpoint, `baseline:NAME`, rollout file) and run
  `rollout_scene` (same per-scene seeds as the single-process path, hence the same rows);
- scorer actors (`EvalScoreWorker`) run `score_rollouts` with the metric backend (fast by
  default; `official` starts its TensorFlow subprocess inside the scorer actor, never in the
  driver);
- scenes stream: at most `max_in_flight` items are in the pipeline, an item goes to a scorer as
  soon as its rollouts arrive, and its row is handed to the library (which appends it to the
  store and flushes periodically); a killed run re-run with the same scores file simulates only
  the missing (source, scene) pairs;
- actors are created with `max_restarts`: a task lost with its actor is re-queued
  (`learner.runtime.ResilientPool`) and its scene is scored exactly once; a scene whose rollout
  or scoring raises is reported by id (`EvaluationResult.failed`) and skipped.

Validation (`DistributedValidator`, the `evaluator` hook of `smart_r1.train.loop.Trainer`):
the held-out chunks of `loop.evaluate` (`eval_chunks`) go to validation actors that hold a
model replica (weights published per call through `learner.weights.WeightStore`) and run
`loop.eval_chunk` with the chunk's own generator (`eval_chunk_generator`); the scenes are scored
on scorer actors and `loop.combine_eval` gives the same dict as `loop.evaluate` (same numbers up
to float summation order).
"""

from __future__ import annotations

import copy
import logging
import math
import os
import time
import uuid
from typing import Any, Callable, Iterable, Sequence

import ray

from learner.cluster import actor_options, connect_ray, on_this_node, parse_resources
from learner.runtime import ResilientPool
from learner.weights import WeightStore, load_numpy_state, state_to_numpy

log = logging.getLogger(__name__)


def _set_threads(n: int) -> None:
    try:
        import torch

        torch.set_num_threads(max(1, int(n)))
    except ImportError:  # pragma: no cover - torch is a dependency
        pass


# ----------------------------------------------------------------------------------------------
# Actors
# ----------------------------------------------------------------------------------------------


class EvalRolloutWorker:
    """Builds each rollout source once (by spec) and rolls it out on scenes."""

    def __init__(self, torch_threads: int = 1):
        _set_threads(torch_threads)
        self._sources: dict[tuple, Any] = {}
        self.n_tasks = 0

    def source(self, spec: tuple):
        from smart_r1.eval.sources import source_from_spec

        if spec not in self._sources:
            self._sources[spec] = source_from_spec(spec)
        return self._sources[spec]

    def rollouts(self, spec: tuple, scene, num_rollouts: int, seed: int) -> tuple:
        from smart_r1.eval.evaluate import rollout_scene

        self.n_tasks += 1
        rollouts, seconds = rollout_scene(self.source(spec), scene, num_rollouts, seed)
        return rollouts, seconds, os.getpid()

    def pid(self) -> int:
        return os.getpid()

    def info(self) -> dict:
        return {"pid": os.getpid(), "n_tasks": self.n_tasks, "sources": len(self._sources)}


class EvalScoreWorker:
    """Metric backends, built on first use per (name, rollout count, config year) and reused."""

    def __init__(self, torch_threads: int = 1):
        _set_threads(torch_threads)
        self._backends: dict[tuple, Any] = {}

    def backend(self, name: str, num_rollouts: int, config_year: int):
        from smart_r1.eval.evaluate import make_backend

        key = (name, int(num_rollouts), int(config_year))
        if key not in self._backends:
            self._backends[key] = make_backend(name, int(num_rollouts), int(config_year))
        return self._backends[key]

    def score(self, backend_spec: tuple, source_name: str, source_kind: str, scene, rollout_out: tuple, seed: int):
        from smart_r1.eval.evaluate import score_rollouts

        name, num_rollouts, config_year = backend_spec
        rollouts, seconds, _pid = rollout_out
        return score_rollouts(source_name, source_kind, scene, rollouts, self.backend(name, num_rollouts, config_year), seed, seconds)

    def score_scene(self, backend_name: str, scene, rollouts):
        """`SceneScores` of one scene with a default-configured backend (validation)."""
        from smart_r1.metrics.base import get_backend

        key = (backend_name, None, None)
        if key not in self._backends:
            self._backends[key] = get_backend(backend_name)
        return self._backends[key].score(scene, rollouts)

    def close(self) -> None:
        for b in self._backends.values():
            if hasattr(b, "close"):
                b.close()
        self._backends.clear()

    def pid(self) -> int:
        return os.getpid()


EvalRolloutActor = ray.remote(EvalRolloutWorker)
EvalScorerActor = ray.remote(EvalScoreWorker)


def _kill_all(actors: Sequence) -> None:
    for a in actors:
        try:
            ray.kill(a, no_restart=True)
        except Exception:  # noqa: BLE001 - already gone
            pass


# ----------------------------------------------------------------------------------------------
# smart-r1 evaluate --ray
# ----------------------------------------------------------------------------------------------


class RayExecutor:
    """Runs `evaluate`'s work items on Ray actors (see the module docstring).

    `ray.init` must have been called (`learner.cluster.connect_ray`). Actors live for one `run`.
    `on_event(executor, event, key)` (optional; tests) is called after every handled task with
    event `rollout` / `score` / `requeued` / `failed`. After a run, `stats` holds task counts,
    re-queues, `wall_seconds` and `first_row_seconds` / `last_row_seconds` (since the run began:
    the first includes starting the actors).
    """

    needs_backend = False  # the driver never builds the metric backend (no TF in the driver)

    def __init__(self, num_rollout_workers: int = 2, num_scorers: int = 1, max_in_flight: int | None = None,
                 max_restarts: int = 3, rollout_cpus: float | None = None, scorer_cpus: float | None = None,
                 torch_threads: int = 1, max_inflight_per_actor: int = 2, on_event: Callable | None = None,
                 start_timeout_s: float = 300.0, rollout_resources: dict | str | None = None,
                 scorer_resources: dict | str | None = None):
        if num_rollout_workers < 1 or num_scorers < 1:
            raise ValueError(f"RayExecutor: need >= 1 rollout worker and scorer, got {num_rollout_workers}, {num_scorers}")
        self.num_rollout_workers = int(num_rollout_workers)
        self.num_scorers = int(num_scorers)
        self.max_inflight_per_actor = max(1, int(max_inflight_per_actor))
        self.max_in_flight = int(max_in_flight or 2 * self.max_inflight_per_actor * (self.num_rollout_workers + self.num_scorers))
        self.max_restarts = int(max_restarts)
        self.rollout_cpus, self.scorer_cpus, self.torch_threads = rollout_cpus, scorer_cpus, torch_threads
        self.on_event = on_event
        self.start_timeout_s = float(start_timeout_s)
        # custom resources (e.g. {"rollout": 1}): the actors land on the nodes advertising them
        self.rollout_resources = parse_resources(rollout_resources, "rollout_resources")
        self.scorer_resources = parse_resources(scorer_resources, "scorer_resources")
        self.rollout_actors: list = []
        self.scorers: list = []
        self.stats: dict[str, float] = {}

    def _start(self) -> None:
        if not ray.is_initialized():
            raise RuntimeError("RayExecutor: call ray.init() first (learner.cluster.connect_ray)")
        rc, sc = self.actor_cpus(float(ray.cluster_resources().get("CPU", 0.0)))
        opts = dict(max_restarts=self.max_restarts, max_task_retries=0)
        self.rollout_actors = [EvalRolloutActor.options(**actor_options(rc, self.rollout_resources, **opts)).remote(self.torch_threads)
                               for _ in range(self.num_rollout_workers)]
        self.scorers = [EvalScorerActor.options(**actor_options(sc, self.scorer_resources, **opts)).remote(self.torch_threads)
                        for _ in range(self.num_scorers)]
        try:  # an actor Ray cannot place would otherwise hang the run silently
            ray.get([a.pid.remote() for a in self.rollout_actors + self.scorers], timeout=self.start_timeout_s)
        except ray.exceptions.GetTimeoutError as err:
            self.shutdown()
            raise RuntimeError(
                f"RayExecutor: {self.num_rollout_workers} rollout actors ({rc} CPU each) and {self.num_scorers} scorers "
                f"({sc} CPU each) did not all start within {self.start_timeout_s:.0f} s; cluster resources "
                f"{ray.cluster_resources()} (fewer actors, or smaller rollout_cpus / scorer_cpus)") from err

    def actor_cpus(self, cluster_cpus: float) -> tuple[float, float]:
        """(rollout, scorer) CPUs per actor: the given values, else 1 each, shrunk to an equal
        share when the actors would not all fit on `cluster_cpus` (e.g. 3 actors on a 2-CPU node)."""
        n = self.num_rollout_workers + self.num_scorers
        share = 1.0 if cluster_cpus <= 0 else min(1.0, math.floor(cluster_cpus / n * 1e4) / 1e4)
        rc = share if self.rollout_cpus is None else float(self.rollout_cpus)
        sc = share if self.scorer_cpus is None else float(self.scorer_cpus)
        need = rc * self.num_rollout_workers + sc * self.num_scorers
        if cluster_cpus > 0 and need > cluster_cpus + 1e-6:
            raise ValueError(f"RayExecutor: actors need {need} CPUs ({self.num_rollout_workers} x {rc} rollout + "
                             f"{self.num_scorers} x {sc} scorer), the cluster has {cluster_cpus}")
        return rc, sc

    def shutdown(self) -> None:
        for s in self.scorers:
            try:
                ray.get(s.close.remote(), timeout=30)
            except Exception:  # noqa: BLE001 - dead or busy: killed below
                pass
        _kill_all(self.rollout_actors + self.scorers)
        self.rollout_actors, self.scorers = [], []

    def run(self, items: Iterable, sources: Sequence, backend, on_result, on_error, on_rollouts=None) -> None:
        from smart_r1.metrics.base import MetricBackend

        if isinstance(backend, MetricBackend):  # a backend object: rebuilt by name in the scorers
            backend = (backend.name, 0, int(getattr(backend, "config_year", 2025)))
        if not isinstance(backend, tuple):
            raise TypeError(f"RayExecutor: backend must be (name, num_rollouts, config_year), got {backend!r}")
        t0 = time.perf_counter()
        self._start()
        rollouts = ResilientPool(self.rollout_actors, "rollouts", self.max_inflight_per_actor, self.max_restarts, "eval rollout")
        scoring = ResilientPool(self.scorers, "score", self.max_inflight_per_actor, self.max_restarts, "eval scorer")
        it = iter(items)
        exhausted = False
        pending: dict[tuple, tuple] = {}  # key -> (item, scene ref): in the pipeline
        n = dict(rollout_tasks=0, score_tasks=0, requeued=0, failed=0, items=0)

        def event(kind: str, key) -> None:
            if self.on_event is not None:
                self.on_event(self, kind, key)

        try:
            while True:
                while not exhausted and len(pending) < self.max_in_flight:
                    try:
                        item = next(it)
                    except StopIteration:
                        exhausted = True
                        break
                    scene_ref = ray.put(item.scene)
                    pending[item.key] = (item, scene_ref)
                    n["items"] += 1
                    rollouts.submit(item.key, item.source_spec, scene_ref, item.num_rollouts, item.seed)
                rollouts.dispatch()
                scoring.dispatch()
                refs = rollouts.refs() + scoring.refs()
                if not refs:
                    if exhausted:
                        break
                    continue
                ready, _ = ray.wait(refs, num_returns=1)
                for ref in ready:
                    pool = rollouts if ref in rollouts.inflight else scoring
                    status, key, value = pool.handle(ref)
                    if status == "requeued":
                        n["requeued"] += 1
                        event("requeued", key)
                    elif status != "ok":
                        n["failed"] += 1
                        item, _ = pending.pop(key)
                        on_error(item, _cause(value))
                        event("failed", key)
                    elif pool is rollouts:
                        n["rollout_tasks"] += 1
                        item, scene_ref = pending[key]
                        src = sources[item.source_index]
                        if on_rollouts is not None:
                            on_rollouts(item)
                        bspec = (backend[0], item.num_rollouts, backend[2])
                        scoring.submit(key, bspec, src.name, src.kind, scene_ref, value, item.seed)
                        event("rollout", key)
                    else:
                        n["score_tasks"] += 1
                        n.setdefault("first_row_seconds", time.perf_counter() - t0)
                        n["last_row_seconds"] = time.perf_counter() - t0
                        item, _ = pending.pop(key)
                        on_result(item, value)
                        event("score", key)
        finally:
            n["wall_seconds"] = time.perf_counter() - t0
            n["rollout_requeued"], n["score_requeued"] = rollouts.n_requeued, scoring.n_requeued
            self.stats = {k: float(v) for k, v in n.items()}
            self.shutdown()


def _cause(err: BaseException) -> BaseException:
    """The application exception inside a RayTaskError (so reports name the real error)."""
    cause = getattr(err, "cause", None)
    return cause if isinstance(cause, BaseException) else err


def evaluate_distributed(*args, num_rollout_workers: int = 2, num_scorers: int = 1, address: str | None = None,
                         max_restarts: int = 3, max_in_flight: int | None = None, rollout_resources=None,
                         scorer_resources=None, rollout_cpus: float | None = None, scorer_cpus: float | None = None,
                         on_event: Callable | None = None, **kwargs):
    """`smart_r1.eval.evaluate.evaluate` with a `RayExecutor`; connects to Ray (`address`, or a
    private local instance, stopped at the end) when not yet connected."""
    from smart_r1.eval.evaluate import evaluate

    started = connect_ray(address)
    try:
        ex = RayExecutor(num_rollout_workers=num_rollout_workers, num_scorers=num_scorers, max_restarts=max_restarts,
                         max_in_flight=max_in_flight, rollout_resources=rollout_resources,
                         scorer_resources=scorer_resources, rollout_cpus=rollout_cpus, scorer_cpus=scorer_cpus,
                         on_event=on_event)
        result = evaluate(*args, executor=ex, **kwargs)
        result.runtime_stats = dict(ex.stats)
        return result
    finally:
        if started:
            ray.shutdown()


# ----------------------------------------------------------------------------------------------
# Training-time validation
# ----------------------------------------------------------------------------------------------


class ValidationWorker:
    """A model replica for validation chunks; weights by version from the `WeightStore`."""

    def __init__(self, weight_store_name: str, namespace: str | None, torch_threads: int = 1):
        _set_threads(torch_threads)
        # Looked up by name: no actor handle among the constructor arguments of a restartable
        # actor (ray-project/ray#53727), as in learner.smart_collect.
        self.weight_store = ray.get_actor(weight_store_name, namespace=namespace)
        self.model = None
        self.model_key = None
        self.split = None
        self.split_key = None
        self.version = -1

    def _context(self, model_ref: list, split_ref: list, vocab_ref: list) -> None:
        mk = model_ref[0].hex()
        if mk != self.model_key:
            self.model = ray.get(model_ref[0])
            self.model.eval()
            self.model_key, self.version = mk, -1
        sk = (split_ref[0].hex(), vocab_ref[0].hex())
        if sk != self.split_key:
            self.split, self.vocab = ray.get(split_ref[0]), ray.get(vocab_ref[0])
            self.split_key = sk

    def _sync(self, version: int) -> None:
        v, refs, _ = ray.get(self.weight_store.latest.remote())
        while v < version:
            time.sleep(0.005)
            v, refs, _ = ray.get(self.weight_store.latest.remote())
        if v != self.version:
            load_numpy_state(self.model, ray.get(refs[0]))
            self.version = v

    def chunk(self, model_ref: list, split_ref: list, vocab_ref: list, version: int, chunk_index: int, idx: list,
              eval_cfg, seed: int, max_agents: int, radius_m: float) -> dict:
        from smart_r1.train.loop import eval_chunk, eval_chunk_generator

        self._context(model_ref, split_ref, vocab_ref)
        self._sync(version)
        part = eval_chunk(self.model, self.split, idx, self.vocab, eval_cfg, eval_chunk_generator(seed, chunk_index),
                          max_agents, radius_m)
        part.pop("scenes")  # the driver has the split: it sends scenes to the scorers itself
        part["pid"] = os.getpid()
        return part

    def pid(self) -> int:
        return os.getpid()


ValidationActor = ray.remote(ValidationWorker)


class DistributedValidator:
    """The `evaluator` hook of `smart_r1.train.loop.Trainer` on Ray: same signature and result
    dict as `smart_r1.train.loop.evaluate`. Actors are created on the first call and reused;
    `shutdown()` removes them. `num_cpus` per actor defaults to 0: validation runs while the
    training actors wait, and a small node could not place both sets otherwise."""

    def __init__(self, num_workers: int = 2, num_scorers: int = 1, max_restarts: int = 3, torch_threads: int = 1,
                 num_cpus: float = 0.0, max_inflight_per_actor: int = 2, rollout_resources: dict | None = None,
                 scorer_resources: dict | None = None):
        self.num_workers, self.num_scorers = max(1, int(num_workers)), max(1, int(num_scorers))
        self.max_restarts, self.torch_threads, self.num_cpus = int(max_restarts), int(torch_threads), float(num_cpus)
        self.max_inflight_per_actor = max(1, int(max_inflight_per_actor))
        self.rollout_resources = parse_resources(rollout_resources, "rollout_resources")
        self.scorer_resources = parse_resources(scorer_resources, "scorer_resources")
        self.weight_store = None
        self.workers: list = []
        self.scorers: list = []
        self.version = -1
        self._model_ref: list | None = None
        self._model_id = None
        self._split: tuple | None = None  # (id(split), len, [ref], id(vocab), [ref])
        self.stats: dict[str, float] = {}

    def _start(self) -> None:
        opts = dict(max_restarts=self.max_restarts, max_task_retries=0)
        name, ns = f"smart_r1_validation_weights_{uuid.uuid4().hex[:12]}", ray.get_runtime_context().namespace
        # the store lives with the driver: losing a rollout node must not lose the weight versions
        self.weight_store = WeightStore.options(name=name, namespace=ns, **on_this_node()).remote()
        self.workers = [ValidationActor.options(**actor_options(self.num_cpus, self.rollout_resources, **opts)).remote(
            name, ns, self.torch_threads) for _ in range(self.num_workers)]
        self.scorers = [EvalScorerActor.options(**actor_options(self.num_cpus, self.scorer_resources, **opts)).remote(
            self.torch_threads) for _ in range(self.num_scorers)]

    def _publish(self, model) -> None:
        if self._model_id != id(model) or self._model_ref is None:
            skeleton = copy.deepcopy(model).cpu()  # architecture (+ weights, replaced by the store's)
            self._model_ref, self._model_id = [ray.put(skeleton)], id(model)
        self.version += 1
        ray.get(self.weight_store.publish.remote(self.version, [ray.put(state_to_numpy(model))]))

    def __call__(self, model, split, vocab, eval_cfg, seed: int, max_agents: int = 32, radius_m: float = 100.0,
                 progress: bool = False, n_scenes: int | None = None) -> dict[str, float]:
        from tqdm.auto import tqdm

        from smart_r1.train.loop import combine_eval, eval_chunks

        t0 = time.perf_counter()
        chunks = eval_chunks(len(split), eval_cfg, n_scenes)
        if not self.workers:
            self._start()
        self._publish(model)
        if self._split is None or self._split[0] != id(split) or self._split[1] != len(split) or self._split[3] != id(vocab):
            self._split = (id(split), len(split), [ray.put(split)], id(vocab), [ray.put(vocab)])
        split_ref, vocab_ref = self._split[2], self._split[4]
        work = ResilientPool(self.workers, "chunk", self.max_inflight_per_actor, self.max_restarts, "validation")
        scoring = ResilientPool(self.scorers, "score_scene", self.max_inflight_per_actor, self.max_restarts, "validation scorer")
        for ci, idx in enumerate(chunks):
            work.submit(ci, self._model_ref, split_ref, vocab_ref, self.version, ci, idx, eval_cfg, int(seed),
                        int(max_agents), float(radius_m))
        parts: dict[int, dict] = {}
        scores: dict[tuple[int, int], Any] = {}
        n_scenes_total = sum(len(c) for c in chunks)
        bar = tqdm(total=n_scenes_total, desc="eval (ray)", leave=False, disable=not progress)
        try:
            while work.busy or scoring.busy:
                work.dispatch()
                scoring.dispatch()
                ready, _ = ray.wait(work.refs() + scoring.refs(), num_returns=1)
                for ref in ready:
                    if ref in work.inflight:
                        status, ci, value = work.handle(ref)
                        if status == "failed":
                            raise RuntimeError(f"validation chunk {ci} (scenes {chunks[ci]}) failed: {_cause(value)}") from value
                        if status == "ok":
                            for s, ro in enumerate(value.pop("rollouts")):
                                scene = split.scenes[chunks[ci][s]]
                                scoring.submit((ci, s), eval_cfg.backend, scene, ro)
                            parts[ci] = value
                    else:
                        status, key, value = scoring.handle(ref)
                        if status == "failed":
                            raise RuntimeError(f"validation scoring of scene {split.scenes[chunks[key[0]][key[1]]].scenario_id!r} "
                                               f"failed: {_cause(value)}") from value
                        if status == "ok":
                            scores[key] = value
                            bar.update(1)
        finally:
            bar.close()
        out = combine_eval([parts[ci] for ci in range(len(chunks))],
                           [scores[(ci, s)] for ci in range(len(chunks)) for s in range(len(chunks[ci]))], n_scenes_total)
        self.stats = {"wall_seconds": time.perf_counter() - t0, "requeued": float(work.n_requeued + scoring.n_requeued),
                      "version": float(self.version)}
        return out

    def shutdown(self) -> None:
        for s in self.scorers:
            try:
                ray.get(s.close.remote(), timeout=30)
            except Exception:  # noqa: BLE001
                pass
        _kill_all(self.workers + self.scorers + ([self.weight_store] if self.weight_store is not None else []))
        self.workers, self.scorers, self.weight_store = [], [], None
        self._model_ref = self._split = None


def validator_from_runtime(rt_cfg) -> DistributedValidator:
    """A validator sized like the run's collection actors (`learner.runtime.RuntimeConfig`)."""
    return DistributedValidator(num_workers=rt_cfg.num_rollout_actors, num_scorers=rt_cfg.num_scorers,
                                max_restarts=rt_cfg.max_restarts, torch_threads=rt_cfg.torch_threads,
                                rollout_resources=rt_cfg.rollout_resources, scorer_resources=rt_cfg.scorer_resources)
