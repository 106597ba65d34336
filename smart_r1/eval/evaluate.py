"""Evaluation: roll out every source (checkpoint / baseline / rollout file) on every scene,
score with a WOSAC backend, keep the per-scene results in Parquet, and write the report.

- `evaluate_scene(source, scene, backend, num_rollouts, seed) -> SceneResult` is the unit of
  work: a plain function (the Ray runtime distributes it over actors).
- `ScoreStore`: one Parquet file of per-(source, scene) results, rewritten atomically as scenes
  finish (every scene while the file is small; spaced out as it grows so writing stays ~10 % of
  the run; always on exit, errors and Ctrl-C included); on re-run, scenes already in the file
  (same source, backend, config year, rollout count and seed) are skipped.
- `evaluate(checkpoints, scenes, backend, ...)` drives the loop (progress bars on rollouts
  and scoring) and with a tracker logs scalars as metrics and the scores as an artifact. The
  report folder is built from what it returns (`smart_r1.viz.report.evaluate_and_report` /
  `build_report`); this module imports nothing from `smart_r1.viz`.
- The loop is an `executor`: `LocalExecutor` (default) runs `evaluate_scene` in this process;
  a runtime (e.g. `learner.distributed_eval.RayExecutor`) may run the same work items
  (`WorkItem`: source spec + scene + seed) elsewhere, splitting them into `rollout_scene`
  (rollouts) and `score_rollouts` (scores -> `SceneResult`), the two halves of
  `evaluate_scene`. Rows, keys, resume and report are the same for every executor.
"""

from __future__ import annotations

import os
import sys
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np

from smart_r1.data.atomic import atomic_output
from smart_r1.data.scene import Scene
from smart_r1.data.validate import REQUIRE_MAP, scene_error, scene_problems
from smart_r1.errors import EmptyInputError, NonFiniteInputError
from smart_r1.eval.sources import RolloutSource, make_source, slug, unique_names
from smart_r1.metrics.base import GROUPS, LIKELIHOOD_FIELDS, RATE_FIELDS, MetricBackend, SceneScores, get_backend

KEY_FIELDS = ("source", "scenario_id", "backend", "config_year", "num_rollouts", "seed")
SCALAR_FIELDS = (
    ("metametric",)
    + LIKELIHOOD_FIELDS
    + tuple(GROUPS)
    + ("min_average_displacement_error", "average_displacement_error")
    + RATE_FIELDS
)


@dataclass
class SceneResult:
    """One source scored on one scene."""

    source: str
    scores: SceneScores
    num_rollouts: int  # rollouts actually scored
    seed: int
    n_sim_agents: int
    seconds_rollout: float
    seconds_score: float
    source_kind: str = ""

    def row(self, backend: str, requested_rollouts: int | None = None) -> dict:
        flat = self.scores.as_flat_dict()
        row = {
            "source": self.source,
            "source_kind": self.source_kind,
            "scenario_id": str(self.scores.scenario_id),
            "backend": backend,
            "config_year": int(self.scores.config_year),
            "num_rollouts": int(requested_rollouts if requested_rollouts is not None else self.num_rollouts),
            "num_rollouts_scored": int(self.num_rollouts),
            "seed": int(self.seed),
        }
        for k in SCALAR_FIELDS:
            row[k] = float(flat[k])
        pr = self.scores.per_rollout_metametric
        row["per_rollout_metametric"] = None if pr is None else [float(x) for x in np.asarray(pr).ravel()]
        row["n_sim_agents"] = int(self.n_sim_agents)
        row["seconds_rollout"] = float(self.seconds_rollout)
        row["seconds_score"] = float(self.seconds_score)
        row["finished_at"] = float(time.time())
        return row


def score_scene(backend: MetricBackend, scene: Scene, rollouts) -> SceneScores:
    return backend.score(scene, rollouts)


def rollout_scene(source: RolloutSource, scene: Scene, num_rollouts: int, seed: int):
    """First half of `evaluate_scene`: (rollouts, seconds)."""
    t0 = time.perf_counter()
    rollouts = source.rollouts(scene, num_rollouts, seed)
    return rollouts, time.perf_counter() - t0


def score_rollouts(
    source_name: str, source_kind: str, scene: Scene, rollouts, backend: MetricBackend, seed: int, seconds_rollout: float
) -> SceneResult:
    """Second half of `evaluate_scene`: score the rollouts of one source on one scene."""
    t1 = time.perf_counter()
    scores = score_scene(backend, scene, rollouts)
    t2 = time.perf_counter()
    return SceneResult(
        source=source_name,
        scores=scores,
        num_rollouts=rollouts.n_rollout,
        seed=seed,
        n_sim_agents=rollouts.n_agent,
        seconds_rollout=seconds_rollout,
        seconds_score=t2 - t1,
        source_kind=source_kind,
    )


def evaluate_scene(
    source: RolloutSource, scene: Scene, backend: MetricBackend, num_rollouts: int, seed: int, on_rollouts=None
) -> SceneResult:
    """Roll out `source` on `scene` and score it (a plain function: no I/O, no Ray).
    `on_rollouts(rollouts)` is called between rolling out and scoring (progress bars)."""
    rollouts, seconds = rollout_scene(source, scene, num_rollouts, seed)
    if on_rollouts is not None:
        on_rollouts(rollouts)
    return score_rollouts(source.name, source.kind, scene, rollouts, backend, seed, seconds)


@dataclass
class WorkItem:
    """One (source, scene) pair to evaluate. `source_index` indexes the evaluation's sources;
    `source_spec` (`RolloutSource.spec_tuple()`) rebuilds the source in another process."""

    key: tuple  # ScoreStore key
    source_index: int
    source_spec: tuple
    scene: Scene
    num_rollouts: int
    seed: int


class LocalExecutor:
    """Runs the work items one after the other in this process (the default executor).

    An executor has `run(items, sources, backend, on_result, on_error, on_rollouts)`:
    `on_result(item, SceneResult)` / `on_error(item, exception)` for every item, in any order;
    `on_rollouts(item)` when an item's rollouts are ready (progress). `backend` is the
    evaluation's `MetricBackend`, or for executors with `needs_backend = False` (they score in
    other processes) the recipe `(name, num_rollouts, config_year)` of `make_backend`.
    """

    needs_backend = True  # evaluate() instantiates the metric backend in this process

    def run(self, items: Iterable[WorkItem], sources: Sequence[RolloutSource], backend, on_result, on_error, on_rollouts=None) -> None:
        for item in items:
            try:
                res = evaluate_scene(
                    sources[item.source_index], item.scene, backend, item.num_rollouts, item.seed,
                    on_rollouts=None if on_rollouts is None else (lambda _r, it=item: on_rollouts(it)),
                )
            except Exception as err:
                on_error(item, err)
                continue
            on_result(item, res)


class ScoreStore:
    """Per-scene results in one Parquet file, rewritten atomically (temp file + rename).

    `add` keeps rows in memory; `maybe_flush` writes them when the time since the last write is at
    least `overhead_factor` times what that write took (every scene while the file is small, less
    often as it grows, so writing stays a small fraction of the run); `flush` writes now. A run
    killed hard loses at most the rows since the last write; `evaluate` flushes on every exit path.
    """

    def __init__(self, path: str | os.PathLike, overhead_factor: float = 10.0):
        self.path = Path(path)
        self.rows: list[dict] = []
        self.overhead_factor = float(overhead_factor)
        self._dirty = False
        self._last_write_end = 0.0
        self._last_write_cost = 0.0
        if self.path.exists():
            import pyarrow.parquet as pq

            try:
                self.rows = pq.read_table(self.path).to_pylist()
            except Exception as err:
                raise ValueError(f"scores file {self.path}: cannot be read as Parquet ({err}); move it away to start afresh") from err
            missing = [k for k in KEY_FIELDS + ("metametric",) if self.rows and k not in self.rows[0]]
            if missing:
                raise ValueError(f"scores file {self.path}: lacks columns {missing}")

    @staticmethod
    def key(row: dict) -> tuple:
        return tuple(row[k] for k in KEY_FIELDS)

    def done_keys(self) -> set[tuple]:
        return {self.key(r) for r in self.rows}

    def add(self, rows: Sequence[dict]) -> None:
        keys = {self.key(r) for r in rows}
        self.rows = [r for r in self.rows if self.key(r) not in keys] + list(rows)
        self._dirty = True

    def append(self, rows: Sequence[dict]) -> None:
        """Add and write now."""
        self.add(rows)
        self.write()

    def maybe_flush(self) -> bool:
        if self._dirty and time.perf_counter() - self._last_write_end >= self.overhead_factor * self._last_write_cost:
            self.write()
            return True
        return False

    def flush(self) -> None:
        if self._dirty:
            self.write()

    def write(self) -> None:
        import pyarrow as pa
        import pyarrow.parquet as pq

        t0 = time.perf_counter()
        table = pa.Table.from_pylist(self.rows, schema=_schema()) if self.rows else _schema().empty_table()
        with atomic_output(self.path, fsync=False) as tmp:
            pq.write_table(table, tmp)
        self._dirty = False
        self._last_write_end = time.perf_counter()
        self._last_write_cost = self._last_write_end - t0

    def select(self, backend: str, config_year: int, num_rollouts: int, seed: int, sources: Iterable[str] | None = None) -> list[dict]:
        names = None if sources is None else set(sources)
        return [
            r
            for r in self.rows
            if r["backend"] == backend
            and int(r["config_year"]) == int(config_year)
            and int(r["num_rollouts"]) == int(num_rollouts)
            and int(r["seed"]) == int(seed)
            and (names is None or r["source"] in names)
        ]


def _schema():
    import pyarrow as pa

    fields = [
        ("source", pa.string()),
        ("source_kind", pa.string()),
        ("scenario_id", pa.string()),
        ("backend", pa.string()),
        ("config_year", pa.int32()),
        ("num_rollouts", pa.int32()),
        ("num_rollouts_scored", pa.int32()),
        ("seed", pa.int64()),
    ]
    fields += [(k, pa.float64()) for k in SCALAR_FIELDS]
    fields += [
        ("per_rollout_metametric", pa.list_(pa.float32())),
        ("n_sim_agents", pa.int32()),
        ("seconds_rollout", pa.float64()),
        ("seconds_score", pa.float64()),
        ("finished_at", pa.float64()),
    ]
    return pa.schema(fields)


def aggregate_rows(rows: Sequence[Mapping], order: Sequence[str] | None = None, common_only: bool = True) -> dict[str, dict]:
    """Per source: mean over scenes of every scalar (official aggregation), `n_scenes`.

    With `common_only`, only scenes every source was scored on enter the means (a fair comparison)."""
    by_source: dict[str, list[Mapping]] = {}
    for r in rows:
        by_source.setdefault(r["source"], []).append(r)
    names = [n for n in (order or list(by_source)) if n in by_source]
    if not names:
        return {}
    common = set.intersection(*(set(r["scenario_id"] for r in by_source[n]) for n in names)) if common_only else None
    out = {}
    for n in names:
        sel = [r for r in by_source[n] if common is None or r["scenario_id"] in common]
        if not sel:
            continue
        agg = {k: float(np.mean([float(r[k]) for r in sel])) for k in SCALAR_FIELDS}
        agg["n_scenes"] = len(sel)
        out[n] = agg
    return out


def make_backend(backend: str | MetricBackend, num_rollouts: int, config_year: int = 2025) -> MetricBackend:
    if isinstance(backend, MetricBackend):
        return backend
    kwargs = {"config_year": config_year}
    if backend == "official":
        kwargs["n_rollouts"] = 32 if num_rollouts == 32 else None
    return get_backend(backend, **kwargs)


def iter_scene_spec(scenes) -> Iterable[Scene]:
    """Scenes from a path / glob / list of paths, or an iterable of `Scene`s."""
    if isinstance(scenes, (str, os.PathLike)) or (isinstance(scenes, (list, tuple)) and scenes and not isinstance(scenes[0], Scene)):
        from smart_r1.data.scenario_io import iter_scenes

        spec = [str(s) for s in scenes] if isinstance(scenes, (list, tuple)) else str(scenes)
        return iter_scenes(spec)
    return scenes


def find_scenes(scenes, ids: Iterable[str]) -> dict[str, Scene]:
    """The scenes of `scenes` (spec or iterable) with the given ids; stops once all are found."""
    want = set(ids)
    out: dict[str, Scene] = {}
    if not want:
        return out
    for scene in iter_scene_spec(scenes):
        if scene.scenario_id in want:
            out[scene.scenario_id] = scene
            if len(out) == len(want):
                break
    return out


@dataclass
class EvaluationResult:
    scores_path: Path
    rows: list[dict]  # the rows of this evaluation (resumed ones included)
    sources: list[RolloutSource]
    n_scored: int  # scene x source pairs scored in this call
    n_skipped: int  # already in the scores file
    uncovered: dict[str, list[str]] = field(default_factory=dict)  # source -> scenes it has no rollouts for
    failed: dict[str, dict[str, str]] = field(default_factory=dict)  # source -> scene -> error
    report_dir: Path | None = None
    backend: str = ""  # the metric backend's name

    def by_source(self) -> dict[str, list[SceneScores]]:
        out: dict[str, list[SceneScores]] = {s.name: [] for s in self.sources}
        for r in self.rows:
            out.setdefault(r["source"], []).append(row_to_scores(r))
        return out


def row_to_scores(row: dict) -> SceneScores:
    pr = row.get("per_rollout_metametric")
    return SceneScores(
        scenario_id=row["scenario_id"],
        metametric=float(row["metametric"]),
        likelihoods={k: float(row[k]) for k in LIKELIHOOD_FIELDS},
        min_average_displacement_error=float(row["min_average_displacement_error"]),
        average_displacement_error=float(row["average_displacement_error"]),
        simulated_collision_rate=float(row["simulated_collision_rate"]),
        simulated_offroad_rate=float(row["simulated_offroad_rate"]),
        simulated_traffic_light_violation_rate=float(row["simulated_traffic_light_violation_rate"]),
        config_year=int(row["config_year"]),
        backend=str(row["backend"]),
        per_rollout_metametric=None if pr is None else np.asarray(pr, np.float32),
    )


def evaluate(
    checkpoints: Sequence[str | RolloutSource] = (),
    scenes=None,
    backend: str | MetricBackend = "fast",
    num_rollouts: int = 32,
    seed: int = 0,
    rollouts: Sequence[str] = (),
    out_dir: str | os.PathLike | None = "eval_out",
    scores_path: str | os.PathLike | None = None,
    config_year: int = 2025,
    report: bool = False,
    tracker=None,
    progress: bool = True,
    fail_fast: bool = False,
    names: Sequence[str] | None = None,
    top_k: int | None = None,
    executor=None,
) -> EvaluationResult:
    """Score every checkpoint (or `baseline:<name>`) and every rollout file on `scenes`.

    Results go to `scores_path` (default `<out_dir>/scores.parquet`) as they arrive; pairs already
    there are skipped. No report is built here (data flows one way: the report renders what
    this returns): `smart_r1.viz.report.evaluate_and_report` runs this and then writes
    `<out_dir>/report/`. `report` stays only so callers may pass `report=False`. `tracker`
    (`smart_r1.tracking.Tracker`) receives per-scene and aggregate metrics and the artifacts.
    `top_k`: sampler top-k of checkpoint sources (default `simulate_scenes`' 48; a non-default
    value is part of the default row label, so its rows never mix with the default's).
    `executor`: where the (source, scene) pairs run (`LocalExecutor()` by default; see
    `learner.distributed_eval.RayExecutor` for Ray).
    """
    from tqdm import tqdm

    if report:
        raise TypeError("evaluate() builds no report; call smart_r1.viz.report.evaluate_and_report")
    if scenes is None:
        raise ValueError("evaluate: no scenes given")
    if num_rollouts < 1:
        raise ValueError(f"evaluate: num_rollouts must be >= 1, got {num_rollouts}")
    executor = executor if executor is not None else LocalExecutor()
    sources = [make_source(c, "checkpoint", top_k=top_k) for c in checkpoints] + [make_source(r, "rollouts") for r in rollouts]
    if names:
        if len(names) != len(sources):
            raise ValueError(f"evaluate: {len(names)} names for {len(sources)} sources")
        for s, n in zip(sources, names):
            s.name = n
    if not sources:
        raise ValueError("evaluate: nothing to evaluate (give checkpoints, baseline:<name> or rollouts)")
    sources = unique_names(sources)
    if not isinstance(scenes, (str, os.PathLike, list, tuple)):
        scenes = list(scenes)  # an iterator: kept in memory so the report can look scenes up again
    out_dir = Path(out_dir) if out_dir is not None else None
    if scores_path is None:
        if out_dir is None:
            raise ValueError("evaluate: give out_dir or scores_path")
        scores_path = out_dir / "scores.parquet"
    store = ScoreStore(scores_path)
    if getattr(executor, "needs_backend", True) or isinstance(backend, MetricBackend):
        metric_backend = make_backend(backend, num_rollouts, config_year)
        backend_name = metric_backend.name or str(backend)
    else:  # scored elsewhere (e.g. TF of `official` stays out of this process)
        metric_backend, backend_name = None, str(backend)
    done = store.done_keys()
    if tracker is not None:
        tracker.log_params(
            {
                "eval.backend": backend_name,
                "eval.num_rollouts": num_rollouts,
                "eval.seed": seed,
                "eval.config_year": config_year,
                "eval.scenes": str(scenes) if isinstance(scenes, (str, os.PathLike)) else f"{type(scenes).__name__}",
                "eval.sources": ", ".join(f"{s.name}={s.spec}" for s in sources),
            }
        )

    scene_ids: list[str] = []
    n_scored = n_skipped = 0
    uncovered: dict[str, list[str]] = {}
    failed: dict[str, dict[str, str]] = {}
    bar_roll = tqdm(desc="rollouts", unit="rollout set", disable=not progress, file=sys.stderr, position=0)
    bar_score = tqdm(desc=f"scoring ({backend_name})", unit="scene", disable=not progress, file=sys.stderr, position=1)
    step = 0

    def items():
        nonlocal n_skipped
        for scene in iter_scene_spec(scenes):
            scene_ids.append(scene.scenario_id)
            # The one scene validation path: an invalid scene is a failure of every source on it
            # (reported, never a row, so a rerun retries it), not a score.
            problems = scene_problems(scene, require_map=REQUIRE_MAP["evaluate"])
            for si, source in enumerate(sources):
                key = (source.name, scene.scenario_id, backend_name, int(config_year), int(num_rollouts), int(seed))
                if key in done:
                    n_skipped += 1
                    continue
                if problems:
                    on_error(WorkItem(key, si, source.spec_tuple(), scene, int(num_rollouts), int(seed)), scene_error(scene, problems))
                    continue
                if not source.covers(scene):
                    uncovered.setdefault(source.name, []).append(scene.scenario_id)
                    continue
                yield WorkItem(key, si, source.spec_tuple(), scene, int(num_rollouts), int(seed))

    def on_result(item: WorkItem, scene_result: SceneResult) -> None:
        nonlocal n_scored, step
        if item.key in done:  # a re-queued item that had already come back
            return
        bar_score.update(1)
        row = scene_result.row(backend_name, num_rollouts)
        not_finite = sorted(k for k in SCALAR_FIELDS if not np.isfinite(row[k]))
        if not_finite:  # never store a wrong number: the scene stays unscored and a rerun retries it
            on_error(item, NonFiniteInputError(f"scene {item.key[1]!r}: non-finite scores {not_finite}; not stored"))
            return
        store.add([row])
        store.maybe_flush()
        done.add(item.key)
        n_scored += 1
        if tracker is not None:
            tracker.log_metrics({f"scene/{slug(item.key[0])}/metametric": row["metametric"]}, step=step)
        step += 1

    def on_error(item: WorkItem, err: BaseException) -> None:
        if fail_fast:
            raise err
        name, scene_id = item.key[0], item.key[1]
        failed.setdefault(name, {})[scene_id] = f"{type(err).__name__}: {err}"
        warnings.warn(f"evaluate: {name} on scene {scene_id}: {err}", stacklevel=3)

    try:
        executor.run(items(), sources, metric_backend if metric_backend is not None else (backend_name, int(num_rollouts), int(config_year)),
                     on_result, on_error, on_rollouts=lambda _item: bar_roll.update(1))
    finally:
        store.flush()
        bar_roll.close()
        bar_score.close()
        if metric_backend is not None and hasattr(metric_backend, "close") and not isinstance(backend, MetricBackend):
            metric_backend.close()

    if not scene_ids:
        raise EmptyInputError(f"{scenes if isinstance(scenes, (str, os.PathLike)) else 'scenes'}: no scenes (empty input?)")
    names_set = {s.name for s in sources}
    ids = set(scene_ids)
    rows = [r for r in store.select(backend_name, config_year, num_rollouts, seed, names_set) if r["scenario_id"] in ids]
    result = EvaluationResult(Path(scores_path), rows, sources, n_scored, n_skipped, uncovered, failed, backend=backend_name)
    if tracker is not None:
        for name, agg in aggregate_rows(rows, [s.name for s in sources]).items():
            tracker.log_metrics({f"{slug(name)}/{k}": v for k, v in agg.items()}, step=0)
        tracker.log_artifact(result.scores_path, artifact_path="evaluation")
    return result
