"""Advantage estimators (smart_r1.objectives.advantages): hand-computed small cases."""

import pytest
import torch

from smart_r1.objectives import get_objective
from smart_r1.objectives.advantages import get_advantage, list_advantages

REWARDS = torch.tensor([[1.0, 2.0], [3.0, 4.0], [5.0, 9.0]])  # [R=3, n_scene=2]
ALL = torch.ones_like(REWARDS, dtype=torch.bool)


def test_registry_names_and_unknown():
    assert {"threshold", "group_mean", "group_normalized"} <= set(list_advantages())
    with pytest.raises(KeyError, match="unknown advantage estimator 'nope'"):
        get_advantage("nope")
    with pytest.raises(KeyError, match="nope"):
        get_objective("mpo", advantage="nope")


def test_threshold_is_reward_minus_alpha():
    adv = get_advantage("threshold")(REWARDS, ALL, 2.5)
    assert torch.allclose(adv, REWARDS - 2.5)
    with pytest.raises(ValueError, match="needs alpha"):
        get_advantage("threshold")(REWARDS, ALL, None)


def test_group_mean_is_leave_one_out_baseline():
    adv = get_advantage("group_mean")(REWARDS, ALL, None)
    # scene 0: 1 - (3+5)/2, 3 - (1+5)/2, 5 - (1+3)/2; scene 1: 2 - 6.5, 4 - 5.5, 9 - 3
    want = torch.tensor([[-3.0, -4.5], [0.0, -1.5], [3.0, 6.0]])
    assert torch.allclose(adv, want)
    assert torch.allclose(adv.sum(0), torch.zeros(2))  # zero-mean per scene group


def test_group_mean_ignores_invalid_rewards():
    valid = torch.tensor([[True, True], [False, True], [True, False]])
    rewards = torch.where(valid, REWARDS, torch.zeros_like(REWARDS))
    adv = get_advantage("group_mean")(rewards, valid, None)
    # scene 0 valid {1, 5}: -4, +4 ; scene 1 valid {2, 4}: -2, +2 ; invalid entries 0
    assert torch.allclose(adv, torch.tensor([[-4.0, -2.0], [0.0, 2.0], [4.0, 0.0]]))
    single = torch.tensor([[True], [False], [False]])
    assert torch.equal(get_advantage("group_mean")(REWARDS[:, :1], single, None), torch.zeros(3, 1))


def test_group_normalized_zero_mean_unit_std():
    adv = get_advantage("group_normalized")(REWARDS, ALL, None)
    assert torch.allclose(adv.mean(0), torch.zeros(2), atol=1e-6)
    assert torch.allclose(adv.std(0, unbiased=False), torch.ones(2), atol=1e-4)


def test_mpo_group_mean_needs_no_calibration_and_uses_estimator():
    mpo = get_objective("mpo", advantage="group_mean")  # alpha defaults to "calibrate"
    assert not mpo.needs_calibration
    assert torch.allclose(mpo.advantages(REWARDS, ALL), get_advantage("group_mean")(REWARDS, ALL, None))
    paper = get_objective("mpo", alpha=0.77)
    assert torch.allclose(paper.advantages(REWARDS, ALL), REWARDS - 0.77)
    assert get_objective("mpo").needs_calibration


def test_placebo_shuffles_rewards_within_the_batch():
    """`threshold_shuffled` (the experiment's placebo): the valid rewards of the whole batch are
    permuted (same multiset, another assignment; invalid entries stay put), then r - alpha."""
    from smart_r1.objectives.advantages import shuffle_within_batch

    rewards = torch.arange(32, dtype=torch.float32).reshape(8, 4) / 32  # [R=8, n_scene=4], all distinct
    valid = torch.ones_like(rewards, dtype=torch.bool)
    valid[0, 1] = valid[5, 3] = False
    shuffled = shuffle_within_batch(rewards, valid)
    assert torch.equal(shuffled[~valid], rewards[~valid])  # invalid entries untouched
    assert torch.equal(shuffled[valid].sort().values, rewards[valid].sort().values)  # same multiset
    assert (shuffled != rewards)[valid].float().mean() > 0.5  # most rollouts get another's reward
    assert not torch.equal(shuffled[:, 0], rewards[:, 0])  # moved across scenes, not just inside one
    assert torch.equal(shuffle_within_batch(rewards, valid), shuffled)  # reproducible
    adv = get_advantage("threshold_shuffled")(rewards, valid, 0.25)
    assert torch.allclose(adv, (shuffled - 0.25) * valid.float())
    assert torch.isclose(adv.sum(), ((rewards - 0.25) * valid.float()).sum())  # batch-mean advantage kept
    with pytest.raises(ValueError, match="needs alpha"):
        get_advantage("threshold_shuffled")(rewards, valid, None)
    mpo = get_objective("mpo", advantage="threshold_shuffled")
    assert mpo.needs_calibration  # calibrated alpha, like the paper arm it mirrors
