"""`smart-r1 model info`."""

import json

from smart_r1.cli import main


def test_model_info_json(capsys):
    assert main(["model", "info", "--preset", "tiny", "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert 6.3e6 <= info["parameters"] <= 7.7e6
    by = info["parameters_by_module"]
    assert by["total"] == info["parameters"] == sum(v for k, v in by.items() if k != "total")
    assert info["config"]["hidden_dim"] == 128 and info["config"]["num_agent_layers"] == 6


def test_model_info_text(capsys):
    assert main(["model", "info", "--preset", "cpu-demo"]) == 0
    out = capsys.readouterr().out
    assert "preset cpu-demo" in out and "parameters" in out
