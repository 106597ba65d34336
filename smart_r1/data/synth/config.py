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
    # ----- WOMD-profile realism (all off by default: the `small` profile is the scenes of issue 2) -----
    profile: str = "small"  # name of the preset this config came from (recorded in the generator state)
    ttp_selection: str = "random"  # "random": moving vehicles first; "near_sdc": moving agents of any type, nearest the SDC first
    driver_styles: bool = False  # per-agent aggressive / normal / cautious IDM and gap-acceptance parameters
    gap_jitter: float = 0.0  # relative jitter of the accepted gap, redrawn at every junction decision
    tracking_noise_m: float = 0.0  # std of the smooth position noise on logged boxes (m); heading noise follows
    validity_gap_fraction: float = 0.0  # share of non-SDC tracks with a short run of invalid steps (occlusion)
    lane_change_rate: float = 0.0  # discretionary lane changes per second per vehicle (normal style; x3 when held up)
    pull_out_fraction: float = 0.0  # share of parked vehicles that pull out into their lane during the scene (needs lane changes)
    jaywalk_fraction: float = 0.0  # share of walkers (where the road allows) that cross outside a crosswalk, after a gap
    parked_fraction: tuple[float, float] = (0.1, 0.35)  # share of tracks parked when the road has parking strips

    def __post_init__(self) -> None:
        if not (1 <= self.min_agents <= self.max_agents):
            raise ValueError(f"SynthConfig: need 1 <= min_agents <= max_agents, got {self.min_agents}, {self.max_agents}")
        if self.ttp_selection not in ("random", "near_sdc"):
            raise ValueError(f"SynthConfig: ttp_selection must be 'random' or 'near_sdc', got {self.ttp_selection!r}")
        if self.max_agents > 512:
            raise ValueError(f"SynthConfig: max_agents={self.max_agents} > 512")
        if not self.layout_weights or any(w < 0 for w in self.layout_weights.values()) or sum(self.layout_weights.values()) <= 0:
            raise ValueError(f"SynthConfig: layout_weights must be non-negative with a positive sum: {self.layout_weights}")

    @classmethod
    def from_profile(cls, profile: str = "small", **overrides) -> "SynthConfig":
        """The preset `profile` ("small" or "womd", see `PROFILES`) with `overrides` applied."""
        if profile not in PROFILES:
            raise KeyError(f"unknown synthetic profile {profile!r}; known: {sorted(PROFILES)}")
        return cls().replace(profile=profile, **{**PROFILES[profile], **overrides})

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["parked_fraction"] = list(d["parked_fraction"])
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "SynthConfig":
        d = dict(d)
        if "parked_fraction" in d:
            d["parked_fraction"] = tuple(d["parked_fraction"])
        return cls().replace(**d)

    def replace(self, **changes) -> "SynthConfig":
        unknown = set(changes) - {f.name for f in dataclasses.fields(self)}
        if unknown:
            raise TypeError(f"SynthConfig: unknown option(s) {sorted(unknown)}")
        return dataclasses.replace(self, **changes)


# Presets. `small`: the issue-2 scenes (defaults above; byte-identical output for the same seed).
# `womd`: WOMD's shape -- dense scenes (median >= 40 tracks, up to 128+), >= 6 tracks to predict
# chosen near the SDC among moving agents, every layout family, per-agent driving style,
# tracking noise on the logged boxes, short validity gaps.
PROFILES: dict[str, dict] = {
    "small": {},
    "womd": dict(
        min_agents=32,
        max_agents=136,
        layout_weights={
            "straight": 0.7, "curved": 0.6, "intersection": 1.3, "t_junction": 1.0,
            "grid": 1.3, "roundabout": 0.7, "on_ramp": 0.8,
        },
        pedestrian_fraction=0.18,
        cyclist_fraction=0.06,
        min_tracks_to_predict=6,
        max_tracks_to_predict=8,
        spawn_rate_per_lane_hz=0.2,
        scenario_id_prefix="synthwomd",
        ttp_selection="near_sdc",
        driver_styles=True,
        gap_jitter=0.25,
        tracking_noise_m=0.04,
        validity_gap_fraction=0.08,
        jaywalk_fraction=0.15,
        lane_change_rate=0.04,
        pull_out_fraction=0.12,
        parked_fraction=(0.15, 0.4),
    ),
}
