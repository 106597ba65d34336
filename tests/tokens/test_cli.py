import json

import pytest

from smart_r1.cli import main


def test_build_vocab_and_report(tmp_path, real_scenario_path, capsys):
    out = tmp_path / "vocab"
    rc = main(
        ["tokens", "build-vocab", "--scenes", str(real_scenario_path), "--out", str(out), "--size", "64", "--samples", "2000",
         "--min-samples", "1000", "--map-size", "32", "--seed", "3"]
    )
    assert rc == 0
    meta = json.loads((out / "vocab.json").read_text())
    assert meta["sizes"] == {"vehicle": 64, "pedestrian": 64, "cyclist": 64}
    assert meta["config"]["seed"] == 3 and meta["n_scenes"] == 1
    capsys.readouterr()
    assert main(["tokens", "report", "--vocab", str(out), "--scenes", str(real_scenario_path), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["vocab_id"] == meta["vocab_id"]
    assert report["errors"]["vehicle"]["n_tokens"] > 500
    assert 0 < report["errors"]["vehicle"]["corner_anchor_mean"] < 0.5
    assert main(["tokens", "report", "--vocab", str(out), "--scenes", str(real_scenario_path)]) == 0
    assert "vehicle" in capsys.readouterr().out
