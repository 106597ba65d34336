"""experiments/paper_tables.py: the aggregation that turns per-seed runs into the paper tables."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # repo root: `experiments`

from experiments.paper_tables import branches, markdown_tables, paired_deltas, rows_for_seed


def _ev(meta: float, ade: float) -> dict:
    return {"metametric": meta, "min_average_displacement_error": ade}


def _seed(bc: float, sft: float, rft: float, grpo: float) -> dict:
    return {"base": {"bc": _ev(bc, 3.0), "sft1": _ev(sft, 2.0)},
            "rft_mpo": {"rft": _ev(rft, 2.5), "sft2": _ev(sft, 2.0)},
            "rft_grpo": {"rft": _ev(grpo, 2.2)}}


def test_rows_map_runs_to_paper_rows():
    rows = rows_for_seed(_seed(0.70, 0.72, 0.73, 0.75))
    assert rows["table3"]["BC (base)"]["metametric"] == 0.70
    assert rows["table3"]["BC + SFT + RFT"]["metametric"] == 0.73
    assert rows["table4"]["w/ GRPO"]["metametric"] == 0.75
    assert "table5" not in rows  # a table needs at least two of its rows


def test_paired_deltas_are_per_seed_differences_to_bc_sft():
    results = {"seed0": _seed(0.70, 0.72, 0.73, 0.75), "seed1": _seed(0.60, 0.64, 0.63, 0.66)}
    md = paired_deltas(results, ["seed0", "seed1"])
    grpo = next(line for line in md.splitlines() if line.startswith("| w/ GRPO"))
    # (0.75 - 0.72 + 0.66 - 0.64) / 2 = +0.025, better in both seeds; minADE 2.2 - 2.0
    assert "+0.0250" in grpo and "| 2/2 |" in grpo and "+0.200" in grpo
    rft = next(line for line in md.splitlines() if line.startswith("| BC + SFT + RFT |"))
    assert "+0.0000" in rft and "| 1/2 |" in rft  # +0.01 and -0.01
    assert "| BC + SFT |" not in md  # the reference row itself is left out


def test_markdown_means_and_branch_names():
    per_seed = [rows_for_seed(_seed(0.70, 0.72, 0.73, 0.75)), rows_for_seed(_seed(0.60, 0.64, 0.63, 0.66))]
    md = markdown_tables(per_seed, {"table4": "Table 4"})
    assert "0.7050 ± 0.0636" in md  # GRPO: mean of 0.75, 0.66 and their sample std
    raw = {"stages": [{"name": "bc"}, {"name": "sft1"}, {"name": "sft2", "objective": "catk"},
                      {"name": "rft", "objective": "mpo", "params": {"beta": 0.04, "n_rollout": 8, "reward": "rollout"}}]}
    b = branches(raw, 0.01)
    assert b["grpo_loo"][0]["params"]["reward"] == "leave_one_out"
    assert b["mpo_group_mean"][0]["params"]["advantage"] == "group_mean"
    assert b["alpha_hi"][0]["params"]["alpha_offset"] == 0.01
