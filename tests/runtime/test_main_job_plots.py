"""The main job's plots: one loss curve per stage and a stage comparison, valid PNGs."""

from __future__ import annotations

from PIL import Image

from learner.main_job import plot_run


def test_plot_run_writes_curves_and_stage_comparison(tmp_path):
    history = [{"stage": "bc", "loss": 5.0 - 0.01 * i} for i in range(50)] + [
        {"stage": "rft", "loss": 0.2, "reward_mean": 0.5} for _ in range(5)
    ]
    evaluations = {
        "bc": {"metametric": 0.74, "min_average_displacement_error": 3.2},
        "rft": {"metametric": 0.75, "min_average_displacement_error": 3.1},
    }
    paths = plot_run(history, evaluations, tmp_path / "plots")
    assert [p.name for p in paths] == ["loss_curves.png", "stage_comparison.png"]
    for p in paths:
        with Image.open(p) as img:
            assert img.format == "PNG" and img.size[0] > 400
            # not a blank canvas: the curves / bars put several colours on it
            assert len(img.convert("RGB").getcolors(maxcolors=100000) or []) > 10


def test_plot_run_with_nothing_to_plot(tmp_path):
    assert plot_run([], {}, tmp_path) == []
