"""Config parsing: every error names the file and the field."""

from __future__ import annotations

from pathlib import Path

import pytest

from smart_r1.train.config import ConfigError, apply_overrides, config_from_dict, load_config

ROOT = Path(__file__).resolve().parents[2]


def _base():
    return {"stages": [{"name": "bc", "objective": "bc", "steps": 2}]}


@pytest.mark.parametrize("name", ["tiny_test.yaml", "cpu_demo.yaml", "sft_rft_sft.yaml", "paper_gpu.yaml"])
def test_shipped_configs_parse(name):
    cfg = load_config(ROOT / "configs" / name)
    assert cfg.stages and all(s.objective in {"bc", "catk", "mpo", "grpo", "dpo", "ppo"} for s in cfg.stages)


def test_ablation_configs_parse():
    files = sorted((ROOT / "configs" / "ablations").glob("*.yaml"))
    assert files
    for f in files:
        load_config(f)


def test_paper_recipe_values():
    cfg = load_config(ROOT / "configs" / "sft_rft_sft.yaml")
    assert [s.objective for s in cfg.stages] == ["bc", "catk", "mpo", "catk"]
    assert [s.epochs for s in cfg.stages] == [64, 16, 1, 16]
    assert cfg.stages[2].params["alpha"] == 0.77 and cfg.stages[2].params["beta"] == 0.04
    assert cfg.model.preset == "tiny"
    assert cfg.stages[0].params["label_smoothing"] == 0.1 and cfg.stages[0].grad_clip == 0.5


@pytest.mark.parametrize(
    "patch, message",
    [
        ({"stages": [{"name": "bc", "objective": "bc", "steps": 2, "lr": "fast"}]}, r"stages\[0\]\.lr: expected a number"),
        ({"stages": [{"name": "bc", "objective": "bcc", "steps": 2}]}, r"stages\[0\]\.objective: unknown objective 'bcc'"),
        ({"stages": [{"name": "bc", "objective": "bc"}]}, r"stages\[0\]: give exactly one of epochs / steps"),
        ({"stages": [{"name": "bc", "objective": "bc", "steps": 2, "lr_typo": 1}]}, r"stages\[0\]: unknown field\(s\) \['lr_typo'\]"),
        ({"stages": [{"name": "x", "objective": "mpo", "steps": 2, "params": {"alpha": "high"}}]}, r"stages\[0\]\.params: mpo: alpha"),
        ({"data": {"batch_size": 1.5}}, r"data\.batch_size: expected an integer"),
        ({"data": {"synthetic": {"n_scene": 3}}}, r"data\.synthetic: unknown field\(s\) \['n_scene'\]"),
        ({"eval": {"n_rollout": "many"}}, r"eval\.n_rollout: expected an integer"),
        ({"stages": [{"name": "a", "objective": "bc", "steps": 1}, {"name": "a", "objective": "bc", "steps": 1}]}, r"stages\[1\]\.name: duplicate"),
        ({"stages": []}, r"stages: at least one stage"),
    ],
)
def test_errors_name_the_field(patch, message):
    raw = _base()
    raw.update(patch)
    with pytest.raises(ConfigError, match=message):
        config_from_dict(raw, "cfg.yaml")


def test_missing_required_field():
    with pytest.raises(ConfigError, match=r"cfg.yaml: stages: missing required field"):
        config_from_dict({}, "cfg.yaml")


def test_file_errors(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("stages: [\n")
    with pytest.raises(ConfigError, match="bad.yaml: invalid YAML"):
        load_config(bad)


def test_overrides_and_include(tmp_path):
    base = tmp_path / "base.yaml"
    base.write_text("seed: 1\nstages:\n  - {name: bc, objective: bc, steps: 2}\n  - {name: rft, objective: mpo, steps: 2, params: {beta: 0.04}}\n")
    child = tmp_path / "child.yaml"
    child.write_text("include: base.yaml\nseed: 5\nstages: {1: {params: {beta: 0.4}}}\n")
    cfg = load_config(child, ["stages.rft.params.alpha=0.7", "stages.0.lr=1e-3", "data.batch_size=8"])
    assert cfg.seed == 5
    assert cfg.stages[1].params == {"beta": 0.4, "alpha": 0.7}
    assert cfg.stages[0].lr == pytest.approx(1e-3)
    assert cfg.data.batch_size == 8
    with pytest.raises(ConfigError, match="no list item 'nope'"):
        apply_overrides({"stages": [{"name": "bc"}]}, ["stages.nope.lr=1"])
    with pytest.raises(ConfigError, match="expected key=value"):
        apply_overrides({}, ["seed"])


def test_learner_section_errors_name_the_field():
    cfg = load_config(ROOT / "configs" / "tiny_test.yaml", ["learner.max_tokens_per_microbatch=512", "device=auto"])
    assert cfg.learner.max_tokens_per_microbatch == 512 and cfg.device == "auto"
    with pytest.raises(ConfigError, match="learner.max_tokens_per_microbatch"):
        load_config(ROOT / "configs" / "tiny_test.yaml", ["learner.max_tokens_per_microbatch=4"])
    with pytest.raises(ConfigError, match="learner.autocast"):
        load_config(ROOT / "configs" / "tiny_test.yaml", ["learner.autocast=fp8"])
    assert load_config(ROOT / "configs" / "tiny_test.yaml", ["learner.reference_on=learner"]).learner.reference_on == "learner"
    with pytest.raises(ConfigError, match="learner.reference_on"):
        load_config(ROOT / "configs" / "tiny_test.yaml", ["learner.reference_on=scorer"])
    with pytest.raises(ConfigError, match="device"):
        load_config(ROOT / "configs" / "tiny_test.yaml", ["device=tpu"])
