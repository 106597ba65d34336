"""The main job (`smart-r1 demo` / `make demo`): the full SFT-RFT-SFT pipeline on the embedded
synthetic default, on a local Ray cluster, tracked in a local MLflow server.

    synthetic WOMD scenes -> Parquet cache (Ray tasks) -> motion vocabulary -> BC -> CAT-K SFT
    -> MPO RFT (rollouts on rollout actors, rewards on scorer actors) -> CAT-K SFT
    -> evaluation table + rollout renders (MLflow artifacts)

Everything lands under `--out` (default `.smart_r1_runs/demo`); a killed run continues with
`--resume` from its last checkpoint, in the same MLflow run.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path


def _banner(text: str) -> None:
    print(f"\n=== {text} ===", flush=True)


def _preprocess_on_ray(cfg, out: Path, address: str | None) -> None:
    """Write the synthetic shards and build the Parquet cache with Ray tasks (the library's
    pipeline then finds the finished shards and skips them)."""
    from smart_r1.data.cache import preprocess
    from smart_r1.train.pipeline import _scene_files

    cache_root = Path(cfg.data.cache_dir) if cfg.data.cache_dir else out / "cache"
    for split in ("training", "validation"):
        files = _scene_files(cfg, out, split)
        if files:
            preprocess(files, cache_root / split, num_workers=2, progress=cfg.progress, address=address)


def _render_and_log(cfg, out: Path, tracker) -> list[Path]:
    """Render the first validation scenes with the final checkpoint (grid + GIFs); log them to the
    run under `renders/final` (the per-stage grids are `renders/<index>_<stage>/`, by the loop)."""
    from smart_r1.data.cache import SceneCache
    from smart_r1.sim.simulate import simulate_scenes
    from smart_r1.train.checkpoint import last_checkpoint
    from smart_r1.viz.pipeline import render_scene_outputs
    from smart_r1.viz.render import RenderConfig

    ckpt = last_checkpoint(out)
    cache_root = Path(cfg.data.cache_dir) if cfg.data.cache_dir else out / "cache"
    val_dir = cache_root / "validation"
    if ckpt is None or not val_dir.exists():
        return []
    cache = SceneCache(val_dir)
    scenes = [cache[i] for i in range(min(2, len(cache)))]
    rollouts = simulate_scenes(ckpt, scenes, num_rollouts=3, seed=cfg.seed, top_k=5)
    paths: list[Path] = []
    for scene, ro in zip(scenes, rollouts):
        paths += render_scene_outputs(scene, ro, out / "renders", RenderConfig(frame_px=320), max_rollouts=2, gif=True)
    if tracker is not None:
        for p in paths:
            tracker.log_artifact(p, artifact_path="renders/final")
    return paths


def plot_run(history: list[dict], evaluations: dict[str, dict[str, float]], out_dir: Path) -> list[Path]:
    """PNG plots of a run: per-stage training loss curves, and the realism meta metric / minADE
    of each stage's validation."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out_dir.mkdir(parents=True, exist_ok=True)
    paths: list[Path] = []
    if history:
        fig, ax = plt.subplots(figsize=(8, 4))
        offset = 0
        for stage in dict.fromkeys(r["stage"] for r in history):
            rows = [r for r in history if r["stage"] == stage and "loss" in r]
            if not rows:
                continue
            ax.plot([offset + i for i in range(len(rows))], [float(r["loss"]) for r in rows], label=stage, lw=1)
            offset += len(rows)
        ax.set_xlabel("optimiser step (stages in order)")
        ax.set_ylabel("loss")
        ax.set_title("training loss per stage")
        ax.legend()
        fig.tight_layout()
        paths.append(out_dir / "loss_curves.png")
        fig.savefig(paths[-1], dpi=110)
        plt.close(fig)
    if evaluations:
        stages = list(evaluations)
        fig, axes = plt.subplots(1, 2, figsize=(9, 3.5))
        for ax, key, label in ((axes[0], "metametric", "realism meta (higher is better)"),
                               (axes[1], "min_average_displacement_error", "minADE m (lower is better)")):
            values = [evaluations[s].get(key, float("nan")) for s in stages]
            ax.bar(stages, values, color="#2f7bf5")
            ax.set_title(label)
            finite = [v for v in values if v == v]
            if finite and key == "metametric":
                ax.set_ylim(min(finite) - 0.02, max(finite) + 0.01)
        fig.tight_layout()
        paths.append(out_dir / "stage_comparison.png")
        fig.savefig(paths[-1], dpi=110)
        plt.close(fig)
    return paths


def run_main_job(config_path: Path, out_dir: Path, resume: bool = False, use_ray: bool = True, address: str | None = None) -> int:
    from learner.driver import load_config_with_runtime, run_distributed
    from smart_r1.tracking import make_tracker
    from smart_r1.train.checkpoint import Checkpoint, last_checkpoint
    from smart_r1.train.pipeline import run_pipeline

    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    t0 = time.perf_counter()
    cfg, runtime = load_config_with_runtime(str(config_path))
    out = Path(out_dir)
    cfg.output_dir = str(out)
    out.mkdir(parents=True, exist_ok=True)

    server = None
    try:
        if not use_ray:
            _banner("single process (no Ray, no MLflow server)")
            cfg.tracking.enabled = False
            result = run_pipeline(cfg, resume=resume)
            tracker = None
        else:
            from smart_r1.mlflow_server import ensure_tracking_uri

            uri, server = ensure_tracking_uri({"tracking": {"uri": cfg.tracking.uri}}, root=out / "mlflow")
            cfg.tracking.uri = uri
            _banner(f"MLflow tracking server: {uri}")
            _banner("synthetic scenes -> Parquet cache (Ray tasks)")
            import ray

            from learner.driver import connect_ray

            started = connect_ray(address)
            try:
                print(f"Ray cluster: {ray.get_runtime_context().gcs_address} ({ray.cluster_resources().get('CPU', 0):.0f} CPUs)", flush=True)
                _preprocess_on_ray(cfg, out, address)
                _banner("BC -> CAT-K SFT -> MPO RFT -> CAT-K SFT on Ray")
                result = run_distributed(cfg, resume=resume, address=address, runtime=runtime, out_dir=str(out))
            finally:
                if started:
                    ray.shutdown()
            ckpt = last_checkpoint(out)
            run_id = Checkpoint.load(ckpt).mlflow_run_id if ckpt else None
            tracker = make_tracker({"tracking": {"uri": uri, "experiment": cfg.tracking.experiment}}, run_id=run_id,
                                   buffer_dir=out / "tracking_buffer") if run_id else None
        _banner("plots and rollout renders of validation scenes")
        try:
            for p in plot_run(result.history, result.evaluations, out / "plots"):
                print(p)
                if tracker is not None:
                    tracker.log_artifact(p, artifact_path="plots")
            for p in _render_and_log(cfg, out, tracker):
                print(p)
        finally:
            if tracker is not None:
                tracker.close(timeout=60)
        table = out / "evaluation.md"
        if table.exists():
            _banner("evaluation (validation scenes, fast WOSAC 2025 backend)")
            print(table.read_text())
        summary = {"output_dir": str(out), "seconds": round(time.perf_counter() - t0, 1)}
        if use_ray:
            summary["mlflow_uri_during_run"] = cfg.tracking.uri
            summary["browse_results_later"] = (
                f"mlflow server --backend-store-uri sqlite:///{(out / 'mlflow' / 'mlflow.db').resolve()} "
                f"--artifacts-destination {(out / 'mlflow' / 'artifacts').resolve()} --workers 1"
            )
        print(json.dumps(summary, indent=1), flush=True)
        return 0
    finally:
        if server is not None:
            server.stop()
