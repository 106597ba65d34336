"""The whole main job in one process: synthetic scenes -> Parquet cache -> motion vocabulary ->
tokenized scenes -> stage schedule -> evaluation table.

    result = run_pipeline(load_config("configs/cpu_demo.yaml"), resume=False)

Every artefact lives under `cfg.output_dir` and is reused when present (same inputs give
byte-identical synthetic shards; the cache skips finished shards; the vocabulary is reloaded
when its data hash matches; tokenized scenes are pickled per vocabulary id), so `--resume`
after a kill only redoes the unfinished training steps. The runtime engineer wraps this for
Ray / MLflow; nothing here imports Ray (the cache converts in-process, `num_workers=0`).
"""

from __future__ import annotations

import json
import logging
import pickle
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from smart_r1.train.config import TrainConfig, resolved_dict
from smart_r1.train.data import Split
from smart_r1.train.loop import Trainer, TrainResult, derive_seed

log = logging.getLogger(__name__)

TABLE_KEYS = (
    ("metametric", "realism meta"),
    ("kinematic_metrics", "kinematic"),
    ("interactive_metrics", "interactive"),
    ("map_based_metrics", "map"),
    ("min_average_displacement_error", "minADE"),
    ("next_token_accuracy", "token acc"),
    ("guard/distance_ratio", "dist/log"),
)


@dataclass
class PreparedData:
    train: Split
    val: Split
    vocab: Any
    vocab_dir: Path


def _scene_files(cfg: TrainConfig, out: Path, split: str) -> list[str]:
    d = cfg.data
    if d.glob:
        from smart_r1.data.tfrecord import expand_paths

        spec = d.glob if split == "training" else (d.val_glob or None)
        return [str(p) for p in expand_paths(spec)] if spec else []
    syn = d.synthetic
    from smart_r1.data.synth import write_synthetic_dataset

    n = syn.n_scenes if split == "training" else syn.n_val_scenes
    if n <= 0:
        return []
    seed = syn.seed if split == "training" else derive_seed(syn.seed, "validation") % (2**31)
    target = out / "scenes" / split
    done = target / (f".done-{n}-{seed}" if syn.profile == "small" else f".done-{n}-{seed}-{syn.profile}")
    if done.exists():
        return sorted(str(p) for p in target.glob(f"{split}.tfrecord-*"))
    paths = write_synthetic_dataset(target, n, seed, num_shards=1, split=split, progress=cfg.progress, profile=syn.profile, **syn.params)
    done.touch()
    return [str(p) for p in paths]


def _load_scenes(cfg: TrainConfig, files: list[str], cache_dir: Path) -> list:
    if not files:
        return []
    from smart_r1.data.cache import SceneCache, preprocess

    preprocess(files, cache_dir, num_workers=0, progress=cfg.progress)
    cache = SceneCache(cache_dir)
    return [cache[i] for i in range(len(cache))]


def _vocab(cfg: TrainConfig, scenes: list, out: Path):
    from smart_r1.tokens.motion_vocab import MotionVocab, VocabConfig, build_motion_vocab, data_hash

    vdir = out / "vocab"
    want = data_hash(scenes)
    if (vdir / "vocab.json").exists():
        vocab = MotionVocab.load(vdir)
        meta = json.loads((vdir / "vocab.json").read_text())
        if vocab.data_hash == want and meta.get("build_config", None) in (None, cfg.vocab):
            return vocab, vdir
    vocab = build_motion_vocab(scenes, VocabConfig.from_dict(dict(cfg.vocab)), progress=cfg.progress)
    vocab.meta["build_config"] = dict(cfg.vocab)
    vocab.save(vdir)
    return vocab, vdir


def _tokenize(cfg: TrainConfig, scenes: list, vocab, out: Path, split: str) -> list:
    if not scenes:
        return []
    from smart_r1.tokens.tokenizer import Tokenizer

    path = out / "tokenized" / f"{split}-{vocab.vocab_id}-{len(scenes)}.pkl"
    if path.exists():
        with open(path, "rb") as f:
            tok = pickle.load(f)
        if [t.scenario_id for t in tok] == [s.scenario_id for s in scenes]:
            return tok
    tokenizer = Tokenizer(vocab)
    try:
        from tqdm.auto import tqdm

        it = tqdm(scenes, desc=f"tokenize {split}", disable=not cfg.progress, leave=False)
    except ImportError:
        it = scenes
    tok = [tokenizer.tokenize(s) for s in it]
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    with open(tmp, "wb") as f:
        pickle.dump(tok, f)
    tmp.replace(path)
    return tok


def prepare_data(cfg: TrainConfig, out_dir: str | Path | None = None) -> PreparedData:
    out = Path(out_dir or cfg.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    cache_root = Path(cfg.data.cache_dir) if cfg.data.cache_dir else out / "cache"
    t0 = time.perf_counter()
    train_scenes = _load_scenes(cfg, _scene_files(cfg, out, "training"), cache_root / "training")
    val_scenes = _load_scenes(cfg, _scene_files(cfg, out, "validation"), cache_root / "validation")
    if not train_scenes:
        raise ValueError(f"{cfg.output_dir}: no training scenes (data.synthetic.n_scenes / data.glob)")
    check_scenes_for_stages(cfg, train_scenes, val_scenes)
    vocab, vdir = _vocab(cfg, train_scenes, out)
    train = Split(train_scenes, _tokenize(cfg, train_scenes, vocab, out, "training"))
    val = Split(val_scenes, _tokenize(cfg, val_scenes, vocab, out, "validation"))
    log.info("data ready in %.1f s: %d train / %d val scenes, vocab %s", time.perf_counter() - t0, len(train), len(val), vocab)
    return PreparedData(train, val, vocab, vdir)


def check_scenes_for_stages(cfg: TrainConfig, train_scenes: list, val_scenes: list) -> None:
    """Fail before the first step, naming the scenes, when a stage cannot use them.

    Training reads scenes without map features (`REQUIRE_MAP["train"]`: behaviour cloning and
    CAT-K need no map). The realism reward of the RL stages (objectives with `needs_scenes`)
    and the validation evaluation need road edges, so the scenes they draw from must have a map:
    otherwise the metric backend would fail many steps into the run."""
    from smart_r1.errors import InputError
    from smart_r1.objectives.registry import objective_class

    def missing_map(scenes) -> list:
        return [s for s in scenes if s.map.n_feature == 0]

    def named(scenes) -> str:
        shown = ", ".join(f"{s.scenario_id} ({s.source or '<in memory>'})" for s in scenes[:5])
        return shown + (f" and {len(scenes) - 5} more" if len(scenes) > 5 else "")

    rl_stages = [s.name for s in cfg.stages if objective_class(s.objective).needs_scenes]
    if rl_stages:
        bad = missing_map(train_scenes)
        if bad:
            raise InputError(
                f"field map_features: {len(bad)} of {len(train_scenes)} training scenes have no map features, but stage(s) "
                f"{rl_stages} score rollouts with the realism metrics, which need road edges: {named(bad)}; "
                "remove these scenes from the training data (or train them with bc / catk stages only)")
    if cfg.eval.after_each_stage and val_scenes:
        bad = missing_map(val_scenes)
        if bad:
            raise InputError(f"field map_features: {len(bad)} validation scenes have no map features (the evaluation "
                             f"after each stage scores them with the realism metrics): {named(bad)}")


def build_model_for(cfg: TrainConfig, vocab) -> torch.nn.Module:
    """`SmartModel` of the configured preset for this vocabulary, initialised from the config seed."""
    from smart_r1.model.batch import vocab_sizes_of
    from smart_r1.model.presets import get_preset
    from smart_r1.model.smart import SmartModel

    mcfg = get_preset(cfg.model.preset, **dict(cfg.model.overrides))
    with torch.random.fork_rng():
        torch.manual_seed(derive_seed(cfg.seed, "model-init"))
        model = SmartModel(mcfg, vocab_sizes_of(vocab))
    from smart_r1.train.config import resolve_device

    return model.to(resolve_device(cfg.device))


def make_tracker_for(cfg: TrainConfig, run_id: str | None = None):
    try:
        from smart_r1.tracking import make_tracker
    except ImportError:
        return None
    sec = resolved_dict(cfg)["tracking"]
    return make_tracker({"tracking": sec}, run_name=sec.get("run_name"), run_id=run_id)


def registered_model_name(cfg: TrainConfig) -> str:
    return cfg.tracking.model_name or f"{cfg.tracking.experiment}-policy"


def log_policy_model(cfg: TrainConfig, model, vocab_dir, result: TrainResult, tracker, out: Path,
                     train_split=None) -> Path | None:
    """Save the final policy as an MLflow pyfunc model (`smart_r1.policy_model`) under
    `<out>/policy_model` and hand it to the tracker: a logged model of the run with the last
    stage's evaluation as its metrics, a registered version with a description, and the `champion`
    alias when its realism meta metric is the best so far. A resumed run that registered already
    registers nothing (the tracker checks)."""
    from smart_r1.tracking import NullTracker

    if not cfg.tracking.register_model or tracker is None or isinstance(tracker, NullTracker) \
            or not callable(getattr(tracker, "log_model", None)):
        return None
    from smart_r1.policy_model import save_policy_model

    from smart_r1.train.loop import stage_total_steps

    path = save_policy_model(model, vocab_dir, out / "policy_model", config=resolved_dict(cfg))
    n_train = len(train_split) if train_split is not None else 0
    end_step = sum(stage_total_steps(s, n_train, int(s.batch_size or cfg.data.batch_size)) for s in cfg.stages) \
        if n_train else len(result.history)
    last = cfg.stages[-1].name
    final = dict(result.evaluations.get(last, {}))
    schedule = " -> ".join(f"{s.name} ({s.objective})" for s in cfg.stages)
    realism = f"realism meta {final['metametric']:.4f} on {int(final.get('n_scenes', 0))} held-out scenes " \
              f"({cfg.eval.backend} WOSAC 2025 backend, {cfg.eval.n_rollout} rollouts)" if "metametric" in final else \
              "no held-out evaluation"
    description = (
        f"SMART-R1 policy, model preset `{cfg.model.preset}`, trained {schedule}; {realism}. "
        "Input: serialized WOMD Scenario protos (column `scenario`); output: closed-loop rollouts, one row per "
        "(scenario, rollout, agent, future step). Load with "
        f"`mlflow.pyfunc.load_model('models:/{registered_model_name(cfg)}@champion')` (needs the smart_r1 package)."
    )
    # The model metrics are the run's `eval/<last stage>/...` metrics (one name per quantity),
    # re-logged at that stage's end step and linked to the logged model.
    tracker.log_model(path, registered_model_name(cfg), metrics={f"eval/{last}/{k}": v for k, v in final.items()},
                      description=description, champion_score=final.get("metametric"),
                      tags={"model_preset": cfg.model.preset, "final_stage": last, "realism_metametric": final.get("metametric")},
                      step=end_step)
    return path


def results_table(evaluations: dict[str, dict[str, float]]) -> str:
    """Markdown table: one row per evaluated stage."""
    head = "| stage | " + " | ".join(label for _, label in TABLE_KEYS) + " |"
    sep = "|" + "---|" * (len(TABLE_KEYS) + 1)
    rows = [head, sep]
    for stage, ev in evaluations.items():
        cells = [f"{ev[k]:.4f}" if k in ev else "-" for k, _ in TABLE_KEYS]
        rows.append(f"| {stage} | " + " | ".join(cells) + " |")
    return "\n".join(rows)


def run_pipeline(cfg: TrainConfig, resume: bool = False, out_dir: str | Path | None = None, tracker=None,
                 data: PreparedData | None = None, stop_after_steps: int | None = None,
                 wrap_objective=None, evaluator=None, updater=None) -> TrainResult:
    """Run `cfg`'s stage schedule end to end (data -> model -> stages -> evaluation table).
    `wrap_objective` / `evaluator` / `updater`: the `Trainer` hooks (used by the Ray driver)."""
    out = Path(out_dir or cfg.output_dir)
    if out_dir is not None:
        cfg.output_dir = str(out)
    out.mkdir(parents=True, exist_ok=True)
    if cfg.num_threads:
        torch.set_num_threads(cfg.num_threads)
    data = data or prepare_data(cfg, out)
    model = build_model_for(cfg, data.vocab)
    own_tracker = tracker is None
    if tracker is None:
        run_id = None
        if resume:
            from smart_r1.train.checkpoint import Checkpoint, last_checkpoint

            p = last_checkpoint(out)
            run_id = Checkpoint.load(p).mlflow_run_id if p else None
        tracker = make_tracker_for(cfg, run_id)
    (out / "config.resolved.json").write_text(json.dumps(resolved_dict(cfg), indent=1))
    trainer = Trainer(cfg, model, data.vocab, data.train, data.val, out, tracker=tracker, vocab_dir=str(data.vocab_dir),
                      stop_after_steps=stop_after_steps, wrap_objective=wrap_objective, evaluator=evaluator,
                      updater=updater)
    try:
        result = trainer.run(resume=resume)
        if not result.stopped_early:
            if result.evaluations and tracker is not None:
                # The run's description in the MLflow UI (markdown): the schedule and its evaluation table.
                schedule = " -> ".join(f"{s.name} ({s.objective})" for s in cfg.stages)
                tracker.set_tags({"mlflow.note.content": f"SMART-R1 schedule {schedule}, model preset "
                                  f"`{cfg.model.preset}`; held-out evaluation after each stage:\n\n"
                                  f"{results_table(result.evaluations)}\n"})
            log_policy_model(cfg, model, data.vocab_dir, result, tracker, out, train_split=data.train)
    finally:
        if own_tracker and tracker is not None:
            tracker.close()
    if not result.stopped_early:
        (out / "evaluation.json").write_text(json.dumps(result.evaluations, indent=1))
        table = results_table(result.evaluations)
        (out / "evaluation.md").write_text(table + "\n")
        if cfg.progress:
            print(table)
    return result
