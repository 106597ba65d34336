"""Metric interface shared by every backend: `SceneScores`, the backend registry, and the
official 2024/2025 meta-metric weights.

A backend takes a `Scene` and `Rollouts` (the agents that must be simulated, 80 steps) and
returns `SceneScores` with the official field names. Backends register with
`@register_backend("name")` and are built by `get_backend(name, **kwargs)`.
"""

from __future__ import annotations

import abc
from dataclasses import asdict, dataclass, field
from typing import Callable, Sequence

import numpy as np

# Official sub-metric names, in the order of paper table 2 / the leaderboard.
LIKELIHOOD_FIELDS = (
    "linear_speed_likelihood",
    "linear_acceleration_likelihood",
    "angular_speed_likelihood",
    "angular_acceleration_likelihood",
    "distance_to_nearest_object_likelihood",
    "collision_indication_likelihood",
    "time_to_collision_likelihood",
    "distance_to_road_edge_likelihood",
    "offroad_indication_likelihood",
    "traffic_light_violation_likelihood",
)

GROUPS = {
    "kinematic_metrics": LIKELIHOOD_FIELDS[0:4],
    "interactive_metrics": LIKELIHOOD_FIELDS[4:7],
    "map_based_metrics": LIKELIHOOD_FIELDS[7:10],
}

# Meta-metric weights of the official challenge configs.
METRIC_WEIGHTS = {
    2025: dict(zip(LIKELIHOOD_FIELDS, (0.05, 0.05, 0.05, 0.05, 0.10, 0.25, 0.10, 0.05, 0.25, 0.05))),
    2024: dict(zip(LIKELIHOOD_FIELDS, (0.05, 0.05, 0.05, 0.05, 0.10, 0.25, 0.10, 0.10, 0.25, 0.00))),
}

RATE_FIELDS = ("simulated_collision_rate", "simulated_offroad_rate", "simulated_traffic_light_violation_rate")


@dataclass
class SceneScores:
    """WOSAC result for one scene (official `SimAgentMetrics` field names)."""

    scenario_id: str
    metametric: float
    likelihoods: dict[str, float]  # LIKELIHOOD_FIELDS -> value in [0, 1]
    min_average_displacement_error: float
    average_displacement_error: float
    simulated_collision_rate: float
    simulated_offroad_rate: float
    simulated_traffic_light_violation_rate: float
    config_year: int = 2025
    backend: str = ""
    # Optional per-rollout meta metric (the fast backend fills it; used for per-rollout rewards).
    per_rollout_metametric: np.ndarray | None = field(default=None, repr=False)  # [n_rollout]

    def groups(self) -> dict[str, float]:
        """Weighted mean of each group's sub-metrics (the official bucketed output)."""
        weights = METRIC_WEIGHTS[self.config_year]
        out = {}
        for group, names in GROUPS.items():
            total = sum(weights[n] for n in names)
            out[group] = float(sum(weights[n] * self.likelihoods[n] for n in names) / total) if total > 0 else float("nan")
        return out

    def as_flat_dict(self) -> dict[str, float | str | int]:
        flat: dict[str, float | str | int] = {"scenario_id": self.scenario_id, "metametric": self.metametric}
        flat.update(self.likelihoods)
        flat.update(self.groups())
        flat["min_average_displacement_error"] = self.min_average_displacement_error
        flat["average_displacement_error"] = self.average_displacement_error
        for name in RATE_FIELDS:
            flat[name] = getattr(self, name)
        flat["config_year"] = self.config_year
        flat["backend"] = self.backend
        return flat


def meta_metric(likelihoods: dict[str, float], config_year: int = 2025) -> float:
    """Plain weighted sum of the sub-metric likelihoods (official)."""
    weights = METRIC_WEIGHTS[config_year]
    return float(sum(weights[n] * likelihoods[n] for n in LIKELIHOOD_FIELDS))


def aggregate(scores: Sequence[SceneScores]) -> dict[str, float]:
    """Dataset-level result: unweighted mean over scenes of every scalar (official aggregation)."""
    if not scores:
        raise ValueError("aggregate: no scene scores")
    rows = [s.as_flat_dict() for s in scores]
    keys = [k for k, v in rows[0].items() if isinstance(v, float) or (isinstance(v, (int, np.floating)) and k != "config_year")]
    return {k: float(np.mean([r[k] for r in rows])) for k in keys}


class MetricBackend(abc.ABC):
    """Scores rollouts of scenes. Implementations: `fast` (torch), `official` (waymo_open_dataset)."""

    name: str = ""

    def __init__(self, config_year: int = 2025):
        if config_year not in METRIC_WEIGHTS:
            raise ValueError(f"unknown WOSAC config year {config_year}; known: {sorted(METRIC_WEIGHTS)}")
        self.config_year = config_year

    @abc.abstractmethod
    def score(self, scene, rollouts) -> SceneScores:
        """Score one scene (`smart_r1.data.scene.Scene`, `smart_r1.sim.rollouts.Rollouts`)."""

    def score_many(self, scenes, rollouts_list) -> list[SceneScores]:
        return [self.score(s, r) for s, r in zip(scenes, rollouts_list)]


_BACKENDS: dict[str, Callable[..., MetricBackend]] = {}
# Built-in backends: `smart_r1.metrics.<name>` registers backend <name> when imported (lazily, so
# TensorFlow loads only for `official`).
BUILTIN_BACKENDS = ("fast", "official")


def backend_names() -> list[str]:
    """Every backend name `get_backend` accepts (built-in and registered), without importing any."""
    return sorted(set(BUILTIN_BACKENDS) | set(_BACKENDS))


def register_backend(name: str):
    def deco(factory):
        _BACKENDS[name] = factory
        factory.name = name
        return factory

    return deco


def get_backend(name: str, **kwargs) -> MetricBackend:
    if name not in _BACKENDS and name in BUILTIN_BACKENDS:
        # Backends register on import; import lazily so TensorFlow loads only for `official`.
        import importlib

        importlib.import_module(f"smart_r1.metrics.{name}")
    if name not in _BACKENDS:
        raise KeyError(f"unknown metric backend {name!r}; known: {backend_names()}")
    return _BACKENDS[name](**kwargs)
