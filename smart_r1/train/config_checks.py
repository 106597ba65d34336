"""Load-time checks of a training config: names against their registries, sizes and rates.

`check_config(cfg, where)` runs at the end of `smart_r1.train.config` validation, so a typo in a
preset / sampler / objective / metric backend / reward mode name, a non-positive size (e.g.
`vocab.size: -5`) or a non-positive learning rate is a `ConfigError` when the config is loaded
(`--print-config` included), naming the field and listing the allowed values (taken from the
registries), before any data, vocabulary or cache is built.
"""

from __future__ import annotations

import math
from typing import Any

from smart_r1.errors import ConfigError


def _name_in(value: Any, allowed: list[str], field: str, what: str) -> None:
    if value not in allowed:
        raise ConfigError(f"{field}: unknown {what} {value!r}; allowed: {sorted(allowed)}")


def _positive(value: Any, field: str, allow_zero: bool = False) -> None:
    ok = value is not None and isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    ok = ok and (value >= 0 if allow_zero else value > 0)
    if not ok:
        raise ConfigError(f"{field}: must be {'>= 0' if allow_zero else '> 0'}, got {value!r}")


def check_vocab(vocab: dict, where: str) -> None:
    """`vocab:` overrides: known fields (VocabConfig, MapConfig) and positive sizes."""
    from smart_r1.tokens.map_tokens import MapConfig
    from smart_r1.tokens.motion_vocab import VocabConfig

    try:
        vc = VocabConfig.from_dict(dict(vocab))
        mc = MapConfig.from_dict(dict(vc.map))
    except (TypeError, ValueError) as err:
        raise ConfigError(f"{where}vocab: {err}") from None
    for name in ("size", "samples", "tolerance", "max_tolerance_steps", "window_stride"):
        _positive(getattr(vc, name), f"{where}vocab.{name}")
    for name in ("min_samples", "min_tolerance", "synthetic_fraction"):
        _positive(getattr(vc, name), f"{where}vocab.{name}", allow_zero=True)
    for name, value in vars(mc).items():
        if isinstance(value, int) and not isinstance(value, bool) and name.endswith(("size", "samples", "points")):
            _positive(value, f"{where}vocab.map.{name}")


def check_config(cfg, where: str = "") -> None:
    """Raise `ConfigError` for the first unknown name or out-of-range size / rate of `cfg`."""
    from smart_r1.metrics.base import backend_names
    from smart_r1.model.presets import get_preset, preset_names
    from smart_r1.objectives.base import list_reward_modes
    from smart_r1.sim.samplers import get_sampler, sampler_names

    # model
    _name_in(cfg.model.preset, preset_names(), f"{where}model.preset", "model preset")
    try:
        get_preset(cfg.model.preset, **dict(cfg.model.overrides))
    except (TypeError, ValueError) as err:
        raise ConfigError(f"{where}model.overrides: {err}") from None
    # data
    d = cfg.data
    _positive(d.batch_size, f"{where}data.batch_size")
    _positive(d.max_train_agents, f"{where}data.max_train_agents")
    _positive(d.train_radius_m, f"{where}data.train_radius_m")
    if d.synthetic is not None and not d.glob:
        _positive(d.synthetic.n_scenes, f"{where}data.synthetic.n_scenes")
        _positive(d.synthetic.n_val_scenes, f"{where}data.synthetic.n_val_scenes", allow_zero=True)
    check_vocab(cfg.vocab, where)
    # evaluation
    e = cfg.eval
    _name_in(e.sampler, sampler_names(), f"{where}eval.sampler", "sampler")
    try:
        get_sampler(e.sampler, **dict(e.sampler_params))
    except (TypeError, ValueError) as err:
        raise ConfigError(f"{where}eval.sampler_params: {err}") from None
    _name_in(e.backend, backend_names(), f"{where}eval.backend", "metric backend")
    _positive(e.n_rollout, f"{where}eval.n_rollout")
    _positive(e.batch_size, f"{where}eval.batch_size")
    _positive(e.n_scenes, f"{where}eval.n_scenes", allow_zero=True)
    # stages (the objective names and their parameters are checked by config._validate)
    for i, s in enumerate(cfg.stages):
        p = f"{where}stages[{i}]"
        _positive(s.lr, f"{p}.lr")
        if s.batch_size is not None:
            _positive(s.batch_size, f"{p}.batch_size")
        _positive(s.warmup_steps, f"{p}.warmup_steps", allow_zero=True)
        _positive(s.weight_decay, f"{p}.weight_decay", allow_zero=True)
        _positive(s.grad_clip, f"{p}.grad_clip")
        params = s.params
        if "sampler" in params:
            _name_in(params["sampler"], sampler_names(), f"{p}.params.sampler", "sampler")
        if "backend" in params:
            _name_in(params["backend"], backend_names(), f"{p}.params.backend", "metric backend")
        if "reward" in params:
            _name_in(params["reward"], list_reward_modes(), f"{p}.params.reward", "reward mode")
        if "n_rollout" in params:
            _positive(params["n_rollout"], f"{p}.params.n_rollout")
