"""`ModelConfig` and the named presets of the SMART next-token model.

The reference preset is `tiny` (SMART-tiny of the paper, ~7M parameters): hidden 128,
8 heads x 16, 3 map-encoder layers, 6 agent-decoder layers (each: causal temporal
self-attention + map-to-agent cross-attention + agent-to-agent attention), radii map-map 10 m,
map-agent 30 m, agent-agent 60 m, temporal span 30 steps (6 anchors), 64 Fourier frequency
bands, dropout 0.1, at most 300 neighbours per query. Parameter counts assume 2048 motion
tokens per agent type and a 1024-entry map-segment vocabulary (`REFERENCE_VOCAB_SIZES`).

How `tiny` lands on 7M: the counted pieces are 21 attention blocks (3 map + 6 x 3 agent) of
4 x 128^2 projections + a 128 -> `ffn_dim` -> 128 feed-forward each, 4 Fourier relative-pose
encoders, motion-token shape MLPs, the map-segment embedding table and one next-token head
(128 -> `head_hidden_dim` -> 2048) per vocabulary type. `ffn_dim` = 768 (6 x hidden) is the
knob that brings the total to ~7.0M (see `smart-r1 model info --preset tiny`).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Callable

# Motion tokens per vocabulary type (vehicle, pedestrian, cyclist) and map-segment vocabulary
# size of the reference recipe; used for parameter counts when no vocabulary is given.
REFERENCE_VOCAB_SIZES = (2048, 2048, 2048)
REFERENCE_MAP_VOCAB_SIZE = 1024


@dataclass
class ModelConfig:
    name: str = "tiny"
    hidden_dim: int = 128
    num_heads: int = 8
    head_dim: int = 16
    ffn_dim: int = 768  # feed-forward width of every attention block
    num_map_layers: int = 3
    num_agent_layers: int = 6  # each = temporal + map-to-agent + agent-to-agent block
    # Neighbourhoods (metres / steps) and caps on neighbours per query (nearest first).
    map_map_radius: float = 10.0
    map_agent_radius: float = 30.0
    agent_agent_radius: float = 60.0
    time_span: int = 30  # 10 Hz steps a temporal query looks back (30 steps = 6 anchors)
    max_map_map_neighbors: int = 300
    max_map_agent_neighbors: int = 300
    max_agent_agent_neighbors: int = 300
    num_freq_bands: int = 64  # Fourier bands per relative-pose input dimension
    dropout: float = 0.1
    token_embed_hidden: int = 128  # motion-token shape MLP hidden width
    head_hidden_dim: int = 128  # next-token head hidden width
    map_vocab_size: int = REFERENCE_MAP_VOCAB_SIZE  # default when the vocabulary has no map segments
    rel_chunk_edges: int = 1 << 16  # relative-pose encoder chunk (edges) when no gradient is needed

    @property
    def inner_dim(self) -> int:
        return self.num_heads * self.head_dim

    @property
    def time_span_anchors(self) -> int:
        """Earlier anchors a temporal query attends to (besides itself)."""
        return max(1, self.time_span // 5)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @staticmethod
    def from_dict(d: dict) -> "ModelConfig":
        known = {f.name for f in dataclasses.fields(ModelConfig)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ValueError(f"ModelConfig: unknown fields {unknown} (known: {sorted(known)})")
        return ModelConfig(**d)

    def replace(self, **changes) -> "ModelConfig":
        return dataclasses.replace(self, **changes)

    def validate(self) -> "ModelConfig":
        problems = []
        for f in ("hidden_dim", "num_heads", "head_dim", "ffn_dim", "num_agent_layers", "num_freq_bands"):
            if getattr(self, f) <= 0:
                problems.append(f"{f} must be > 0, got {getattr(self, f)}")
        if self.num_map_layers < 0:
            problems.append(f"num_map_layers must be >= 0, got {self.num_map_layers}")
        for f in ("map_map_radius", "map_agent_radius", "agent_agent_radius"):
            if getattr(self, f) <= 0:
                problems.append(f"{f} must be > 0, got {getattr(self, f)}")
        if not 0.0 <= self.dropout < 1.0:
            problems.append(f"dropout must be in [0, 1), got {self.dropout}")
        if problems:
            raise ValueError(f"ModelConfig {self.name!r}: " + "; ".join(problems))
        return self


_PRESETS: dict[str, Callable[[], ModelConfig]] = {}


def register_preset(name: str):
    def deco(fn: Callable[[], ModelConfig]):
        if name in _PRESETS:
            raise ValueError(f"model preset {name!r} registered twice")
        _PRESETS[name] = fn
        return fn

    return deco


def preset_names() -> list[str]:
    return sorted(_PRESETS)


def get_preset(name: str, **overrides) -> ModelConfig:
    if name not in _PRESETS:
        raise KeyError(f"unknown model preset {name!r}; known: {preset_names()}")
    cfg = _PRESETS[name]()
    return cfg.replace(**overrides).validate() if overrides else cfg.validate()


@register_preset("tiny")
def _tiny() -> ModelConfig:
    """SMART-tiny reference (~7.0M parameters with 3 x 2048 tokens + 1024 map segments)."""
    return ModelConfig(name="tiny")


@register_preset("small")
def _small() -> ModelConfig:
    """Wider / deeper than tiny (~17M parameters)."""
    return ModelConfig(name="small", hidden_dim=192, num_heads=12, head_dim=16, ffn_dim=1024,
                       num_map_layers=3, num_agent_layers=8, token_embed_hidden=192, head_hidden_dim=192)


@register_preset("mini")
def _mini() -> ModelConfig:
    """~3M parameters: hidden 96, 4 agent layers."""
    return ModelConfig(name="mini", hidden_dim=96, num_heads=6, head_dim=16, ffn_dim=576, num_map_layers=2,
                       num_agent_layers=4, num_freq_bands=32, token_embed_hidden=96, head_hidden_dim=96)


@register_preset("nano")
def _nano() -> ModelConfig:
    """~1M parameters: hidden 64, 2 agent layers, small heads."""
    return ModelConfig(name="nano", hidden_dim=64, num_heads=4, head_dim=16, ffn_dim=384, num_map_layers=1,
                       num_agent_layers=2, num_freq_bands=16, token_embed_hidden=64, head_hidden_dim=64,
                       max_map_map_neighbors=64, max_map_agent_neighbors=64, max_agent_agent_neighbors=64)


@register_preset("cpu-demo")
def _cpu_demo() -> ModelConfig:
    """Trains in minutes on 2 CPU cores (with a small demo vocabulary): hidden 32, 1 map layer,
    2 agent layers, 8 Fourier bands, at most 32 / 16 neighbours, no dropout."""
    return ModelConfig(name="cpu-demo", hidden_dim=32, num_heads=2, head_dim=16, ffn_dim=64, num_map_layers=1,
                       num_agent_layers=2, num_freq_bands=8, dropout=0.0, token_embed_hidden=32, head_hidden_dim=32,
                       max_map_map_neighbors=16, max_map_agent_neighbors=32, max_agent_agent_neighbors=16)
