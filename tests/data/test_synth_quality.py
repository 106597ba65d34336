"""Clean logged behaviour of synthetic scenes, measured with the project's fast WOSAC code.

`smart_r1.data.synth.quality.log_events` scores each logged scene as its own rollout with
`smart_r1.metrics.get_backend("fast")` (official 2025 features: collision between boxes
shrunk as the official code does, offroad from box corners vs road edges, red-light crossings
of the stop point), with every agent valid at the current step evaluated -- far more than the
official SDC + tracks to predict. Offroad and red light are checked on vehicles and cyclists
(pedestrians walk on sidewalks, outside the road edges, by design).
"""

from __future__ import annotations

import numpy as np
import pytest

from smart_r1.data.scene import AgentType
from smart_r1.data.synth import SynthConfig, generate_scenario
from smart_r1.data.synth.quality import log_events

N_SCENES = 10
WOMD_LAYOUTS = ("grid", "roundabout", "on_ramp", None)  # None: the womd profile's own layout draw


@pytest.fixture(scope="module")
def events():
    from smart_r1.metrics.base import get_backend

    backend = get_backend("fast", device="cpu", per_rollout=False)
    cfg = SynthConfig(max_agents=40)
    per = [log_events(generate_scenario(21, i, cfg), backend) for i in range(N_SCENES)]
    return {k: np.concatenate([p[k] for p in per]) for k in per[0]}


@pytest.fixture(scope="module")
def womd_events():
    """One womd-profile scene per new layout family and one of the profile's own draw (styles,
    gap jitter, tracking noise, validity gaps all on)."""
    from smart_r1.metrics.base import get_backend

    backend = get_backend("fast", device="cpu", per_rollout=False)
    per = []
    for i, layout in enumerate(WOMD_LAYOUTS):
        cfg = SynthConfig.from_profile("womd", **({"layout_weights": {layout: 1.0}} if layout else {}))
        per.append(log_events(generate_scenario(21, i, cfg), backend))
    return {k: np.concatenate([p[k] for p in per]) for k in per[0]}


@pytest.fixture(params=["small", "womd"])
def any_events(request, events, womd_events):
    return events if request.param == "small" else womd_events


def test_logged_vehicles_and_cyclists_are_clean(any_events):
    events = any_events
    road = np.isin(events["agent_type"], [int(AgentType.VEHICLE), int(AgentType.CYCLIST)])
    assert road.sum() >= 100
    assert events["collision"][road].mean() < 0.01
    assert events["offroad"][road].mean() < 0.01
    assert events["red_light"][road].mean() <= 0.005


def test_logged_official_eval_set_is_clean(any_events):
    events = any_events
    ev = events["official_eval"]
    assert ev.sum() >= 10
    assert not events["collision"][ev].any() or events["collision"][ev].mean() < 0.01
    road = ev & np.isin(events["agent_type"], [int(AgentType.VEHICLE), int(AgentType.CYCLIST)])  # womd also predicts walkers (on sidewalks)
    assert events["offroad"][road].mean() < 0.01 and events["red_light"][road].mean() <= 0.005


def test_no_collisions_among_all_agents(any_events):
    events = any_events
    assert events["collision"].mean() < 0.01
