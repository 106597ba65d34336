"""The streaming driver: rollout actors -> scorer pool -> learner, with backpressure and faults.

    rt = DistributedRuntime(workload_spec, RuntimeConfig(num_rollout_actors=2, num_scorers=2))
    report = rt.run_epoch(scene_ids, epoch=0, learn=True)
    rt.shutdown()

- Backpressure: at most `max_inflight_rollouts_per_actor` tasks per rollout actor and
  `max_inflight_scores_per_scorer` per scorer; no new rollout is started while
  `max_buffered_batches` rollout batches wait for scores or for the learner, and at most
  `max_pending_updates` learner updates are queued. Memory therefore stays bounded.
- Faults: actors are created with `max_restarts`; a task lost with its actor (killed,
  `os._exit`) is re-queued to the pool with the same arguments (same seed). A restarted rollout
  actor starts at weights version -1 and pulls the current version on its next task. Every
  scene's score is accepted at most once (a re-executed task's duplicate is ignored and
  counted), so each scene of an epoch is scored exactly once.
- Bad scenes (the workload reports them with their ids) are skipped and listed in the report
  (`bad_scene_policy: skip`), or stop the run (`raise`), or stop it past `max_bad_fraction`.
"""

from __future__ import annotations

import collections
import hashlib
import logging
import time
import uuid
from dataclasses import dataclass, field, fields
from typing import Any, Callable

import numpy as np
import ray
from ray.exceptions import ActorUnavailableError, ObjectLostError, RayActorError, RayTaskError

from learner.cluster import actor_options, on_this_node
from learner.learner import Learner
from learner.weights import WeightStore
from rollout_workers.rollout_actor import RolloutActor
from rollout_workers.scorer import ScorerActor
from rollout_workers.workload import RolloutResult, ScoreResult

log = logging.getLogger(__name__)


@dataclass
class RuntimeConfig:
    num_rollout_actors: int = 2
    num_scorers: int = 1
    rollout_cpus: float = 0.5
    scorer_cpus: float = 0.25
    learner_cpus: float = 0.5
    learner_gpus: float | None = None  # None: 1 if the cluster has a GPU, else 0
    rollout_gpus: float = 0.0
    # Custom Ray resources per actor ({"rollout": 1}): rollout / scorer actors land only on nodes
    # that advertise them (`ray start --resources`, a KubeRay group's rayStartParams); {} = anywhere.
    rollout_resources: dict = field(default_factory=dict)
    scorer_resources: dict = field(default_factory=dict)
    scenes_per_task: int = 4
    max_inflight_rollouts_per_actor: int = 1
    max_inflight_scores_per_scorer: int = 2
    max_buffered_batches: int = 4
    max_pending_updates: int = 1
    max_policy_lag: int = 1
    lag_gate: bool = True  # start a rollout only when it cannot exceed the lag bound (else: free-running, drops counted)
    max_restarts: int = 3
    bad_scene_policy: str = "skip"  # skip | raise
    max_bad_fraction: float = 0.5
    torch_threads: int = 1
    seed: int = 0
    # SMART-R1 schedule (`run_distributed`): "sync" = policy lag 0, exact single-process semantics;
    # "async" = the next step's rollouts run while the learner updates (policy lag 1), see
    # learner.smart_collect. The streaming DistributedRuntime is always asynchronous.
    mode: str = "sync"

    def __post_init__(self):
        if self.mode not in ("sync", "async"):
            raise ValueError(f"runtime config: mode {self.mode!r} is not 'sync' or 'async'")
        from learner.cluster import parse_resources

        self.rollout_resources = parse_resources(self.rollout_resources, "runtime config: rollout_resources")
        self.scorer_resources = parse_resources(self.scorer_resources, "runtime config: scorer_resources")

    @classmethod
    def from_dict(cls, d: dict | None) -> "RuntimeConfig":
        d = dict(d or {})
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ValueError(f"runtime config: unknown key(s) {unknown}; known: {sorted(known)}")
        return cls(**d)


class ResilientPool:
    """Round-robin pool of actors with a bounded number of tasks in flight per actor.

    Tasks lost with their actor are re-queued (front of the queue); application errors are
    returned as failures. An actor that keeps dying past `max_restarts` is dropped from the pool.
    """

    def __init__(self, actors: list, method: str, max_inflight_per_actor: int, max_restarts: int, name: str):
        self.actors = list(actors)
        self.alive = [True] * len(actors)
        self.method = method
        self.max_inflight = max(1, int(max_inflight_per_actor))
        self.max_restarts = max_restarts
        self.name = name
        self.queue: collections.deque = collections.deque()
        self.inflight: dict[Any, tuple[int, Any, tuple]] = {}  # ref -> (actor index, key, args)
        self.load = [0] * len(actors)
        self.deaths = [0] * len(actors)
        self.n_requeued = 0

    def submit(self, key, *args, front: bool = False) -> None:
        (self.queue.appendleft if front else self.queue.append)((key, args))

    def free_slots(self) -> int:
        return sum(self.max_inflight - self.load[i] for i in range(len(self.actors)) if self.alive[i]) - len(self.queue)

    def dispatch(self) -> None:
        while self.queue:
            cands = [i for i in range(len(self.actors)) if self.alive[i] and self.load[i] < self.max_inflight]
            if not cands:
                return
            i = min(cands, key=lambda j: self.load[j])
            key, args = self.queue.popleft()
            ref = getattr(self.actors[i], self.method).remote(*args)
            self.inflight[ref] = (i, key, args)
            self.load[i] += 1

    def refs(self) -> list:
        return list(self.inflight)

    @property
    def busy(self) -> bool:
        return bool(self.inflight or self.queue)

    def handle(self, ref) -> tuple[str, Any, Any]:
        """Resolve a ready ref: ('ok', key, value) | ('failed', key, exc) | ('requeued', key, exc)."""
        i, key, args = self.inflight.pop(ref)
        self.load[i] -= 1
        try:
            return "ok", key, ray.get(ref)
        except ActorUnavailableError as err:  # restarting: try again (another actor may take it)
            self.submit(key, *args, front=True)
            self.n_requeued += 1
            return "requeued", key, err
        except RayActorError as err:  # the actor died with the task: re-queue the task
            self.deaths[i] += 1
            self.n_requeued += 1
            if self.deaths[i] > self.max_restarts:
                self.alive[i] = False
                log.error("%s actor %d died %d times; removed from the pool", self.name, i, self.deaths[i])
                if not any(self.alive):
                    raise RuntimeError(f"every {self.name} actor died (last error: {err})") from err
            else:
                log.warning("%s actor %d died (%s); task %r re-queued", self.name, i, type(err).__name__, key)
            self.submit(key, *args, front=True)
            return "requeued", key, err
        except ObjectLostError as err:  # finished, but its result was on a node that is gone: run it again
            log.warning("%s task %r: result lost with its node (%s); re-queued", self.name, key, type(err).__name__)
            self.submit(key, *args, front=True)
            self.n_requeued += 1
            return "requeued", key, err
        except RayTaskError as err:
            return "failed", key, err


@dataclass
class EpochReport:
    epoch: int
    n_scenes: int
    scores: dict[str, ScoreResult] = field(default_factory=dict)  # scene id -> score (exactly once)
    bad_scenes: dict[str, str] = field(default_factory=dict)  # scene id -> reason
    failed_scenes: dict[str, str] = field(default_factory=dict)  # scorer raised for this scene
    n_updates: int = 0
    n_dropped_batches: int = 0
    n_dropped_scenes: int = 0
    n_duplicate_scores: int = 0
    n_rollout_requeued: int = 0
    n_score_requeued: int = 0
    rollout_seconds: float = 0.0  # summed over tasks
    score_seconds: float = 0.0
    update_seconds: float = 0.0
    wall_seconds: float = 0.0
    policy_lags: list[int] = field(default_factory=list)
    update_metrics: list[dict] = field(default_factory=list)

    def summary(self) -> dict[str, float]:
        n = len(self.scores)
        out = {
            "epoch/scenes_scored": n, "epoch/bad_scenes": len(self.bad_scenes), "epoch/failed_scenes": len(self.failed_scenes),
            "epoch/updates": self.n_updates, "epoch/dropped_batches": self.n_dropped_batches,
            "epoch/dropped_scenes": self.n_dropped_scenes, "epoch/rollout_requeued": self.n_rollout_requeued,
            "epoch/score_requeued": self.n_score_requeued, "epoch/wall_seconds": self.wall_seconds,
            "epoch/scenes_per_second": n / self.wall_seconds if self.wall_seconds > 0 else 0.0,
        }
        if n:
            rewards = np.concatenate([np.ravel(s.reward) for s in self.scores.values()])
            out["epoch/reward_mean"] = float(rewards.mean())
            keys = set().union(*(s.metrics.keys() for s in self.scores.values()))
            for k in sorted(keys):
                vals = [s.metrics[k] for s in self.scores.values() if k in s.metrics]
                out[f"eval/{k}"] = float(np.mean(vals))
        return out


class _InOrder:
    """Holds finished batches and releases them in work-id (= dispatch) order. Without it a
    batch dispatched later could overtake an earlier one and push the earlier one's lag past
    the bound. `None` marks a work item that produces no update (all scenes bad / unscored)."""

    def __init__(self):
        self.held: dict[int, Any] = {}
        self.next = 0

    def put(self, work_id: int, item) -> None:
        self.held[work_id] = item

    def _advance(self) -> None:
        while self.next in self.held and self.held[self.next] is None:
            del self.held[self.next]
            self.next += 1

    def ready(self) -> bool:
        self._advance()
        return self.next in self.held

    def pop(self):
        self._advance()
        item = self.held.pop(self.next)
        self.next += 1
        return item

    def __len__(self) -> int:
        return sum(1 for v in self.held.values() if v is not None)


def _seed(base: int, epoch: int, work_id: int) -> int:
    return int(hashlib.sha1(f"{base}:{epoch}:{work_id}".encode()).hexdigest()[:8], 16)


class DistributedRuntime:
    """Owns the actors of one training run (see module docstring)."""

    def __init__(self, workload_spec, config: RuntimeConfig | dict | None = None, tracker=None, learner: bool = True):
        self.cfg = config if isinstance(config, RuntimeConfig) else RuntimeConfig.from_dict(config)
        if not ray.is_initialized():
            raise RuntimeError("DistributedRuntime needs ray.init() (or `ray start` + ray.init(address='auto')) first")
        self.workload_spec = workload_spec
        self.tracker = tracker
        self.global_step = 0
        c = self.cfg
        gpus_in_cluster = ray.cluster_resources().get("GPU", 0)
        learner_gpus = c.learner_gpus if c.learner_gpus is not None else (1 if gpus_in_cluster >= 1 else 0)
        # Named, so rollout actors (max_restarts > 0) get its name, not its handle, as a constructor
        # argument: a restart never depends on an object-store argument (ray-project/ray#53727).
        self.weight_store_name = f"srt_weights_{uuid.uuid4().hex[:12]}"
        self.weight_store = WeightStore.options(name=self.weight_store_name, **on_this_node()).remote()
        self.learner = None
        if learner:
            self.learner = Learner.options(num_cpus=c.learner_cpus, num_gpus=learner_gpus, max_restarts=0).remote(
                workload_spec, self.weight_store, c.max_policy_lag, None, c.torch_threads
            )
            ray.get(self.learner.stats.remote())  # constructed; version 0 published
        self.rollout_actors = [self._make_rollout(i) for i in range(c.num_rollout_actors)]
        self.scorers = [
            ScorerActor.options(**actor_options(c.scorer_cpus, c.scorer_resources, max_restarts=c.max_restarts,
                                                max_task_retries=0)).remote(
                workload_spec, f"scorer{i}", c.torch_threads)
            for i in range(c.num_scorers)
        ]
        # Wait until every actor is constructed (model built, libraries imported).
        ray.get([a.info.remote() for a in self.rollout_actors + self.scorers])

    def _make_rollout(self, i: int):
        c = self.cfg
        return RolloutActor.options(
            **actor_options(c.rollout_cpus, c.rollout_resources, num_gpus=c.rollout_gpus, max_restarts=c.max_restarts,
                            max_task_retries=0)
        ).remote(self.workload_spec, self.weight_store_name, f"rollout{i}", c.torch_threads, None if c.rollout_gpus else "cpu")

    def publish_weights(self, numpy_state: dict, version: int) -> None:
        """Publish weights from the driver (used when no learner actor runs, e.g. evaluation)."""
        ray.get(self.weight_store.publish.remote(version, [ray.put(numpy_state)]))

    # ------------------------------------------------------------------------------------------
    def run_epoch(
        self,
        scene_ids: list[str],
        epoch: int = 0,
        learn: bool = True,
        on_event: Callable[[str, Any], None] | None = None,
        on_score: Callable[[ScoreResult], None] | None = None,
    ) -> EpochReport:
        c = self.cfg
        if learn and self.learner is None:
            raise ValueError("run_epoch(learn=True) needs a runtime built with learner=True")
        rep = EpochReport(epoch=epoch, n_scenes=len(scene_ids))
        t_start = time.perf_counter()
        chunks = [scene_ids[i : i + c.scenes_per_task] for i in range(0, len(scene_ids), c.scenes_per_task)]
        rollouts = ResilientPool(self.rollout_actors, "rollout", c.max_inflight_rollouts_per_actor, c.max_restarts, "rollout")
        scoring = ResilientPool(self.scorers, "score", c.max_inflight_scores_per_scorer, c.max_restarts, "scorer")
        self.current_rollout_pool, self.current_score_pool = rollouts, scoring  # for monitoring / tests
        todo = collections.deque(enumerate(chunks))

        waiting: dict[int, dict] = {}  # work id -> {"result": RolloutResult, "rewards": {}, "expect": set}
        to_learn = _InOrder()  # batches go to the learner in dispatch order (keeps the lag bound exact)
        learner_refs: dict = {}
        emit = on_event or (lambda kind, obj: None)

        def buffered() -> int:
            return len(waiting) + len(to_learn) + len(learner_refs)

        progress = _progress(len(scene_ids), f"epoch {epoch}")
        while todo or rollouts.busy or scoring.busy or waiting or to_learn or learner_refs:
            # 1. start rollouts while there is room downstream (backpressure)
            # Policy-lag gate (learning): a batch sampled now is applied after every batch already
            # in the pipeline, i.e. with a lag <= the number outstanding; start it only if that
            # number is <= max_policy_lag, so no batch is dropped for lag in steady state.
            while (
                todo and rollouts.free_slots() > 0
                and buffered() + len(rollouts.inflight) + len(rollouts.queue) < c.max_buffered_batches
                and not (learn and c.lag_gate and buffered() + len(rollouts.inflight) + len(rollouts.queue) > c.max_policy_lag)
            ):
                work_id, ids = todo.popleft()
                rollouts.submit(work_id, work_id, ids, _seed(c.seed, epoch, work_id))
            rollouts.dispatch()
            scoring.dispatch()
            # 2. feed the learner
            while to_learn.ready() and len(learner_refs) < c.max_pending_updates:
                result, rewards = to_learn.pop()
                learner_refs[self.learner.update.remote(result, rewards)] = result.work_id
            # 3. wait for anything
            pending = rollouts.refs() + scoring.refs() + list(learner_refs)
            if not pending:
                continue
            ready, _ = ray.wait(pending, num_returns=1, timeout=5.0)
            if ready:
                more, _ = ray.wait(pending, num_returns=len(pending), timeout=0)
                ready = list(dict.fromkeys(ready + more))
            for ref in ready:
                if ref in rollouts.inflight:
                    status, work_id, value = rollouts.handle(ref)
                    if status == "requeued":
                        emit("rollout_requeued", work_id)
                        continue
                    if status == "failed":
                        raise RuntimeError(f"rollout task {work_id} (scenes {chunks[work_id]}) failed: {value}") from value
                    self._on_rollout(value, rep, waiting, scoring, to_learn, learn, progress)
                    emit("rollout", value)
                elif ref in scoring.inflight:
                    status, key, value = scoring.handle(ref)
                    if status == "requeued":
                        emit("score_requeued", key)
                        continue
                    work_id, sid = key
                    error = None
                    if status == "failed":
                        error = str(getattr(value, "cause", None) or value)
                        if c.bad_scene_policy == "raise":
                            raise RuntimeError(f"scoring scene {sid!r} failed: {value}") from value
                        log.warning("scene %s: scoring failed (%s); skipped", sid, error)
                        value = None
                    self._on_score(work_id, sid, value, error, rep, waiting, to_learn, learn, progress, on_score)
                    emit("score", value)
                else:
                    work_id = learner_refs.pop(ref)
                    out = ray.get(ref)
                    self._on_update(out, rep)
                    emit("update", out)
            if len(rep.bad_scenes) > c.max_bad_fraction * max(1, len(scene_ids)):
                raise RuntimeError(f"{len(rep.bad_scenes)} bad scenes of {len(scene_ids)} (> max_bad_fraction): {rep.bad_scenes}")
        progress.close()
        rep.n_rollout_requeued = rollouts.n_requeued
        rep.n_score_requeued = scoring.n_requeued
        rep.wall_seconds = time.perf_counter() - t_start
        if self.tracker is not None:
            self.tracker.log_metrics(rep.summary(), step=self.global_step)
        return rep

    def _on_rollout(self, result: RolloutResult, rep, waiting, scoring, to_learn, learn, progress):
        rep.rollout_seconds += result.seconds
        for sid, reason in result.bad.items():
            log.warning("bad scene %s skipped: %s", sid, reason)
            if self.cfg.bad_scene_policy == "raise":
                raise RuntimeError(f"bad scene {sid!r}: {reason}")
            rep.bad_scenes[sid] = reason
            progress.update(1)
        if not result.scene_ids:
            if learn:
                to_learn.put(result.work_id, None)
            return
        waiting[result.work_id] = {"result": result, "rewards": {}, "expect": set(result.scene_ids)}
        for sid in result.scene_ids:
            scoring.submit((result.work_id, sid), result.work_id, sid, result.scoring[sid])

    def _on_score(self, work_id, sid, score: ScoreResult | None, error, rep, waiting, to_learn, learn, progress, on_score):
        entry = waiting.get(work_id)
        if sid in rep.scores or sid in rep.failed_scenes:
            rep.n_duplicate_scores += 1  # a re-executed task: accept each scene once
            return
        if score is not None:
            rep.scores[sid] = score
            rep.score_seconds += score.seconds
            if on_score is not None:
                on_score(score)
        else:
            rep.failed_scenes[sid] = error or "scoring failed"
        progress.update(1)
        if entry is None:
            return
        entry["expect"].discard(sid)
        if score is not None:
            entry["rewards"][sid] = score.reward
        if not entry["expect"]:
            del waiting[work_id]
            result = entry["result"]
            if learn:
                if len(entry["rewards"]) < len(result.scene_ids):
                    # a scene of the batch could not be scored: the batch has no complete reward; skip it
                    rep.n_dropped_batches += 1
                    rep.n_dropped_scenes += len(result.scene_ids)
                    to_learn.put(work_id, None)
                else:
                    to_learn.put(work_id, (result, entry["rewards"]))

    def _on_update(self, out: dict, rep: EpochReport) -> None:
        rep.policy_lags.append(int(out["policy_lag"]))
        if out["dropped"]:
            rep.n_dropped_batches += 1
            log.info("batch %s dropped: policy lag %d > %d", out["work_id"], out["policy_lag"], self.cfg.max_policy_lag)
            if self.tracker is not None:
                self.tracker.log_metrics({"runtime/dropped_batches_total": rep.n_dropped_batches}, step=self.global_step)
            return
        rep.n_updates += 1
        rep.update_seconds += out["update_seconds"]
        self.global_step += 1
        m = dict(out["metrics"])
        m.update({"runtime/policy_lag": out["policy_lag"], "runtime/weights_version": out["version"],
                  "runtime/update_seconds": out["update_seconds"]})
        rep.update_metrics.append(m)
        if self.tracker is not None:
            self.tracker.log_metrics(m, step=self.global_step)

    # ------------------------------------------------------------------------------------------
    def actor_info(self) -> dict[str, list[dict]]:
        out = {"rollout": ray.get([a.info.remote() for a in self.rollout_actors]),
               "scorer": ray.get([a.info.remote() for a in self.scorers])}
        if self.learner is not None:
            out["learner"] = [ray.get(self.learner.stats.remote())]
        return out

    def shutdown(self) -> None:
        for a in self.rollout_actors + self.scorers + ([self.learner] if self.learner else []) + [self.weight_store]:
            try:
                ray.kill(a)
            except Exception:  # noqa: BLE001
                pass


def _progress(total: int, desc: str):
    from tqdm import tqdm

    return tqdm(total=total, desc=desc, unit="scene", leave=False, mininterval=2.0, disable=None)
