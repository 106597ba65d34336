"""Install-anywhere checks: configs named by name from any directory, flattened params, and the
official scorer's install message."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from smart_r1.tracking import flatten
from smart_r1.train.config import ConfigError, config_names, load_config, resolve_config_path

REPO = Path(__file__).resolve().parents[2]


def test_config_by_name_from_another_directory(tmp_path):
    """`smart-r1 train --config cpu_demo --print-config` in an empty directory."""
    env = dict(os.environ, PYTHONPATH=str(REPO))
    out = subprocess.run([sys.executable, "-c", "import sys; from smart_r1.cli import main; sys.exit(main())",
                          "train", "--config", "cpu_demo", "--print-config", "--set", "stages.rft.params.beta=0.5"],
                         cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    cfg = json.loads(out.stdout)
    assert cfg["tracking"]["experiment"] == "smart-r1-demo" and cfg["stages"][2]["params"]["beta"] == 0.5
    assert list(tmp_path.iterdir()) == []  # printing the config writes nothing


def test_config_names_paths_and_includes(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert {"cpu_demo", "tiny_test", "ablations/rft_grpo"} <= set(config_names())
    assert resolve_config_path("cpu_demo") == resolve_config_path("configs/cpu_demo.yaml")
    grpo = load_config("ablations/rft_grpo")  # `include: ../cpu_demo.yaml`, resolved next to the file
    assert grpo.stages[2].objective == "grpo" and grpo.stages[0].name == "bc"
    (tmp_path / "mine.yaml").write_text("include: " + str(resolve_config_path("tiny_test")) + "\nseed: 7\n")
    assert load_config("mine.yaml").seed == 7  # a path still works
    with pytest.raises(ConfigError, match=r"'nope' not found.*known names: .*cpu_demo"):
        load_config("nope")


def test_flatten_keeps_every_value_with_list_indices():
    flat = flatten({"stages": [{"name": "bc", "params": {"beta": 0.04}, "freeze": []}], "eval": {"k": None}})
    assert flat == {"stages.0.name": "bc", "stages.0.params.beta": 0.04, "stages.0.freeze": [], "eval.k": None}


def test_official_scorer_missing_names_both_wheels_and_the_command(monkeypatch):
    import importlib.util

    from smart_r1.metrics import official

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "waymo_open_dataset" else real(name, *a))
    with pytest.raises(ModuleNotFoundError) as err:
        official.load_config(2025)
    msg = str(err.value)
    assert type(err.value).__name__ == "OfficialScorerMissing"
    assert "pip install --no-deps tf-keras==2.21.0 waymo-open-dataset-tf-2-12-0==1.6.7" in msg
    assert "smart-r1[official]" in msg and "waymo_open_dataset" in msg


def test_missing_womd_protos_names_the_wheel_and_the_command(monkeypatch):
    from smart_r1.data import convert

    monkeypatch.setitem(sys.modules, "waymo_open_dataset.protos", None)  # as if the --no-deps wheel were absent
    with pytest.raises(ModuleNotFoundError) as err:
        convert._scenario_pb2()
    assert type(err.value).__name__ == "WomdProtosMissing"
    assert "pip install --no-deps tf-keras==2.21.0 waymo-open-dataset-tf-2-12-0==1.6.7" in str(err.value)
