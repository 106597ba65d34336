"""Training config: YAML -> dataclasses, strict (unknown or ill-typed fields raise an error
naming the file and the field path, e.g. `configs/x.yaml: stages[2].lr: expected a number`).

    seed: 0
    output_dir: .smart_r1_runs/cpu_demo
    data:      {synthetic: {n_scenes: 64, seed: 0}, glob: null, cache_dir: ..., n_val: 8, batch_size: 4, ...}
    vocab:     {...VocabConfig fields..., map: {...MapConfig fields...}}
    model:     {preset: cpu-demo, overrides: {}}
    stages:    [{name, objective, epochs | steps, lr, params, freeze, ...}, ...]
    eval:      {n_scenes, n_rollout, sampler, sampler_params, backend, after_each_stage, every_n_steps,
                during_stage_n_scenes, render_scenes}
    learner:   {max_tokens_per_microbatch: 1024, autocast: none, reference_on: rollout | learner}
    device:    cpu | cuda | auto
    tracking:  {uri, experiment, run_name, enabled, system_metrics, system_metrics_interval, register_model, model_name}

`load_config("cpu_demo")` also takes a config *name*: the file of that name in the repository's
`configs/` folder, or (installed from a wheel) the copy shipped inside the package
(`smart_r1/configs/`); `config_names()` lists them.

A config may `include:` another file (path relative to itself) and override some of its keys
(mappings merge recursively, a key written `key!:` replaces instead; lists such as `stages` are
replaced, or patched item-wise with a mapping `{index: {...}}`). `--set a.b=value` applies the same dotted overrides from the CLI
(`stages.2.params.beta=0.4`).
"""

from __future__ import annotations

import copy
import dataclasses
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, get_args, get_origin, get_type_hints

import yaml

from smart_r1.errors import ConfigError  # noqa: F401  (defined with the other input errors; imported from here too)


@dataclass
class SyntheticDataConfig:
    n_scenes: int = 64  # training scenes
    n_val_scenes: int = 16  # held-out scenes (different seed stream)
    seed: int = 0
    params: dict = field(default_factory=dict)  # extra SynthConfig fields
    profile: str = "small"  # SynthConfig preset: "small" (issue-2 scenes) or "womd" (WOMD's shape)


@dataclass
class DataConfig:
    synthetic: SyntheticDataConfig | None = field(default_factory=SyntheticDataConfig)
    glob: str | None = None  # real / pre-written TFRecords instead of synthetic scenes (train split)
    val_glob: str | None = None
    cache_dir: str | None = None  # default: <output_dir>/cache
    batch_size: int = 4  # scenes per step
    max_train_agents: int = 32  # per scene, nearest to the SDC
    train_radius_m: float = 100.0  # around the SDC at the current step


@dataclass
class ModelSection:
    preset: str = "cpu-demo"
    overrides: dict = field(default_factory=dict)


@dataclass
class StageConfig:
    name: str
    objective: str
    epochs: float | None = None  # passes over the training scenes (fractions allowed)
    steps: int | None = None  # or an explicit number of optimiser steps
    lr: float = 5e-4
    lr_final_fraction: float = 0.01  # cosine decay to this fraction of lr
    warmup_steps: int = 0
    weight_decay: float = 0.01
    grad_clip: float = 0.5
    batch_size: int | None = None  # default: data.batch_size
    params: dict = field(default_factory=dict)  # objective parameters (get_objective(objective, **params))
    freeze: list = field(default_factory=list)  # parameter-name prefixes to freeze ("map_encoder", "embed")
    checkpoint_every: int = 0  # steps; 0 = only at the end of the stage
    update_epochs: int = 1  # optimiser passes per collected experience (PPO / GRPO style re-use)
    eval_every_n_steps: int | None = None  # this stage's in-stage validation period (default: eval.every_n_steps)


@dataclass
class EvalConfig:
    n_scenes: int = 16  # held-out scenes used per evaluation (<= data.synthetic.n_val_scenes)
    n_rollout: int = 8
    sampler: str = "topk"
    sampler_params: dict = field(default_factory=lambda: {"k": 5})
    backend: str = "fast"
    after_each_stage: bool = True
    batch_size: int = 4
    # Validation inside a stage too, every N optimiser steps (0 = only after each stage), so the
    # realism curve (`val/...` metrics) has points during a stage; on `during_stage_n_scenes`
    # scenes (0 = n_scenes) to keep it cheap.
    every_n_steps: int = 0
    during_stage_n_scenes: int = 0
    # Render the first N validation scenes with the policy after every stage (PNG grids, logged
    # as artifacts `renders/<index>_<stage>/`), the same scenes each time: compare stages by eye.
    render_scenes: int = 0
    render_rollouts: int = 2


@dataclass
class TrackingConfig:
    enabled: bool = True
    uri: str | None = None
    experiment: str = "smart-r1"
    run_name: str | None = None
    system_metrics: bool = True  # CPU / memory / disk / network (and GPU with pynvml) as `system/...` metrics
    system_metrics_interval: float = 5.0  # seconds between system-metric samples (a run shorter than this logs none)
    register_model: bool = True  # log the final policy as an MLflow pyfunc model and register it
    model_name: str | None = None  # registered model name; default `<experiment>-policy`


REFERENCE_ON = ("rollout", "learner")  # learner.reference_on


@dataclass
class LearnerConfig:
    """How the learner runs one update (`smart_r1.train.step.update`); docs/training.md and
    docs/runtime.md (sizing the budget for a GPU's memory)."""

    # Rows (sequence x agent x position) of one teacher-forced forward with grad. Memory of the
    # update ~ this budget x the model's per-row activation size, whatever the rollouts / agents.
    max_tokens_per_microbatch: int = 1024
    autocast: str = "none"  # none | bf16: torch.autocast dtype of the update's forwards
    # Where the frozen reference's log-probs of the sampled tokens are computed (RL objectives with
    # a KL / reference term): `rollout` (the engine steps the reference alongside the policy and the
    # values travel with the rollouts) or `learner` (a teacher-forced no-grad pass in the update).
    # Same numbers either way; docs/training.md says which is faster and why.
    reference_on: str = "rollout"


@dataclass
class TrainConfig:
    stages: list[StageConfig]
    seed: int = 0
    output_dir: str = ".smart_r1_runs/train"
    data: DataConfig = field(default_factory=DataConfig)
    vocab: dict = field(default_factory=dict)
    model: ModelSection = field(default_factory=ModelSection)
    eval: EvalConfig = field(default_factory=EvalConfig)
    tracking: TrackingConfig = field(default_factory=TrackingConfig)
    init_from: str | None = None  # checkpoint whose model weights start stage 0 (branch from a finished stage)
    learner: LearnerConfig = field(default_factory=LearnerConfig)
    device: str = "auto"  # auto (cuda when a GPU is visible where the model runs, else cpu) | cpu | cuda | cuda:N
    num_threads: int = 0  # torch.set_num_threads; 0 = leave as is
    progress: bool = True

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def stage_index(self, name: str) -> int:
        for i, s in enumerate(self.stages):
            if s.name == name:
                return i
        raise KeyError(f"no stage named {name!r}; stages: {[s.name for s in self.stages]}")


# ----------------------------------------------------------------------------------------------
# Parsing
# ----------------------------------------------------------------------------------------------


def resolve_device(name: str) -> str:
    """`device:` -> a torch device string; `auto` is cuda when a GPU is visible here, else cpu
    (resolved where the model lives, so a CPU driver can configure a GPU learner)."""
    if name == "auto":
        import torch

        return "cuda" if torch.cuda.is_available() else "cpu"
    return name


def _type_name(tp) -> str:
    return getattr(tp, "__name__", str(tp))


def _coerce(value: Any, tp, where: str):
    """Check / convert `value` to the annotated type `tp`, raising ConfigError naming `where`."""
    origin = get_origin(tp)
    args = get_args(tp)
    if origin is type(None) or tp is type(None):
        if value is not None:
            raise ConfigError(f"{where}: expected null, got {value!r}")
        return None
    if origin in (list,):
        if not isinstance(value, list):
            raise ConfigError(f"{where}: expected a list, got {type(value).__name__} {value!r}")
        item_tp = args[0] if args else Any
        return [_coerce(v, item_tp, f"{where}[{i}]") for i, v in enumerate(value)]
    if origin is dict or tp is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping, got {type(value).__name__} {value!r}")
        return dict(value)
    if args and type(None) in args:  # Optional[...] / X | None
        if value is None:
            return None
        inner = [a for a in args if a is not type(None)]
        errors = []
        for a in inner:
            try:
                return _coerce(value, a, where)
            except ConfigError as e:
                errors.append(str(e))
        raise ConfigError(errors[0] if len(errors) == 1 else f"{where}: {value!r} matches none of {[_type_name(a) for a in inner]}")
    if dataclasses.is_dataclass(tp):
        return _build(tp, value, where)
    if tp is Any:
        return value
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{where}: expected true/false, got {value!r}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or (isinstance(value, float) and not value.is_integer()):
            raise ConfigError(f"{where}: expected an integer, got {value!r}")
        return int(value)
    if tp is float:
        if isinstance(value, str):
            try:
                value = float(value)  # YAML reads 5e-4 as a string
            except ValueError:
                raise ConfigError(f"{where}: expected a number, got {value!r}") from None
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(float(value)):
            raise ConfigError(f"{where}: expected a number, got {value!r}")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"{where}: expected a string, got {value!r}")
        return value
    return value


def _build(cls, data: Any, where: str):
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{where}: expected a mapping for {cls.__name__}, got {type(data).__name__} {data!r}")
    hints = get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise ConfigError(f"{where}: unknown field(s) {unknown}; allowed: {sorted(fields)}")
    kwargs = {}
    for name, f in fields.items():
        sub = f"{where}.{name}" if where else name
        if name in data:
            kwargs[name] = _coerce(data[name], hints[name], sub)
        elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:  # type: ignore[misc]
            raise ConfigError(f"{sub}: missing required field")
    return cls(**kwargs)


def _validate(cfg: TrainConfig, where: str) -> TrainConfig:
    from smart_r1.objectives import list_objectives

    if not cfg.stages:
        raise ConfigError(f"{where}stages: at least one stage is required")
    names = set()
    known = list_objectives()
    for i, s in enumerate(cfg.stages):
        p = f"{where}stages[{i}]"
        if s.name in names:
            raise ConfigError(f"{p}.name: duplicate stage name {s.name!r}")
        names.add(s.name)
        if s.objective not in known:
            raise ConfigError(f"{p}.objective: unknown objective {s.objective!r}; known: {known}")
        if (s.epochs is None) == (s.steps is None):
            raise ConfigError(f"{p}: give exactly one of epochs / steps (stage {s.name!r})")
        if s.epochs is not None and s.epochs <= 0:
            raise ConfigError(f"{p}.epochs: must be > 0, got {s.epochs}")
        if s.steps is not None and s.steps <= 0:
            raise ConfigError(f"{p}.steps: must be > 0, got {s.steps}")
        if s.lr <= 0:
            raise ConfigError(f"{p}.lr: must be > 0, got {s.lr}")
        if not 0 < s.lr_final_fraction <= 1:
            raise ConfigError(f"{p}.lr_final_fraction: must be in (0, 1], got {s.lr_final_fraction}")
        if s.update_epochs < 1:
            raise ConfigError(f"{p}.update_epochs: must be >= 1, got {s.update_epochs}")
        try:
            from smart_r1.objectives import get_objective

            get_objective(s.objective, **s.params)
        except (TypeError, ValueError, KeyError) as err:
            raise ConfigError(f"{p}.params: {err}") from None
    if not cfg.tracking.system_metrics_interval > 0:
        raise ConfigError(f"{where}tracking.system_metrics_interval: must be > 0, got {cfg.tracking.system_metrics_interval}")
    if cfg.eval.every_n_steps < 0:
        raise ConfigError(f"{where}eval.every_n_steps: must be >= 0, got {cfg.eval.every_n_steps}")
    if cfg.eval.during_stage_n_scenes < 0 or cfg.eval.render_scenes < 0:
        raise ConfigError(f"{where}eval: during_stage_n_scenes and render_scenes must be >= 0")
    if cfg.learner.max_tokens_per_microbatch < 18:
        raise ConfigError(f"{where}learner.max_tokens_per_microbatch: must be >= 18 (one agent), "
                          f"got {cfg.learner.max_tokens_per_microbatch}")
    if cfg.learner.autocast not in ("none", "bf16"):
        raise ConfigError(f"{where}learner.autocast: expected none | bf16 (no fp16: it needs loss scaling), got {cfg.learner.autocast!r}")
    if cfg.learner.reference_on not in REFERENCE_ON:
        raise ConfigError(f"{where}learner.reference_on: expected {' | '.join(REFERENCE_ON)}, got {cfg.learner.reference_on!r}")
    if not (cfg.device in ("cpu", "cuda", "auto") or cfg.device.startswith("cuda:")):
        raise ConfigError(f"{where}device: expected cpu | cuda | cuda:N | auto, got {cfg.device!r}")
    d = cfg.data
    if d.synthetic is None and not d.glob:
        raise ConfigError(f"{where}data: give data.synthetic or data.glob")
    if d.synthetic is not None:
        from smart_r1.data.synth.config import PROFILES

        if d.synthetic.profile not in PROFILES:
            raise ConfigError(f"{where}data.synthetic.profile: {d.synthetic.profile!r} is not one of {sorted(PROFILES)}")
    if d.batch_size < 1:
        raise ConfigError(f"{where}data.batch_size: must be >= 1, got {d.batch_size}")
    from smart_r1.train.config_checks import check_config

    check_config(cfg, where)  # registry names, sizes, rates (allowed values listed)
    return cfg


# ----------------------------------------------------------------------------------------------
# YAML loading, includes and --set overrides
# ----------------------------------------------------------------------------------------------


def _merge(base: Any, over: Any) -> Any:
    if isinstance(base, dict) and isinstance(over, dict):
        out = dict(base)
        for k, v in over.items():
            if isinstance(k, str) and k.endswith("!"):  # `params!: {...}` replaces instead of merging
                out[k[:-1]] = copy.deepcopy(v)
            else:
                out[k] = _merge(base.get(k), v) if k in base else v
        return out
    if isinstance(base, list) and isinstance(over, dict) and all(isinstance(k, int) for k in over):
        out = list(base)
        for k, v in over.items():
            if not 0 <= k < len(out):
                raise ConfigError(f"list patch index {k} out of range (list has {len(out)} items)")
            out[k] = _merge(out[k], v)
        return out
    return copy.deepcopy(over)


def config_dirs() -> list[Path]:
    """Where config names are looked up: the checkout's `configs/` (the source of truth), then the
    copy shipped in the installed package (`smart_r1/configs/`, see pyproject.toml)."""
    pkg = Path(__file__).resolve().parents[1]  # .../smart_r1
    return [d for d in (pkg.parent / "configs", pkg / "configs") if d.is_dir()]


def config_names() -> list[str]:
    names: set[str] = set()
    for d in config_dirs():
        names.update(str(p.relative_to(d).with_suffix("")) for p in d.rglob("*.yaml"))
    return sorted(names)


def resolve_config_path(spec: str | Path) -> Path:
    """A config file path as given when it exists, else a config name (`cpu_demo`,
    `ablations/beta_sweep`, `cpu_demo.yaml`, `configs/cpu_demo.yaml`) looked up in `config_dirs()`."""
    path = Path(spec)
    if path.exists():
        return path
    if path.is_absolute():
        raise ConfigError(f"config file {str(spec)!r} not found")
    name = path.as_posix()
    if name.startswith("configs/"):
        name = name[len("configs/"):]
    if not name.endswith((".yaml", ".yml")):
        name += ".yaml"
    for d in config_dirs():
        if (d / name).is_file():
            return d / name
    raise ConfigError(f"config {str(spec)!r} not found: no such file (relative to {Path.cwd()}) and no config of that "
                      f"name; known names: {', '.join(config_names()) or '(none shipped)'}")


def load_yaml(path: str | Path) -> dict:
    path = resolve_config_path(path)
    try:
        raw = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"config file {str(path)!r} not found") from None
    except yaml.YAMLError as err:
        raise ConfigError(f"{path}: invalid YAML: {err}") from None
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: top level must be a mapping, got {type(raw).__name__}")
    inc = raw.pop("include", None)
    if inc:
        base = load_yaml((path.parent / inc) if not Path(inc).is_absolute() else Path(inc))
        raw = _merge(base, raw)
    return raw


def parse_value(text: str) -> Any:
    """`--set` value: YAML scalar / flow syntax (`0.4`, `true`, `[a, b]`, `{k: 1}`, `null`)."""
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError:
        return text


def apply_overrides(raw: dict, overrides: list[str] | None) -> dict:
    """Apply `key.sub.2.x=value` overrides to a raw config mapping (stage names also work as keys
    under `stages`: `stages.rft.params.beta=0.4`)."""
    raw = copy.deepcopy(raw)
    for item in overrides or []:
        if "=" not in item:
            raise ConfigError(f"--set {item!r}: expected key=value")
        key, text = item.split("=", 1)
        parts = key.strip().split(".")
        node: Any = raw
        for depth, part in enumerate(parts):
            last = depth == len(parts) - 1
            where = ".".join(parts[: depth + 1])
            if isinstance(node, list):
                idx = None
                if part.lstrip("-").isdigit():
                    idx = int(part)
                else:
                    for i, item_ in enumerate(node):
                        if isinstance(item_, dict) and item_.get("name") == part:
                            idx = i
                if idx is None or not -len(node) <= idx < len(node):
                    raise ConfigError(f"--set {key}: {where}: no list item {part!r}")
                if last:
                    node[idx] = parse_value(text)
                else:
                    if node[idx] is None:
                        node[idx] = {}
                    node = node[idx]
            elif isinstance(node, dict):
                if last:
                    node[part] = parse_value(text)
                else:
                    if node.get(part) is None:
                        node[part] = {}
                    node = node[part]
            else:
                raise ConfigError(f"--set {key}: {where}: cannot index into {type(node).__name__}")
    return raw


def config_from_dict(raw: dict, source: str = "<dict>") -> TrainConfig:
    where = f"{source}: " if source else ""
    try:
        cfg = _build(TrainConfig, raw, "")
    except ConfigError as err:
        raise ConfigError(f"{where}{err}") from None
    return _validate(cfg, where)


def load_config(path: str | Path, overrides: list[str] | None = None) -> TrainConfig:
    raw = apply_overrides(load_yaml(path), overrides)
    return config_from_dict(raw, str(path))


def resolved_dict(cfg: TrainConfig) -> dict:
    """The fully resolved config as plain YAML-able data (saved in checkpoints and runs)."""
    return cfg.to_dict()
