"""experiments/mpo_experiment.py: the statistics behind the final table (bootstrap CIs, the
gap-closed fraction, the verdicts) and the arm definitions."""

import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # repo root: `experiments`

from experiments.mpo_experiment import (  # noqa: E402
    ARM_LABELS,
    arm_stages,
    bootstrap_ci,
    bootstrap_gap_closed,
    gap_closed,
    load_experiment,
    verdict,
)

REPO = Path(__file__).resolve().parents[2]


def test_bootstrap_ci_exact_cases():
    m, lo, hi = bootstrap_ci(np.full((3, 10), 0.25), n_boot=200)
    assert (m, lo, hi) == (0.25, 0.25, 0.25)  # no spread -> a point
    m, lo, hi = bootstrap_ci([0.0, 1.0], n_boot=4000)  # resampled means lie in {0, .5, 1}
    assert m == 0.5 and lo == 0.0 and hi == 1.0
    with pytest.raises(ValueError, match="n_seed, n_scene"):
        bootstrap_ci(np.zeros((2, 2, 2)))


def test_bootstrap_ci_covers_the_true_mean_at_its_level():
    rng = np.random.default_rng(1)
    hits = 0
    n_trial = 200
    for t in range(n_trial):
        sample = rng.normal(0.3, 1.0, size=60)  # one seed, 60 scenes
        _, lo, hi = bootstrap_ci(sample, n_boot=500, level=0.9, seed=t)
        hits += lo <= 0.3 <= hi
    assert 0.82 <= hits / n_trial <= 0.96  # nominal 0.90 (percentile bootstrap is a bit narrow at n=60)


def test_bootstrap_ci_widens_with_seed_spread():
    rng = np.random.default_rng(2)
    scene = rng.normal(0, 0.01, size=(1, 40))
    same = np.repeat(scene, 3, axis=0)  # three seeds that agree
    spread = same + np.array([[-0.05], [0.0], [0.05]])  # three seeds that disagree
    _, lo1, hi1 = bootstrap_ci(same, n_boot=1000)
    _, lo2, hi2 = bootstrap_ci(spread, n_boot=1000)
    assert hi2 - lo2 > 3 * (hi1 - lo1)  # the seed level is resampled too


def test_gap_closed_arithmetic():
    assert gap_closed(0.80, 0.70, 0.90) == pytest.approx(0.5)
    assert gap_closed(0.70, 0.70, 0.90) == 0.0
    assert gap_closed(0.90, 0.70, 0.90) == pytest.approx(1.0)
    assert gap_closed(0.65, 0.70, 0.90) == pytest.approx(-0.25)
    assert np.isnan(gap_closed(0.8, 0.9, 0.9))  # no gap to close
    ref = np.array([[0.70, 0.60, 0.80]])
    ceiling = np.array([0.90, 0.80, 1.00])
    point, lo, hi = bootstrap_gap_closed(ref + 0.05, ref, ceiling, n_boot=300)
    assert point == pytest.approx(0.25) and lo == pytest.approx(0.25) and hi == pytest.approx(0.25)


def test_verdicts():
    assert verdict(0.001, 0.01) == "better"
    assert verdict(-0.01, -0.001) == "worse"
    assert verdict(-0.01, 0.01) == "cannot tell at this resolution"
    assert verdict(0.1, 0.2, higher_is_better=False) == "worse"


def test_arms_share_the_rft_template_and_differ_where_they_should():
    raw, exp = load_experiment(str(REPO / "configs" / "experiment_mpo.yaml"), [])
    arms = arm_stages(raw, exp)
    assert list(arms) == list(ARM_LABELS)
    rft = [s for s in raw["stages"] if s["name"] == "rft"][0]
    assert rft["steps"] >= 96 and exp["test_rollouts"] == 32 and exp["n_test_scenes"] >= 100
    for name, stages in arms.items():
        assert stages[-1]["steps"] == rft["steps"], name  # same training length, SFT continued included
    p = {k: v[0]["params"] for k, v in arms.items()}
    assert p["mpo_paper"]["logprob"] == "full_softmax" and p["mpo_sampled"]["logprob"] == "sampled"
    assert p["placebo"] == dict(p["mpo_paper"], advantage="threshold_shuffled")  # only the shuffle differs
    assert p["ppo"]["ppo_epochs"] > 1 and p["grpo"]["ppo_epochs"] > 1
    assert arms["sft_continued"][0]["objective"] == "catk"
    with pytest.raises(ValueError, match="unknown arm 'nope'"):
        load_experiment(str(REPO / "configs" / "experiment_mpo.yaml"), ["experiment.arms=[sft_continued,nope]"])


def test_reduced_config_keeps_the_design_and_sft_continued_sees_the_same_scenes_per_step():
    """The reduced-scale run (configs/experiment_mpo_reduced.yaml) shrinks the scale, not the design:
    every arm, the placebo, the test split of >= 100 scenes, >= 3 seeds' worth of SFT from one
    shared BC; and SFT continued takes as many scenes per step as the RFT arms."""
    raw, exp = load_experiment(str(REPO / "configs" / "experiment_mpo_reduced.yaml"), [])
    arms = arm_stages(raw, exp)
    assert list(arms) == list(ARM_LABELS) and exp["n_test_scenes"] >= 100 and exp["shared_bc"]
    rft = [s for s in raw["stages"] if s["name"] == "rft"][0]
    assert rft["batch_size"] and all(stages[-1]["batch_size"] == rft["batch_size"] for stages in arms.values())
    full_arms = arm_stages(*load_experiment(str(REPO / "configs" / "experiment_mpo.yaml"), []))
    assert full_arms["sft_continued"][0].get("batch_size") is None  # the full config: data.batch_size everywhere
