"""Distributed training driver: `run_distributed(cfg, resume)` (what `smart-r1 train --ray` calls).

    python -m learner.driver --config configs/cpu_demo.yaml [--resume] [--address auto] [--set k=v ...]

1. Ray: connect to `address` (`auto` inside `ray job submit`, or `RAY_ADDRESS`), else start a
   private local instance (never attaches to another user's cluster by accident).
2. MLflow: the configured URI (`tracking.uri` / `MLFLOW_TRACKING_URI`), else a local server is
   started (sqlite, `--workers 1`, job execution off) and stopped at the end; the dashboard URL
   is printed. On `--resume` the MLflow run id stored in the last checkpoint is reused, so the
   resumed job continues the same run. Params: the resolved config + git commit; tags: mode,
   Ray address; artifacts: checkpoints (by the training loop), vocabulary, evaluation table;
   the final policy is logged as an MLflow pyfunc model and registered (by the library pipeline,
   `smart_r1.train.pipeline.log_policy_model`).
3. The library pipeline (`smart_r1.train.pipeline.run_pipeline`) runs unchanged in this
   process (the learner); RL stages' experience collection is distributed over rollout actors
   and the scorer pool (`learner.smart_collect`). Runtime sizes come from the `runtime:`
   section of the YAML (read here, stripped before the library parses the config), the
   `runtime` argument, or `SMART_R1_RUNTIME` (JSON); see `learner.runtime.RuntimeConfig`.
   `runtime.distributed_eval` (default true) runs the held-out validation after each stage on
   Ray actors too (`learner.distributed_eval.DistributedValidator`, same numbers as
   `smart_r1.train.loop.evaluate`); false keeps it in the learner.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from learner.cluster import connect_ray  # noqa: F401  (re-exported: `learner.driver.connect_ray`)

log = logging.getLogger(__name__)


def _git_commit() -> str:
    try:
        return subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5,
                              cwd=Path(__file__).resolve().parents[1]).stdout.strip() or "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def split_runtime_section(raw: dict) -> tuple[dict, dict]:
    raw = dict(raw)
    return raw, dict(raw.pop("runtime", None) or {})


def load_config_with_runtime(path: str, overrides: list[str] | None = None):
    """(TrainConfig, runtime dict): the `runtime:` section is ours, the rest the library's."""
    from smart_r1.train.config import apply_overrides, config_from_dict, load_yaml

    raw, runtime = split_runtime_section(load_yaml(path))
    lib_over = [o for o in (overrides or []) if not o.startswith("runtime.")]
    rt_over = [o[len("runtime."):] for o in (overrides or []) if o.startswith("runtime.")]
    runtime = apply_overrides(runtime, rt_over)
    try:  # runtime.learner (the data-parallel learner) is checked here, naming the file
        from learner.train_dp import LearnerGroupConfig

        LearnerGroupConfig.from_dict(runtime.get("learner"))
    except ValueError as err:
        from smart_r1.train.config import ConfigError

        raise ConfigError(f"{path}: {err}") from None
    return config_from_dict(apply_overrides(raw, lib_over), str(path)), runtime


def run_distributed(cfg, resume: bool = False, address: str | None = None, runtime: dict | None = None,
                    out_dir: str | None = None, stop_after_steps: int | None = None) -> Any:
    """Run the config's stage schedule on Ray with MLflow tracking. Returns the library `TrainResult`."""
    import ray

    from learner.runtime import RuntimeConfig
    from learner.smart_collect import DistributedCollector
    from smart_r1.mlflow_server import ensure_tracking_uri
    from smart_r1.tracking import make_tracker
    from smart_r1.train.checkpoint import Checkpoint, last_checkpoint
    from smart_r1.train.config import resolved_dict
    from smart_r1.train.pipeline import prepare_data, run_pipeline

    from learner.cluster import RunStorage, resolve_output_dir

    rt_dict = dict(json.loads(os.environ["SMART_R1_RUNTIME"]) if os.environ.get("SMART_R1_RUNTIME") else {})
    rt_dict.update(runtime or {})
    distributed_eval = bool(rt_dict.pop("distributed_eval", True))  # ours (learner.distributed_eval), not RuntimeConfig's
    storage_root = rt_dict.pop("storage", None)  # shared path / object-store URI for the outputs (learner.cluster)
    storage_sync = float(rt_dict.pop("storage_sync_seconds", 60.0))
    # Outputs (checkpoints, vocabulary, scene cache, results) on a path every node reaches or an
    # object store; a URI is staged locally, pulled first (resume) and pushed back as it grows.
    storage = RunStorage(resolve_output_dir(str(out_dir or cfg.output_dir), storage_root), sync_seconds=storage_sync)
    if resume:
        storage.pull()
    storage.start()
    cfg.output_dir = storage.local_dir
    out = Path(cfg.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    if storage.remote:
        print(f"outputs: {storage.target} (staged in {out})", flush=True)
    from learner.train_dp import LearnerGroup, LearnerGroupConfig

    learner_cfg = LearnerGroupConfig.from_dict(rt_dict.pop("learner", None))  # the data-parallel learner (train_dp)
    rt_cfg = RuntimeConfig.from_dict(rt_dict)
    rt_dict["learner"] = dataclasses.asdict(learner_cfg)
    rt_dict["distributed_eval"] = distributed_eval  # logged with the other runtime params
    rt_dict["storage"] = storage.target

    started_ray = connect_ray(address)
    server = None
    tracker = None
    collector = None
    learner_group = None
    validator = None
    try:
        # ---- tracking
        if cfg.tracking.enabled:
            uri, server = ensure_tracking_uri({"tracking": {"uri": cfg.tracking.uri}}, root=out / "mlflow")
            cfg.tracking.uri = uri
            run_id = None
            if resume:
                p = last_checkpoint(out)
                run_id = Checkpoint.load(p).mlflow_run_id if p else None
            tracker = make_tracker({"tracking": resolved_dict(cfg)["tracking"]}, run_name=cfg.tracking.run_name,
                                   run_id=run_id, buffer_dir=out / "tracking_buffer")
            tracker.log_params({"git_commit": _git_commit(), **{f"runtime.{k}": v for k, v in rt_dict.items()}})
            tracker.set_tags({"mode": "ray", "ray.address": str(ray.get_runtime_context().gcs_address),
                              "resumed": str(bool(resume and run_id))})
            print(f"MLflow dashboard: {uri}  (experiment {cfg.tracking.experiment!r})", flush=True)
        # ---- data (once, in the learner) and the actors
        data = prepare_data(cfg, out)
        collector = DistributedCollector(cfg, data.vocab, rt_cfg, tracker)
        if distributed_eval:  # held-out validation after each stage on Ray actors (same numbers as loop.evaluate)
            from learner.distributed_eval import validator_from_runtime

            validator = validator_from_runtime(rt_cfg)
        wrap, updater = collector.wrap, None
        if learner_cfg.num_workers >= 1:  # the update on Ray Train ranks; this process only controls
            learner_group = LearnerGroup(cfg, data.vocab, learner_cfg, n_train=len(data.train), publish=collector.publish,
                                         out_dir=str(out))
            wrap, updater = (lambda objective: learner_group.wrap(collector.wrap(objective))), learner_group.update
        result = run_pipeline(cfg, resume=resume, tracker=tracker, data=data, stop_after_steps=stop_after_steps,
                              wrap_objective=wrap, evaluator=validator,
                              updater=updater)
        if tracker is not None:
            info = collector.actor_info()
            mem = {f"memory/{kind}_rss_mb_max": max(i["rss_bytes"] for i in items) / 2**20 for kind, items in info.items()}
            tracker.log_metrics({**mem, **{f"runtime/{k}": float(v) for k, v in collector.stats.items()}},
                                step=len(result.history))
            if data.vocab_dir and Path(data.vocab_dir).exists():
                tracker.log_artifact(data.vocab_dir, artifact_path="vocab")
            for name in ("evaluation.md", "evaluation.json", "config.resolved.json"):
                if (out / name).exists():
                    tracker.log_artifact(out / name, artifact_path="results")
            print(f"MLflow run: {tracker.dashboard_url}", flush=True)
        return result
    finally:
        storage.close()  # last push to a URI target (also when the run failed: its checkpoints)
        if learner_group is not None:
            learner_group.shutdown()
        if validator is not None:
            validator.shutdown()
        if collector is not None:
            collector.shutdown()
        if tracker is not None:
            tracker.close(timeout=60)
        if server is not None:
            server.stop()
        if started_ray:
            ray.shutdown()


class LearnerLost(RuntimeError):
    """The training loop's process (the learner) died with its node; resume with `--resume`."""


def _run_task(config_path: str, overrides: list, resume: bool, out_dir: str | None, stop_after_steps: int | None) -> dict:
    import ray

    cfg, runtime = load_config_with_runtime(config_path, overrides)
    result = run_distributed(cfg, resume=resume, runtime=runtime, out_dir=out_dir, stop_after_steps=stop_after_steps)
    return {"steps": len(result.history), "stopped_early": bool(result.stopped_early), "output_dir": str(result.output_dir),
            "node_id": ray.get_runtime_context().get_node_id(), "history": [dict(h) for h in result.history]}


FORWARDED_ENV = ("SMART_R1_RUNTIME", "SMART_R1_STORAGE", "SMART_R1_TRACKING_BUFFER", "MLFLOW_TRACKING_URI",
                 "MLFLOW_EXPERIMENT_NAME")


def run_on_learner_node(config_path: str, resources: dict | str | None, overrides: list[str] | None = None,
                        resume: bool = False, out_dir: str | None = None, num_cpus: float = 1.0, num_gpus: float = 0.0,
                        stop_after_steps: int | None = None) -> dict:
    """`run_distributed` inside a Ray task placed on the learner node (`resources`, e.g.
    `{"learner": 1}` or a GPU): the training loop, checkpoints and the MLflow run live there,
    while this process (anywhere on the cluster) only waits. Returns a summary dict (steps,
    stopped_early, output_dir, node_id, history). `output_dir` must be storage every node can
    read (a shared path), so `--resume` works after the learner node is gone.

    Same effect as `ray job submit --entrypoint-resources '{"learner": 1}' -- smart-r1 train ...`.
    Raises `LearnerLost` with what to do when the task's node dies (no automatic retry: a
    resumed run continues from the last checkpoint, not from scratch)."""
    import ray

    from learner.cluster import parse_resources

    res = parse_resources(resources, "learner resources")
    # The run reads these from its environment (runtime sizes, storage, tracking): carry the
    # caller's values to the learner node, whose worker processes do not inherit this shell's.
    env = {k: os.environ[k] for k in FORWARDED_ENV if k in os.environ}
    task = ray.remote(_run_task).options(num_cpus=num_cpus, num_gpus=num_gpus, resources=res or None, max_retries=0,
                                         runtime_env={"env_vars": env} if env else None)
    ref = task.remote(str(config_path), list(overrides or []), bool(resume), out_dir, stop_after_steps)
    try:
        return ray.get(ref)
    except ray.exceptions.RayTaskError as err:  # the training itself raised: show its error
        raise err.as_instanceof_cause() from None
    except ray.exceptions.RayError as err:  # node died, worker killed, out of memory
        raise LearnerLost(
            f"the learner (the training loop, a Ray task on a node with {res or 'any resources'}) was lost: "
            f"{type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}. Checkpoints written so far are in "
            f"{out_dir or 'the config output_dir'}; run the same command with --resume (on a node that can read it) "
            f"to continue from the last checkpoint in the same MLflow run.") from err


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m learner.driver", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", required=True)
    p.add_argument("--resume", action="store_true")
    p.add_argument("--address", default=None, help="Ray address ('auto' inside ray job submit)")
    p.add_argument("--out", default=None)
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("--ray", action="store_true", help="accepted for symmetry with `smart-r1 train --ray`")
    p.add_argument("--learner-resources", default=None, metavar="JSON",
                   help='run the training loop in a Ray task on the node with these resources, e.g. \'{"learner": 1}\'')
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    if args.learner_resources:
        connect_ray(args.address)
        try:
            out = run_on_learner_node(args.config, args.learner_resources, args.overrides, resume=args.resume, out_dir=args.out)
        except LearnerLost as err:
            print(f"error: {err}", file=sys.stderr, flush=True)
            return 3
        print(f"done: {out['steps']} steps on node {out['node_id']}, outputs in {out['output_dir']}", flush=True)
        return 0
    cfg, runtime = load_config_with_runtime(args.config, args.overrides)
    result = run_distributed(cfg, resume=args.resume, address=args.address, runtime=runtime, out_dir=args.out)
    print(f"done: {len(result.history)} steps, outputs in {result.output_dir}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
