"""Scaled-out evaluation: rollouts + scoring spread over the runtime's actors, results written to
Parquet as they arrive, resumable per scene.

    rows = evaluate_to_parquet(runtime, scene_ids, "runs/eval", flush_every=16)

Each flush writes `part-<n>.parquet` (one row per scene: `scenario_id`, the workload's metrics,
`reward_mean`, `score_seconds`); a re-run with the same `out_dir` reads the existing parts
and only simulates the scenes not yet there, so a killed evaluation continues where it stopped.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq


def done_scene_ids(out_dir: str | Path) -> set[str]:
    out = set()
    for part in sorted(Path(out_dir).glob("part-*.parquet")):
        out.update(pq.read_table(part, columns=["scenario_id"]).column("scenario_id").to_pylist())
    return out


def evaluate_to_parquet(runtime, scene_ids: list[str], out_dir: str | Path, flush_every: int = 16, epoch: int = 0) -> dict:
    """Evaluate the scenes not yet in `out_dir` on `runtime` (no learning). Returns counts."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    done = done_scene_ids(out)
    todo = [s for s in scene_ids if s not in done]
    n_part = len(list(out.glob("part-*.parquet")))
    rows: list[dict] = []

    def flush():
        nonlocal n_part, rows
        if not rows:
            return
        tmp = out / f".part-{n_part:05d}.parquet.tmp"
        pq.write_table(pa.Table.from_pylist(rows), tmp)
        tmp.rename(out / f"part-{n_part:05d}.parquet")  # atomic: a part is complete or absent
        n_part += 1
        rows = []

    def on_score(score):
        row = {"scenario_id": score.scene_id, "reward_mean": float(np.mean(score.reward)), "score_seconds": score.seconds}
        row.update({k: float(v) for k, v in score.metrics.items()})
        rows.append(row)
        if len(rows) >= flush_every:
            flush()

    rep = runtime.run_epoch(todo, epoch=epoch, learn=False, on_score=on_score) if todo else None
    flush()
    return {"skipped_done": len(done & set(scene_ids)), "evaluated": len(rep.scores) if rep else 0,
            "bad_scenes": dict(rep.bad_scenes) if rep else {}, "parts": n_part}
