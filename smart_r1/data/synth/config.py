"""`SynthConfig`: every knob of the synthetic WOMD generator (defaults give WOMD-like scenes)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field


@dataclass
class SynthConfig:
    """Configuration of `generate_scenario`.

    Agent counts are numbers of tracks per scene (vehicles + pedestrians + cyclists, the SDC
    included); the actual count is drawn uniformly in `[min_agents, max_agents]` and may end
    lower only when the road network cannot hold that many (never below `min_agents`).
    """

    min_agents: int = 8
    max_agents: int = 64
    # Layout name -> relative weight (names from `smart_r1.data.synth.layouts.LAYOUTS`).
    layout_weights: dict[str, float] = field(
        default_factory=lambda: {"straight": 1.0, "curved": 1.0, "intersection": 1.5, "t_junction": 1.5}
    )
    pedestrian_fraction: float = 0.15  # share of tracks that are pedestrians (when the layout has sidewalks)
    cyclist_fraction: float = 0.08  # share of tracks that are cyclists
    min_tracks_to_predict: int = 2
    max_tracks_to_predict: int = 8
    warmup_seconds: float = 3.0  # simulated before the first logged step (settles queues and gaps)
    ground_slope_max: float = 0.02  # |dz/dx|, |dz/dy| of the planar ground
    spawn_rate_per_lane_hz: float = 0.15  # new vehicles entering view per source lane per second
    scenario_id_prefix: str = "synth"

    def __post_init__(self) -> None:
        if not (1 <= self.min_agents <= self.max_agents):
            raise ValueError(f"SynthConfig: need 1 <= min_agents <= max_agents, got {self.min_agents}, {self.max_agents}")
        if self.max_agents > 512:
            raise ValueError(f"SynthConfig: max_agents={self.max_agents} > 512")
        if not self.layout_weights or any(w < 0 for w in self.layout_weights.values()) or sum(self.layout_weights.values()) <= 0:
            raise ValueError(f"SynthConfig: layout_weights must be non-negative with a positive sum: {self.layout_weights}")

    def replace(self, **changes) -> "SynthConfig":
        unknown = set(changes) - {f.name for f in dataclasses.fields(self)}
        if unknown:
            raise TypeError(f"SynthConfig: unknown option(s) {sorted(unknown)}")
        return dataclasses.replace(self, **changes)
