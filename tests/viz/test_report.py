"""Evaluation reports: synthetic scenes with two baselines and the shared real scene with its
submission render to Markdown and HTML, the HTML loads in headless Chromium (non-blank
screenshot), the table bolds the best value, and re-runs skip the scenes already scored."""

from __future__ import annotations

import re
import shutil
import subprocess

import numpy as np
import pytest
from PIL import Image

from smart_r1.eval.evaluate import ScoreStore, evaluate
from smart_r1.viz.report import evaluate_and_report, markdown_table

BASELINES = ["baseline:constant_velocity", "baseline:log_replay_noise"]
# Small and quick: few rollouts, one worst scene per model, tiny frames, a 5-frame GIF.
QUICK = dict(worst_k=1, frame_px=96, grid_rollouts=1, gif_steps=range(10, 91, 20))


def chromium_screenshot(html_path, png_path, tmp_path) -> None:
    exe = shutil.which("chromium") or shutil.which("chromium-browser")
    if exe is None:
        pytest.skip("headless Chromium not installed (Debian package `chromium`)")
    cmd = [
        exe, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync",
        f"--user-data-dir={tmp_path / 'chromium-profile'}", f"--screenshot={png_path}", "--window-size=1280,2000",
        html_path.resolve().as_uri(),
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=90)
    assert png_path.exists(), f"chromium wrote no screenshot (rc {proc.returncode}): {proc.stderr[-2000:]}"


def assert_non_blank_png(path) -> np.ndarray:
    with Image.open(path) as img:
        assert img.format == "PNG"
        assert img.size == (1280, 2000)
        pixels = np.asarray(img.convert("RGB")).astype(np.int32)  # [H, W, 3]
    colours = np.unique(pixels[::4, ::4].reshape(-1, 3), axis=0)
    assert len(colours) > 50, f"screenshot looks blank ({len(colours)} distinct colours)"
    assert pixels.std() > 10
    return pixels


@pytest.fixture(scope="module")
def synth_eval(tmp_path_factory):
    from smart_r1.data.synth import write_synthetic_dataset

    root = tmp_path_factory.mktemp("synth_eval")
    shards = write_synthetic_dataset(root / "scenes", num_scenes=3, seed=7, num_shards=1, progress=False)
    result = evaluate_and_report(BASELINES, str(shards[0]), backend="fast", num_rollouts=4, out_dir=root / "out", report_options=QUICK, progress=False)
    return root, shards[0], result


def test_synthetic_report_renders_md_and_html(synth_eval, tmp_path):
    root, _, result = synth_eval
    assert result.n_scored == 6 and result.n_skipped == 0 and not result.failed
    report = result.report_dir
    md = (report / "report.md").read_text()
    html = (report / "report.html").read_text()
    for name in BASELINES:
        assert name in md and name in html
    # leaderboard columns incl. minADE and parameter count; baselines have 0 parameters
    assert "Realism meta" in md and "minADE (m)" in md and "| Params |" in md
    rows = [line for line in md.splitlines() if line.startswith("| baseline:")]
    assert len(rows) == 2 and all(row.split("|")[-3].strip() == "0" for row in rows)
    # every referenced image exists and is a valid image (GIF: the requested frame count)
    refs = re.findall(r'src="([^"]+)"', html)
    assert any(r.endswith("bars.png") for r in refs) and any("histograms_" in r for r in refs)
    assert sum(r.endswith("_grid.png") for r in refs) == 2 and sum(r.endswith(".gif") for r in refs) == 2
    for ref in refs:
        with Image.open(report / ref) as img:
            assert img.format in ("PNG", "GIF")
            if img.format == "GIF":
                assert img.n_frames == len(QUICK["gif_steps"])
    assert set(re.findall(r"\]\(([^)]+)\)", md)) == set(refs)
    png = tmp_path / "report.png"
    chromium_screenshot(report / "report.html", png, tmp_path)
    pixels = assert_non_blank_png(png)
    # The leaderboard header colour (#2f7bf5) is on screen: the table rendered.
    assert (np.abs(pixels - np.array([0x2F, 0x7B, 0xF5])).sum(-1) < 30).sum() > 500


def test_table_bolds_the_best_value():
    rows = {
        "a": {"metametric": 0.70, "min_average_displacement_error": 1.50, "num_parameters": 7_000_000, "n_scenes": 2},
        "b": {"metametric": 0.75, "min_average_displacement_error": 1.20, "num_parameters": 0, "n_scenes": 2},
    }
    md = markdown_table(rows)
    a, b = [line.split("|")[1:-1] for line in md.splitlines()[2:]]
    # columns: Model, Realism meta, ..., minADE (m), Params, Scenes
    assert a[1].strip() == "0.7000" and b[1].strip() == "**0.7500**"
    assert a[-3].strip() == "1.5000" and b[-3].strip() == "**1.2000**"  # minADE: lower is better
    assert a[-2].strip() == "7.00M" and "**" not in a[-2] + b[-2]  # parameter count never bold
    assert "-" == a[2].strip()  # missing value
    # ties: every best value is bold
    tie = markdown_table({"x": {"metametric": 0.5}, "y": {"metametric": 0.5}})
    assert tie.count("**0.5000**") == 2


def test_resume_skips_scored_scenes(synth_eval):
    root, shard, result = synth_eval
    store_path = root / "out" / "scores.parquet"
    store = ScoreStore(store_path)
    assert len(store.rows) == 6
    before = {ScoreStore.key(r): r["finished_at"] for r in store.rows}
    # Forget one scene of one model: only that pair is scored again.
    dropped = store.rows[0]
    store.rows = store.rows[1:]
    store.write()
    again = evaluate(BASELINES, str(shard), backend="fast", num_rollouts=4, out_dir=root / "out", report=False, progress=False)
    assert again.n_scored == 1 and again.n_skipped == 5
    after = {ScoreStore.key(r): r for r in ScoreStore(store_path).rows}
    assert set(after) == set(before)
    for key, t in before.items():
        if key == ScoreStore.key(dropped):
            assert after[key]["finished_at"] > t
            assert after[key]["metametric"] == pytest.approx(dropped["metametric"], abs=1e-6)  # same seed, same rollouts
        else:
            assert after[key]["finished_at"] == t
    # A different rollout count is a different evaluation: nothing skipped.
    other = evaluate(BASELINES[:1], str(shard), backend="fast", num_rollouts=2, out_dir=root / "out", report=False, progress=False)
    assert other.n_scored == 3 and other.n_skipped == 0
    assert len(ScoreStore(store_path).rows) == 9


def test_cli_evaluate_resumes(synth_eval, capsys):
    from smart_r1.cli import main

    root, shard, _ = synth_eval
    argv = ["evaluate", "--scenes", str(shard), "--backend", "fast", "--num-rollouts", "4", "--out", str(root / "out"), "--no-report", "--quiet"]
    for b in BASELINES:
        argv += ["--checkpoint", b]
    assert main(argv) == 0
    captured = capsys.readouterr()
    assert "skipped 6 already in" in captured.err
    assert "baseline:log_replay_noise" in captured.out
    assert main(["evaluate", "--scenes", str(shard), "--out", str(root / "x")]) == 2  # nothing to evaluate
    assert main(["evaluate", "--scenes", str(shard), "--checkpoint", "baseline:nope", "--out", str(root / "x")]) == 2


def test_real_scene_with_submission(real_scenario_path, real_submission_path, tmp_path):
    result = evaluate_and_report(
        [], str(real_scenario_path), backend="fast", num_rollouts=2, rollouts=[str(real_submission_path)],
        out_dir=tmp_path / "out", report_options=dict(QUICK, gif=False), progress=False,
    )
    assert result.n_scored == 1 and not result.failed
    (row,) = result.rows
    assert row["scenario_id"] == "637f20cafde22ff8" and row["num_rollouts_scored"] == 2
    assert 0.0 < row["metametric"] < 1.0
    md = (result.report_dir / "report.md").read_text()
    assert real_submission_path.name in md and "637f20cafde22ff8" in md
    assert "**" + f"{row['metametric']:.4f}" + "**" in md  # the only row is the best
    png = tmp_path / "report.png"
    chromium_screenshot(result.report_dir / "report.html", png, tmp_path)
    assert_non_blank_png(png)


def test_embedded_images_make_one_file(synth_eval, tmp_path):
    from smart_r1.viz.report import build_report

    root, shard, result = synth_eval
    report = build_report(result, scenes=str(shard), out_dir=tmp_path, num_rollouts=4, render=False, embed_images=True, progress=False)
    html = (report / "report.html").read_text()
    srcs = re.findall(r'src="([^"]+)"', html)
    assert len(srcs) == 2 and all(s.startswith("data:image/png;base64,") for s in srcs)
    import base64
    import io

    with Image.open(io.BytesIO(base64.b64decode(srcs[0].split(",", 1)[1]))) as img:
        assert img.format == "PNG"
