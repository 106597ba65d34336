"""Cheap live checks of the official backend on a cut-down copy of the real scene (6 sim agents,
map cropped to 10 m around the agents' logged paths, 4 rollouts — the official metric code
accepts fewer than 32 rollouts; only the submission rule demands 32). One worker serves two
scenes; an in-process run (in a child interpreter, so TF stays out of pytest) gives the same
numbers. Results are pinned in tests/fixtures/metrics/official_small_scene.json
(regenerate with SMART_R1_WRITE_FIXTURES=1)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from smart_r1.metrics.base import LIKELIHOOD_FIELDS
from smart_r1.metrics.official import cut_down_scenario
from smart_r1.metrics.submission import iter_scenario_protos, read_submission
from smart_r1.sim.rollouts import Rollouts

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "metrics" / "official_small_scene.json"
SID = "637f20cafde22ff8"
CUT = dict(n_extra_agents=2, map_radius_m=10.0)
N_ROLLOUT = 4
KEYS = ["metametric", *LIKELIHOOD_FIELDS, "min_average_displacement_error", "average_displacement_error"]
RATES = ["simulated_collision_rate", "simulated_offroad_rate", "simulated_traffic_light_violation_rate"]


def small_case(scenario_path, submission_path):
    """(small scenario proto, its first-4 submission rollouts, its log-replay rollouts)."""
    from waymo_open_dataset.utils.sim_agents import submission_specs

    (full,) = list(iter_scenario_protos([scenario_path]))
    small = cut_down_scenario(full, **CUT)
    ids = submission_specs.get_sim_agent_ids(small, submission_specs.ChallengeType.SIM_AGENTS)
    sub = read_submission(submission_path)[SID]
    idx = [int(np.flatnonzero(sub.agent_id == i)[0]) for i in ids]  # [n_sim]
    noisy = Rollouts(small.scenario_id, sub.agent_id[idx], sub.trajectories[:N_ROLLOUT, idx])
    by_id = {t.id: t for t in small.tracks}
    log = np.array(
        [[[s.center_x, s.center_y, s.center_z, s.heading] for s in by_id[i].states[11:91]] for i in ids], np.float32
    )  # [n_sim, 80, 4]
    replay = Rollouts(small.scenario_id, np.asarray(ids), np.repeat(log[None], N_ROLLOUT, axis=0))
    return small, noisy, replay


def test_cut_down_scenario_is_smaller_and_valid(real_scenario_path, real_submission_path):
    small, noisy, replay = small_case(real_scenario_path, real_submission_path)
    (full,) = list(iter_scenario_protos([real_scenario_path]))
    assert small.scenario_id == f"{SID}_small"
    assert len(small.tracks) == 6 and len(small.map_features) < len(full.map_features)
    assert sorted(noisy.agent_id.tolist()) == sorted(replay.agent_id.tolist())
    assert noisy.trajectories.shape == (N_ROLLOUT, 6, 80, 4)
    # Same tracks-to-predict / SDC ids as the full scene.
    ids = lambda s: sorted({s.tracks[s.sdc_track_index].id} | {s.tracks[t.track_index].id for t in s.tracks_to_predict})
    assert ids(small) == ids(full) == [1675, 1676, 2320, 2406]


@pytest.mark.official
@pytest.mark.timeout(300)
def test_official_small_scene_live(real_scenario_path, real_submission_path, official_backend):
    small, noisy, replay = small_case(real_scenario_path, real_submission_path)
    tf_loaded_before = "tensorflow" in sys.modules  # another test may have imported TF
    backend = official_backend
    s_noisy = backend.score(None, noisy, scenario_proto=small)
    pid = backend.worker_info()["pid"]
    s_replay = backend.score(None, replay, scenario_proto=small)
    assert backend.worker_info()["pid"] == pid, "the worker is reused across calls"
    assert tf_loaded_before or "tensorflow" not in sys.modules, "the backend loaded TensorFlow into the caller"
    # Log replay: zero displacement, collision/offroad likelihoods perfect for the log's own events.
    assert s_replay.min_average_displacement_error == 0.0 and s_replay.average_displacement_error == 0.0
    assert s_replay.metametric > s_noisy.metametric
    got = {"noisy": s_noisy.as_flat_dict(), "log_replay": s_replay.as_flat_dict()}
    if os.environ.get("SMART_R1_WRITE_FIXTURES") == "1":
        FIXTURE.write_text(
            json.dumps(
                {
                    "_about": "Official WOSAC 2025 metrics (smart_r1.metrics.official) of a cut-down copy of the real "
                    "scene: smart_r1.metrics.official.cut_down_scenario(scenario, **cut); rollouts: the first "
                    f"{N_ROLLOUT} rollouts of the shared submission for its sim agents ('noisy') and the logged "
                    "future repeated ('log_replay'). See tests/metrics/test_official_small.py:small_case.",
                    "cut": CUT,
                    "n_rollouts": N_ROLLOUT,
                    "results": got,
                },
                indent=2,
            )
            + "\n"
        )
    stored = json.loads(FIXTURE.read_text())["results"]
    for name in ("noisy", "log_replay"):
        for key in KEYS:
            assert got[name][key] == pytest.approx(stored[name][key], abs=1e-6), (name, key)
        for key in RATES:
            assert got[name][key] == stored[name][key], (name, key)


@pytest.mark.official
@pytest.mark.timeout(300)
def test_official_in_process_matches_worker(real_scenario_path, real_submission_path):
    """in_process=True (run in a child interpreter to keep TF out of pytest) = the worker's numbers."""
    code = (
        "import json, sys\n"
        "sys.path.insert(0, sys.argv[1])\n"
        "from test_official_small import small_case\n"
        "from smart_r1.metrics.official import OfficialBackend\n"
        "small, noisy, _ = small_case(sys.argv[2], sys.argv[3])\n"
        "s = OfficialBackend(n_rollouts=None, in_process=True).score(None, noisy, scenario_proto=small)\n"
        "assert 'tensorflow' in sys.modules\n"
        "print('RESULT' + json.dumps(s.as_flat_dict()))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code, str(Path(__file__).parent), str(real_scenario_path), str(real_submission_path)],
        capture_output=True,
        text=True,
        timeout=280,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    got = json.loads(out.stdout.split("RESULT", 1)[1])
    stored = json.loads(FIXTURE.read_text())["results"]["noisy"]
    for key in KEYS + RATES:
        assert got[key] == pytest.approx(stored[key], abs=1e-6), key


@pytest.mark.official
@pytest.mark.timeout(300)
def test_official_from_scene_matches_proto(real_scenario_path, real_submission_path, official_backend):
    """Scene in (Scenario rebuilt by smart_r1.data.convert.scene_to_scenario) = proto in."""
    from smart_r1.data.convert import scenario_to_scene

    small, noisy, _ = small_case(real_scenario_path, real_submission_path)
    scene = scenario_to_scene(small)
    got = official_backend.score(scene, noisy).as_flat_dict()
    stored = json.loads(FIXTURE.read_text())["results"]["noisy"]
    for key in KEYS + RATES:
        assert got[key] == pytest.approx(stored[key], abs=1e-6), key
