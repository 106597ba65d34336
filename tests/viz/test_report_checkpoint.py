"""`evaluate` with a real checkpoint (an untrained cpu-demo model on the tiny_test data) next to
a baseline: rolled out through `smart_r1.sim.simulate.simulate_scenes`, scored, reported with
the model's parameter count."""

from __future__ import annotations


import pytest



def test_checkpoint_and_baseline_report(tmp_path, untrained_checkpoint):
    import torch

    from smart_r1.viz.report import evaluate_and_report

    ckpt_path, model, scene, _ = untrained_checkpoint
    torch.set_num_threads(1)
    result = evaluate_and_report(
        [str(ckpt_path), "baseline:constant_velocity"], [scene], num_rollouts=2, out_dir=tmp_path / "eval",
        report_options=dict(worst_k=1, render=False), progress=False, fail_fast=True,
    )
    assert result.n_scored == 2
    names = [s.name for s in result.sources]
    assert names == ["run/last", "baseline:constant_velocity"]
    assert result.sources[0].num_parameters() == model.num_parameters() > 0
    md = (result.report_dir / "report.md").read_text()
    lines = md.splitlines()
    header = [c.strip() for c in next(line for line in lines if line.startswith("| Model")).split("|")]
    params = header.index("Params")
    cell = {name: [c.strip() for c in next(line for line in lines if line.startswith(f"| {name} ")).split("|")][params]
            for name in names}
    # The model's own count, in the report's unit: millions with 2 decimals from 100k up, else the integer.
    n = model.num_parameters()
    assert cell["run/last"] == (f"{n / 1e6:.2f}M" if n >= 100_000 else f"{n:,}"), (cell, n)
    assert cell["baseline:constant_velocity"] == "0"  # a baseline learns nothing
    # same seed -> same rollouts of the checkpoint (per-scene seeds)
    again = result.sources[0].rollouts(scene, 2, 0).trajectories
    assert (again == result.sources[0].rollouts(scene, 2, 0).trajectories).all()
