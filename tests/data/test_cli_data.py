"""`smart-r1 data inspect / preprocess / synth` argument handling and exit codes."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path


sys.path.insert(0, str(Path(__file__).parent))
from womd_helpers import REAL_SCENARIO_FILE, REAL_SCENARIO_ID, REPO, scenario_copies, tiny_scene  # noqa: E402

from smart_r1.cli import build_parser, main  # noqa: E402
from smart_r1.data.cache import SceneCache  # noqa: E402
from smart_r1.data.convert import scene_to_scenario  # noqa: E402
from smart_r1.data.tfrecord import write_records  # noqa: E402


def test_inspect_real_file_json(capsys):
    assert main(["data", "inspect", str(REAL_SCENARIO_FILE), "--json"]) == 0
    lines = [json.loads(x) for x in capsys.readouterr().out.strip().splitlines()]
    scene, totals = lines[0], lines[-1]["totals"]
    assert scene["scenario_id"] == REAL_SCENARIO_ID and scene["n_tracks"] == 83
    assert scene["tracks_by_type"] == {"vehicle": 70, "pedestrian": 10, "cyclist": 3}
    assert scene["n_map_features"] == 301 and scene["n_dynamic_map_states"] == 91
    assert scene["n_tracks_to_predict"] == 3 and scene["n_sim_agents"] == scene["n_valid_at_current"] == 50
    assert scene["map_features_by_kind"]["lane"] == 199 and scene["n_lane_states"] > 0
    assert scene["problems"] == [] and totals["scenes"] == 1 and totals["skipped"] == 0


def test_inspect_text(capsys):
    assert main(["data", "inspect", str(REAL_SCENARIO_FILE)]) == 0
    out = capsys.readouterr().out
    assert f"scene {REAL_SCENARIO_ID}" in out and "vehicle 70, pedestrian 10, cyclist 3" in out
    assert "map features: 301" in out and "dynamic map states: 91" in out and "agents to simulate: 50" in out


def test_inspect_corrupt_file_exit_codes(tmp_path, capsys):
    p = tmp_path / "bad.tfrecord"
    recs = scenario_copies(3)
    write_records(p, recs)
    raw = bytearray(p.read_bytes())
    raw[16 + len(recs[0]) + 12 + 77] ^= 0x01  # record 1's data
    p.write_bytes(bytes(raw))
    assert main(["data", "inspect", str(p)]) == 2
    err = capsys.readouterr().err
    assert "TFRecordCorruptError" in err and str(p) in err and "record 1" in err and "data CRC mismatch" in err
    assert main(["data", "inspect", str(p), "--skip-corrupt"]) == 0
    out = capsys.readouterr().out
    assert "skipped 1 corrupt records" in out and "2 scenes" in out
    assert main(["data", "inspect", str(tmp_path / "*.nothing")]) == 2


def test_inspect_reports_validation_problems(tmp_path, capsys):
    nan = tiny_scene(scenario_id="nanpose")
    nan.agent_states[0, 5, 1] = float("nan")
    nomap = tiny_scene(with_map=False, scenario_id="nomap")
    p = tmp_path / "v.tfrecord"
    write_records(p, [scene_to_scenario(s).SerializeToString() for s in (nomap, nan)])
    assert main(["data", "inspect", str(p), "--json"]) == 1
    lines = [json.loads(x) for x in capsys.readouterr().out.strip().splitlines()]
    assert "no map features" in lines[0]["problems"][0] and "(allowed)" in lines[0]["problems"][0]
    assert "NaN/inf pose" in lines[1]["problems"][0]
    assert lines[2]["totals"]["scenes_with_problems"] == 1


def test_parser_has_data_subcommands():
    parser = build_parser()
    args = parser.parse_args(["data", "synth", "--out", "x", "--num-scenes", "4", "--seed", "3", "--shards", "2",
                              "--min-agents", "8", "--max-agents", "16"])
    assert (args.num_scenes, args.seed, args.shards, args.min_agents, args.max_agents) == (4, 3, 2, 8, 16)
    args = parser.parse_args(["data", "preprocess", "--input", "a/*.tfrecord", "--out", "c", "--num-workers", "2",
                              "--skip-corrupt", "--address", "auto"])
    assert (args.input, args.out, args.num_workers, args.skip_corrupt, args.address) == ("a/*.tfrecord", "c", 2, True, "auto")


def test_preprocess_command_in_process(tmp_path, capsys):
    write_records(tmp_path / "in" / "a.tfrecord", scenario_copies(2))
    code = main(["data", "preprocess", "--input", str(tmp_path / "in" / "*.tfrecord"), "--out", str(tmp_path / "c"),
                 "--num-workers", "0"])
    assert code == 0 and "2 scenes in 1/1 shards" in capsys.readouterr().out
    assert len(SceneCache(tmp_path / "c")) == 2
    assert main(["data", "preprocess", "--input", str(tmp_path / "none*"), "--out", str(tmp_path / "c")]) == 2


def test_console_script_exit_codes(tmp_path):
    """The installed entry point, as a user runs it."""
    script = Path(sys.executable).parent / "smart-r1"
    exe = [str(script)] if script.exists() else [sys.executable, "-c", "import sys; from smart_r1.cli import main; sys.exit(main())"]
    ok = subprocess.run([*exe, "data", "inspect", str(REAL_SCENARIO_FILE)], capture_output=True, text=True, cwd=REPO)
    assert ok.returncode == 0, ok.stderr
    assert REAL_SCENARIO_ID in ok.stdout
    bad = tmp_path / "trunc.tfrecord"
    bad.write_bytes(REAL_SCENARIO_FILE.read_bytes()[:-50])
    res = subprocess.run([*exe, "data", "inspect", str(bad)], capture_output=True, text=True, cwd=REPO)
    assert res.returncode == 2 and "truncated data" in res.stderr and "record 0 at byte offset 0" in res.stderr
