"""The MPO experiment of issue 13 (item 4): does RFT (and which form of it) make the simulator
more realistic than simply continuing SFT, measured against a placebo and the oracle ceiling?

    .venv/bin/python -m experiments.mpo_experiment --config configs/experiment_mpo.yaml \
        --seeds 0 1 2 --out .smart_r1_runs/experiment_mpo [--write-docs PATH] [--plot PATH]

Splits (all from the `womd` synthetic profile, disjoint generator seeds, checked disjoint by id):
- train: `data.synthetic.n_scenes` scenes (seed `data.synthetic.seed`): BC, SFT and RFT batches;
- validation: `data.synthetic.n_val_scenes` scenes (the pipeline's validation seed): the
  per-stage evaluations written by training (`evaluation.json`), the only numbers any choice
  may look at;
- test: `experiment.n_test_scenes` scenes (seed derived from `data.synthetic.seed` and "test"),
  touched once, by the final scoring below. Every number of the final table comes from it.

Per training seed: `base` = stages [bc, sft1] -> the SFT checkpoint every arm starts from
(`init_from`); then one run per arm (`ARMS`): SFT continued (catk, as many steps as RFT), paper
MPO (threshold, full-softmax log-prob), MPO with the sampled-distribution log-prob, MPO with the
group-mean baseline, GRPO, DPO, PPO (with epochs), and the placebo (paper MPO on rewards shuffled
within the batch, advantage `threshold_shuffled`).

Final scoring (cached per run in `test-<tag>.json` / `real-<tag>.json`):
- test split, `experiment.test_rollouts` rollouts per scene, the eval sampler, fast backend,
  scene i rolled out with the same generator for every arm (common random numbers);
  per-scene scores and motion guards are kept, so every difference is paired by scene and seed;
- the oracle (`baseline:oracle`) on the same scenes: the ceiling;
- the real WOMD scene of tests/fixtures/womd, `experiment.real_rollouts` rollouts, official
  backend, next to constant velocity and log replay.

Statistics: paired differences arm - "SFT continued" per (seed, scene), percentile bootstrap
over scenes and seeds (`bootstrap_ci`), and the fraction of the SFT-continued -> oracle gap closed
(`gap_closed`, bootstrapped as a ratio of means). Every run and every scoring is cached on disk;
a rerun skips what is done, so the script can be killed and restarted at any point.
"""

from __future__ import annotations

import argparse
import copy
import hashlib
import json
import os
import resource
import sys
import time
from pathlib import Path

import numpy as np

from experiments.paper_tables import _stage, run_one
from smart_r1.metrics.base import LIKELIHOOD_FIELDS

REPO = Path(__file__).resolve().parents[1]
REAL_SCENE = REPO / "tests" / "fixtures" / "womd" / "scenario_637f20cafde22ff8.tfrecord"
REFERENCE_ARM = "sft_continued"
# name -> row label (the order of the tables)
ARM_LABELS = {
    "sft_continued": "SFT continued (no RFT) — reference",
    "mpo_paper": "MPO, paper (threshold, full-softmax log-prob)",
    "mpo_sampled": "MPO, sampled-distribution log-prob",
    "mpo_group_mean": "MPO, group-mean baseline",
    "grpo": "GRPO (epochs)",
    "dpo": "DPO",
    "ppo": "PPO (epochs)",
    "placebo": "PLACEBO: paper MPO on rewards shuffled within the batch",
}
# rows of the final table: the SFT checkpoint itself, then the arms
ROW_LABELS = {"sft_checkpoint": "SFT checkpoint (start of every arm, no further training)", **ARM_LABELS}
GROUP_COLS = (("metametric", "realism meta ↑"), ("kinematic_metrics", "kinematic ↑"), ("interactive_metrics", "interactive ↑"),
              ("map_based_metrics", "map ↑"), ("min_average_displacement_error", "minADE ↓"))
GUARD_COLS = (("guard/distance_ratio", "dist. / log"), ("guard/frozen_fraction", "frozen"))
EXPERIMENT_DEFAULTS = {
    "n_test_scenes": 128,
    "test_rollouts": 32,
    "real_rollouts": 32,
    "real_backend": "official",
    "rollout_seed": 0,
    "bootstrap": 4000,
    "ci_level": 0.95,
    "ppo_epochs": 4,
    "n_minibatches": 2,
    "arms": list(ARM_LABELS),
    # Gate: stop before the arms when the SFT checkpoint's validation realism is below this (an
    # SFT policy under constant velocity makes every arm comparison meaningless). 0 = no gate.
    "min_sft_meta": 0.0,
    # One BC run (training seed `bc_seed`) shared by every training seed, which then differ in
    # their CAT-K SFT and RFT (sampling, batch order, dropout) only: a reduced-scale option that
    # saves (n_seed - 1) BC runs; the seed-to-seed spread then leaves out BC's own variance.
    "shared_bc": False,
    "bc_seed": 0,
}


# ----------------------------------------------------------------------------------------------
# Statistics
# ----------------------------------------------------------------------------------------------

def _as_2d(values) -> np.ndarray:
    v = np.asarray(values, dtype=np.float64)
    if v.ndim == 1:
        v = v[None]
    if v.ndim != 2 or v.size == 0:
        raise ValueError(f"bootstrap: expected [n_seed, n_scene] values, got shape {v.shape}")
    return v  # [n_seed, n_scene]


def _bootstrap_indices(n_seed: int, n_scene: int, n_boot: int, seed: int):
    rng = np.random.default_rng(seed)
    seed_idx = rng.integers(0, n_seed, size=(n_boot, n_seed))  # [B, n_seed]
    scene_idx = rng.integers(0, n_scene, size=(n_boot, n_scene))  # [B, n_scene]
    return seed_idx[:, :, None], scene_idx[:, None, :]


def bootstrap_ci(values, n_boot: int = 4000, level: float = 0.95, seed: int = 0) -> tuple[float, float, float]:
    """Mean of `values` [n_seed, n_scene] (or [n_scene]) and its percentile bootstrap interval.

    Two-level resampling: seeds with replacement, and scenes with replacement (the same scene
    draw for every seed, since the test scenes are shared by the seeds and the differences are
    paired by scene). With one seed this is the plain bootstrap over scenes. -> (mean, lo, hi)
    """
    v = _as_2d(values)
    si, ci = _bootstrap_indices(*v.shape, n_boot, seed)
    stats = v[si, ci].mean(axis=(1, 2))  # [B]
    a = (1.0 - level) / 2.0
    return float(v.mean()), float(np.quantile(stats, a)), float(np.quantile(stats, 1.0 - a))


def gap_closed(arm: float, reference: float, ceiling: float) -> float:
    """Fraction of the reference -> ceiling gap that `arm` closes: (arm - ref) / (ceiling - ref).
    1 = reaches the ceiling, 0 = no better than the reference, < 0 = worse. NaN when the
    reference is already at or above the ceiling (no gap to close)."""
    gap = float(ceiling) - float(reference)
    if not np.isfinite(gap) or gap <= 0:
        return float("nan")
    return (float(arm) - float(reference)) / gap


def bootstrap_gap_closed(arm, reference, ceiling, n_boot: int = 4000, level: float = 0.95, seed: int = 0):
    """`gap_closed` of the means of paired per-(seed, scene) values (ceiling: [n_scene] or
    [n_seed, n_scene]), with the same two-level bootstrap as `bootstrap_ci` (ratio of means)."""
    a, r = _as_2d(arm), _as_2d(reference)
    c = np.broadcast_to(_as_2d(ceiling), a.shape)
    num, den = a - r, c - r  # [n_seed, n_scene]
    si, ci = _bootstrap_indices(*a.shape, n_boot, seed)
    nb, db = num[si, ci].mean(axis=(1, 2)), den[si, ci].mean(axis=(1, 2))  # [B]
    ratio = np.where(db > 0, nb / np.where(db > 0, db, 1.0), np.nan)
    q = (1.0 - level) / 2.0
    point = gap_closed(float(a.mean()), float(r.mean()), float(c.mean()))
    if np.isnan(ratio).all():
        return point, float("nan"), float("nan")
    return point, float(np.nanquantile(ratio, q)), float(np.nanquantile(ratio, 1.0 - q))


def verdict(lo: float, hi: float, higher_is_better: bool = True) -> str:
    """Plain reading of a confidence interval of a difference."""
    if not (np.isfinite(lo) and np.isfinite(hi)):
        return "—"
    if lo > 0:
        return "better" if higher_is_better else "worse"
    if hi < 0:
        return "worse" if higher_is_better else "better"
    return "cannot tell at this resolution"


# ----------------------------------------------------------------------------------------------
# Config, arms, data
# ----------------------------------------------------------------------------------------------

def load_experiment(path: str, overrides: list[str]) -> tuple[dict, dict]:
    """(training config as a resolved dict, experiment settings) from a YAML whose extra
    top-level `experiment:` mapping holds this script's settings (`--set experiment.x=...` works)."""
    from smart_r1.train.config import apply_overrides, config_from_dict, load_yaml, resolved_dict

    raw = apply_overrides(load_yaml(path), overrides)
    exp = dict(EXPERIMENT_DEFAULTS)
    given = raw.pop("experiment", None) or {}
    unknown = sorted(set(given) - set(EXPERIMENT_DEFAULTS))
    if unknown:
        raise ValueError(f"{path}: experiment: unknown field(s) {unknown}; allowed: {sorted(EXPERIMENT_DEFAULTS)}")
    exp.update(given)
    for a in exp["arms"]:
        if a not in ARM_LABELS:
            raise ValueError(f"{path}: experiment.arms: unknown arm {a!r}; known: {list(ARM_LABELS)}")
    if REFERENCE_ARM not in exp["arms"]:
        raise ValueError(f"{path}: experiment.arms must contain the reference arm {REFERENCE_ARM!r}")
    return resolved_dict(config_from_dict(raw, path)), exp


def arm_stages(raw: dict, exp: dict) -> dict[str, list[dict]]:
    """The stage list of every arm. All start from the same SFT checkpoint; all RFT arms use the
    config's `rft` stage (steps, lr, batch) and its rollout / reward settings."""
    rft, sft1 = _stage(raw, "rft"), _stage(raw, "sft1")
    shared = {k: v for k, v in rft["params"].items() if k in ("n_rollout", "sampler", "sampler_params", "backend", "reward")}
    beta = rft["params"].get("beta", 0.04)
    epochs = {"ppo_epochs": int(exp["ppo_epochs"]), "n_minibatches": int(exp["n_minibatches"])}

    def rft_with(objective: str, **params) -> dict:
        s = copy.deepcopy(rft)
        s["objective"] = objective
        s["params"] = dict(rft["params"] if objective == "mpo" else shared, **params)
        return s

    cont = copy.deepcopy(sft1)
    cont.update(name="sft_continued", steps=rft["steps"], epochs=None)
    if rft.get("batch_size"):  # the same scenes per step as the RFT arms
        cont["batch_size"] = rft["batch_size"]
    mpo_paper = {"advantage": "threshold", "alpha": "calibrate", "logprob": "full_softmax"}
    stages = {
        "sft_continued": [cont],
        "mpo_paper": [rft_with("mpo", **mpo_paper)],
        "mpo_sampled": [rft_with("mpo", advantage="threshold", alpha="calibrate", logprob="sampled")],
        "mpo_group_mean": [rft_with("mpo", advantage="group_mean", logprob="sampled")],
        "grpo": [rft_with("grpo", beta=beta, **epochs)],
        "dpo": [rft_with("dpo")],
        "ppo": [rft_with("ppo", **epochs)],
        # Mirrors the paper arm exactly (same log-prob form, calibrated alpha, so the same
        # batch-mean advantage), only the reward-to-rollout assignment is shuffled.
        "placebo": [rft_with("mpo", **dict(mpo_paper, advantage="threshold_shuffled"))],
    }
    return {a: stages[a] for a in exp["arms"]}


def test_seed(data_seed: int) -> int:
    from smart_r1.train.loop import derive_seed

    return derive_seed(int(data_seed), "test") % (2**31)


def prepare_test_split(cfg, data, out: Path, n_test: int):
    """The untouched test split: its own generator seed, preprocessed and tokenized with the
    training vocabulary. Fails if a scenario id also occurs in train or validation."""
    from smart_r1.data.synth import write_synthetic_dataset
    from smart_r1.train.data import Split
    from smart_r1.train.pipeline import _load_scenes, _tokenize

    syn = cfg.data.synthetic
    seed = test_seed(syn.seed)
    target = out / "data" / "scenes" / "test"
    done = target / f".done-{n_test}-{seed}-{syn.profile}"
    if not done.exists():
        write_synthetic_dataset(target, n_test, seed, num_shards=1, split="test", progress=False, profile=syn.profile, **syn.params)
        done.touch()
    files = sorted(str(p) for p in target.glob("test.tfrecord-*"))
    scenes = _load_scenes(cfg, files, out / "data" / "cache" / f"test-{n_test}-{seed}")
    overlap = set(s.scenario_id for s in scenes) & (set(data.train.scenario_ids) | set(data.val.scenario_ids))
    if overlap:
        raise ValueError(f"test split (seed {seed}) shares scenario ids with train/validation: {sorted(overlap)[:5]}")
    return Split(scenes, _tokenize(cfg, scenes, data.vocab, out / "data", f"test-{seed}")), seed


# ----------------------------------------------------------------------------------------------
# Scoring
# ----------------------------------------------------------------------------------------------

def cpu_seconds() -> float:
    """CPU time of this process and its finished children (a persistent scorer subprocess,
    e.g. the official backend's, is only counted once it exits)."""
    return sum(ru.ru_utime + ru.ru_stime for ru in (resource.getrusage(resource.RUSAGE_SELF),
                                                  resource.getrusage(resource.RUSAGE_CHILDREN)))


def _tag(d: dict) -> str:
    return hashlib.blake2b(json.dumps(d, sort_keys=True).encode(), digest_size=6).hexdigest()


def _scene_row(scores, extra: dict | None = None) -> dict:
    row = {k: float(v) for k, v in scores.as_flat_dict().items()
           if isinstance(v, (float, np.floating)) or (isinstance(v, (int, np.integer)) and k != "config_year")}
    row["scenario_id"] = scores.scenario_id
    row.update(extra or {})
    return row


def score_checkpoint_on_split(ckpt: Path, cfg, split, vocab, n_rollout: int, rollout_seed: int, backend, log) -> list[dict]:
    """Per-scene scores + motion guards of a stage checkpoint on `split`, through the training
    evaluation's own path (`eval_chunk`, the eval sampler); scene i rolls out with generator
    `eval_chunk_generator(rollout_seed, i)` whatever the checkpoint (common random numbers)."""
    from smart_r1.train.checkpoint import Checkpoint
    from smart_r1.train.loop import eval_chunk, eval_chunk_generator
    from smart_r1.train.pipeline import build_model_for

    model = build_model_for(cfg, vocab)
    model.load_state_dict(Checkpoint.load(ckpt).model)
    model.eval()
    eval_cfg = copy.deepcopy(cfg.eval)
    eval_cfg.n_rollout = int(n_rollout)
    rows = []
    for i in range(len(split)):
        part = eval_chunk(model, split, [i], vocab, eval_cfg, eval_chunk_generator(rollout_seed, i),
                          cfg.data.max_train_agents, cfg.data.train_radius_m)
        scores = backend.score(part["scenes"][0], part["rollouts"][0])
        rows.append(_scene_row(scores, part["guards"]))
        if (i + 1) % max(1, len(split) // 4) == 0:
            log(f"    {ckpt.parent.parent.name}/{ckpt.stem}: {i + 1}/{len(split)} test scenes")
    return rows


def score_source_on_scenes(source, scenes, n_rollout: int, rollout_seed: int, backend) -> list[dict]:
    """Per-scene scores of a `smart_r1.eval.sources` source (baselines, checkpoints on real scenes)."""
    from smart_r1.eval.evaluate import evaluate_scene

    return [_scene_row(evaluate_scene(source, s, backend, n_rollout, rollout_seed).scores) for s in scenes]


def cached(path: Path, tag: str, compute):
    """`compute()`'s result, stored in `path` with `tag`; recomputed when the tag differs."""
    if path.exists():
        got = json.loads(path.read_text())
        if got.get("tag") == tag:
            return got["value"]
    t0 = cpu_seconds()
    value = compute()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".{os.getpid()}.tmp")  # parallel processes (seeds / arms) may score the same thing
    tmp.write_text(json.dumps({"tag": tag, "value": value, "cpu_s": cpu_seconds() - t0}, indent=1))
    tmp.replace(path)
    return value


def final_checkpoint(run_dir: Path, stage: str) -> Path:
    ckpts = sorted((run_dir / "checkpoints").glob(f"[0-9][0-9]_{stage}.pt"))
    if not ckpts:
        raise FileNotFoundError(f"{run_dir}: no stage checkpoint for {stage!r}")
    return ckpts[-1]


# ----------------------------------------------------------------------------------------------
# Tables
# ----------------------------------------------------------------------------------------------

def matrix(per_seed_rows: dict[int, list[dict]], key: str) -> np.ndarray:
    """[n_seed, n_scene] of `key` (scenes in the test-split order of every seed)."""
    seeds = sorted(per_seed_rows)
    ids = [r["scenario_id"] for r in per_seed_rows[seeds[0]]]
    for s in seeds:
        if [r["scenario_id"] for r in per_seed_rows[s]] != ids:
            raise ValueError(f"seed {s}: test scenes differ from seed {seeds[0]}'s")
    return np.array([[r.get(key, np.nan) for r in per_seed_rows[s]] for s in seeds], dtype=np.float64)


def _ci(m: float, lo: float, hi: float, fmt: str = "{:+.4f}") -> str:
    return f"{fmt.format(m)} [{fmt.format(lo)}, {fmt.format(hi)}]"


def build_report(test: dict[str, dict[int, list[dict]]], oracle: list[dict], real: dict, exp: dict, header: str,
                 validation: dict[str, dict[int, dict]], costs: dict) -> tuple[str, dict]:
    """Markdown of the final tables and the numbers behind them (also for the plot)."""
    nb, lvl = int(exp["bootstrap"]), float(exp["ci_level"])
    ref = test[REFERENCE_ARM]
    seeds = sorted(ref)
    n_scene = len(ref[seeds[0]])
    pct = int(round(lvl * 100))
    if [r["scenario_id"] for r in oracle] != [r["scenario_id"] for r in ref[seeds[0]]]:
        raise ValueError("oracle rows and the test split's scenes are not in the same order")
    oracle_meta = np.array([r["metametric"] for r in oracle])  # [n_scene]
    lines = [header, ""]
    lines.append(f"Seeds {seeds}; {n_scene} test scenes; paired differences to **SFT continued** of the same seed, "
                 f"mean over seeds and scenes [{pct}% percentile bootstrap CI over scenes and seeds, {nb} resamples]. "
                 "Verdict: the CI of Δ realism meta above 0 -> better, below -> worse, else cannot tell at this resolution.\n")
    cols = "| arm | realism meta | Δ realism meta [CI] | verdict | Δ kinematic [CI] | Δ interactive [CI] | Δ map [CI] | Δ minADE (m) [CI] | gap to oracle closed [CI] | dist. / log | frozen |"
    lines += [cols, "|---|---:|---|---|---|---|---|---|---|---:|---:|"]
    lines.append(f"| oracle (ceiling) | {oracle_meta.mean():.4f} | | | | | | | 1 | — | — |")
    summary: dict = {"oracle_meta": float(oracle_meta.mean()), "arms": {}}
    for arm in [a for a in ROW_LABELS if a in test]:
        rows = test[arm]
        if sorted(rows) != seeds:
            continue
        meta = matrix(rows, "metametric")
        cells = [f"{meta.mean():.4f}"]
        s = {"meta": float(meta.mean())}
        if arm == REFERENCE_ARM:
            cells += ["0 (reference)", "", "", "", "", ""]
            g = gap_closed(float(meta.mean()), float(meta.mean()), float(oracle_meta.mean()))
            cells.append(f"{g:.2f}")
        else:
            for key, _ in GROUP_COLS:
                d = matrix(rows, key) - matrix(ref, key)
                m, lo, hi = bootstrap_ci(d, nb, lvl)
                s[key] = (m, lo, hi)
                cells.append(_ci(m, lo, hi, "{:+.3f}" if key.startswith("min_") else "{:+.4f}"))
                if key == "metametric":
                    cells.append(verdict(lo, hi))
            gc = bootstrap_gap_closed(meta, matrix(ref, "metametric"), oracle_meta, nb, lvl)
            s["gap_closed"] = gc
            cells.append(_ci(*gc, "{:+.2f}"))
        for key, _ in GUARD_COLS:
            cells.append(f"{np.nanmean(matrix(rows, key)):.3f}")
        summary["arms"][arm] = s
        lines.append(f"| {ROW_LABELS[arm]} | " + " | ".join(cells) + " |")
    # Named comparisons beyond "vs SFT continued".
    pairs = [("mpo_paper", "placebo", "paper MPO − placebo (does the reward signal do anything?)"),
             ("mpo_sampled", "mpo_paper", "sampled − full-softmax log-prob (issue 13's bias)"),
             ("mpo_sampled", "placebo", "MPO sampled − placebo"),
             ("mpo_paper", "grpo", "paper MPO − GRPO (paper: MPO better)"),
             ("mpo_paper", "dpo", "paper MPO − DPO (paper: MPO better)"),
             ("mpo_paper", "ppo", "paper MPO − PPO (paper: MPO better)"),
             ("mpo_sampled", "grpo", "MPO sampled − GRPO"),
             ("mpo_sampled", "dpo", "MPO sampled − DPO"),
             ("mpo_sampled", "ppo", "MPO sampled − PPO"),
             ("mpo_group_mean", "mpo_sampled", "MPO group-mean − MPO sampled (threshold, calibrated alpha)")]
    got = [(a, b, t) for a, b, t in pairs if a in test and b in test and sorted(test[a]) == seeds and sorted(test[b]) == seeds]
    if got:
        lines += ["", "Other paired comparisons (test split, realism meta):\n", "| comparison | Δ realism meta [CI] | verdict |", "|---|---|---|"]
        for a, b, title in got:
            m, lo, hi = bootstrap_ci(matrix(test[a], "metametric") - matrix(test[b], "metametric"), nb, lvl)
            lines.append(f"| {title} | {_ci(m, lo, hi)} | {verdict(lo, hi)} |")
    # Reward-hacking guards: every sub-metric's paired delta.
    lines += ["", "Per-metric paired deltas to SFT continued (test split; mean over seeds and scenes; * = the CI excludes 0):\n"]
    subs = [k for k in LIKELIHOOD_FIELDS]
    lines.append("| arm | " + " | ".join(k.replace("_likelihood", "").replace("_", " ") for k in subs) + " | Δ dist. / log | Δ frozen |")
    lines.append("|---|" + "---:|" * (len(subs) + 2))
    for arm in [a for a in ROW_LABELS if a in test and a != REFERENCE_ARM and sorted(test[a]) == seeds]:
        cells = []
        for key in subs + [k for k, _ in GUARD_COLS]:
            d = matrix(test[arm], key) - matrix(ref, key)
            m, lo, hi = bootstrap_ci(d, nb, lvl)
            cells.append(f"{m:+.4f}{'*' if (lo > 0 or hi < 0) else ''}")
        lines.append(f"| {arm} | " + " | ".join(cells) + " |")
    # Validation split (what training saw after each stage; for choices only).
    if validation:
        lines += ["", "Validation split (the per-stage evaluation written by training; for choices, not for claims), realism meta, mean over seeds:\n",
                  "| arm | realism meta (validation) | seeds |", "|---|---:|---:|"]
        for arm, per in validation.items():
            v = [x.get("metametric", np.nan) for x in per.values()]
            lines.append(f"| {arm} | {np.nanmean(v):.4f} | {len(v)} |")
    # Real WOMD scene.
    if real:
        lines += ["", f"Real WOMD scene (tests/fixtures/womd, {exp['real_rollouts']} rollouts, {exp['real_backend']} backend; "
                  "one scene, so no CI: a sanity check, not a claim), mean over seeds:\n"]
        lines.append("| policy | " + " | ".join(c for _, c in GROUP_COLS) + " |")
        lines.append("|---|" + "---:|" * len(GROUP_COLS))
        for name, per in real.items():
            vals = [[r[0][k] for r in per.values()] for k, _ in GROUP_COLS]
            lines.append(f"| {name} | " + " | ".join(f"{np.mean(v):.4f}" for v in vals) + " |")
    if costs:
        lines += ["", f"Cost (CPU-seconds of this process, mean over seeds; load average at the end {os.getloadavg()[0]:.0f} on 2 cores):\n",
                  "| part | CPU-s |", "|---|---:|"]
        for k, v in costs.items():
            lines.append(f"| {k} | {v:.0f} |")
    return "\n".join(lines) + "\n", summary


def plot_deltas(summary: dict, path: Path, title: str) -> None:
    """Forest plot: Δ realism meta and Δ kinematic vs SFT continued, with the bootstrap CIs."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    arms = [a for a in summary["arms"] if "metametric" in summary["arms"][a]]
    fig, axes = plt.subplots(1, 2, figsize=(10, 0.5 * len(arms) + 1.8), sharey=True)
    for ax, key, lab in zip(axes, ("metametric", "kinematic_metrics"), ("Δ realism meta", "Δ kinematic")):
        for y, a in enumerate(arms):
            m, lo, hi = summary["arms"][a][key]
            ax.errorbar([m], [y], xerr=[[m - lo], [hi - m]], fmt="o", color="C3" if a == "placebo" else "C0", capsize=3)
        ax.axvline(0, color="k", lw=0.8)
        ax.set_xlabel(f"{lab} vs SFT continued")
    axes[0].set_yticks(range(len(arms)))
    axes[0].set_yticklabels(arms)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


# ----------------------------------------------------------------------------------------------
# Driver
# ----------------------------------------------------------------------------------------------

def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", default="configs/experiment_mpo.yaml")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--out", default=None, help="default: the config's output_dir")
    ap.add_argument("--set", dest="overrides", action="append", default=[], help="override key=value (also experiment.*)")
    ap.add_argument("--skip-real", action="store_true", help="leave out the real WOMD scene")
    ap.add_argument("--label", default="", help="heading of the report (e.g. 'PILOT, 1 seed, ...')")
    ap.add_argument("--write-docs", default=None, help="also write the markdown report here")
    ap.add_argument("--plot", default=None, help="forest plot (PNG); default <out>/deltas.png")
    args = ap.parse_args(argv)

    import torch

    from smart_r1.metrics.base import get_backend
    from smart_r1.train.config import config_from_dict
    from smart_r1.train.pipeline import prepare_data

    raw, exp = load_experiment(args.config, args.overrides)
    cfg = config_from_dict(copy.deepcopy(raw), args.config)
    if cfg.num_threads:
        torch.set_num_threads(cfg.num_threads)
    out = Path(args.out or cfg.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    logf = open(out / "log.txt", "a")

    def log(msg: str) -> None:
        line = f"[{time.strftime('%H:%M:%S')}] {msg}"
        print(line, flush=True)
        logf.write(line + "\n")
        logf.flush()

    t_start = cpu_seconds()
    data = prepare_data(cfg, out / "data")
    test_split, tseed = prepare_test_split(cfg, data, out, int(exp["n_test_scenes"]))
    log(f"splits: train {len(data.train)} (seed {cfg.data.synthetic.seed}), validation {len(data.val)}, "
        f"test {len(test_split)} (seed {tseed}); vocab {data.vocab.vocab_id}; data CPU {cpu_seconds() - t_start:.0f} s")
    (out / "experiment.resolved.json").write_text(json.dumps({"config": raw, "experiment": exp}, indent=1, default=str))
    stages = arm_stages(raw, exp)
    backend = get_backend(cfg.eval.backend)
    score_tag = _tag({"n": len(test_split), "seed": tseed, "R": int(exp["test_rollouts"]), "rs": int(exp["rollout_seed"]),
                      "eval": {k: v for k, v in raw["eval"].items() if k in ("sampler", "sampler_params", "backend")}})
    n_jobs = len(args.seeds) * (1 + len(stages))
    job = 0
    test: dict[str, dict[int, list[dict]]] = {a: {} for a in ["sft_checkpoint"] + list(stages)}
    validation: dict[str, dict[int, dict]] = {a: {} for a in stages}
    costs: dict[str, list[float]] = {}

    def timed_run(name: str, run_dir: Path, stage_list, init, raw_s) -> dict:
        cost_file = run_dir / "cost.json"
        t0 = cpu_seconds()
        res = run_one(raw_s, stage_list, run_dir, data, init, log)
        if not cost_file.exists():
            cost_file.write_text(json.dumps({"cpu_s": cpu_seconds() - t0, "load": os.getloadavg()[0]}))
        costs.setdefault(f"train: {name}", []).append(json.loads(cost_file.read_text())["cpu_s"])
        return res

    shared_bc = None
    if exp["shared_bc"]:
        raw_b = copy.deepcopy(raw)
        raw_b["seed"] = int(exp["bc_seed"])
        log(f"shared BC (training seed {exp['bc_seed']}), the start of every seed's SFT")
        timed_run("shared BC", out / f"bc_shared_seed{exp['bc_seed']}", [_stage(raw, "bc")], None, raw_b)
        shared_bc = final_checkpoint(out / f"bc_shared_seed{exp['bc_seed']}", "bc")
    for seed in args.seeds:
        raw_s = copy.deepcopy(raw)
        raw_s["seed"] = seed
        sd = out / f"seed{seed}"
        job += 1
        if shared_bc is None:
            log(f"[{job}/{n_jobs}] seed {seed}: base (bc, sft1)")
            timed_run("base (bc + sft1)", sd / "base", [_stage(raw, "bc"), _stage(raw, "sft1")], None, raw_s)
        else:
            log(f"[{job}/{n_jobs}] seed {seed}: base (sft1 from the shared BC)")
            timed_run("base (sft1)", sd / "base", [_stage(raw, "sft1")], str(shared_bc), raw_s)
        sft_ckpt = final_checkpoint(sd / "base", "sft1")
        sft_val = json.loads((sd / "base" / "evaluation.json").read_text()).get("sft1", {}).get("metametric", float("nan"))
        if float(exp["min_sft_meta"]) > 0 and not sft_val >= float(exp["min_sft_meta"]):
            raise SystemExit(f"{sd / 'base'}: the SFT checkpoint's validation realism meta {sft_val:.4f} is below "
                             f"experiment.min_sft_meta = {exp['min_sft_meta']}: train a better base (more BC) before the arms, "
                             "or pass --set experiment.min_sft_meta=0 to run them anyway")
        for arm, stage_list in stages.items():
            job += 1
            log(f"[{job}/{n_jobs}] seed {seed}: {arm}")
            ev = timed_run(f"arm ({arm})", sd / arm, stage_list, str(sft_ckpt), raw_s)
            validation[arm][seed] = ev.get(stage_list[-1]["name"], {})
        # Final scoring on the test split (each cached on its own).
        for arm, ckpt in [("sft_checkpoint", sft_ckpt)] + [(a, final_checkpoint(sd / a, s[-1]["name"])) for a, s in stages.items()]:
            path = (sd / "base" if arm == "sft_checkpoint" else sd / arm) / f"test-{score_tag}.json"
            t0 = time.perf_counter()
            fresh = not path.exists()
            test[arm][seed] = cached(path, score_tag, lambda: score_checkpoint_on_split(
                ckpt, cfg, test_split, data.vocab, int(exp["test_rollouts"]), int(exp["rollout_seed"]), backend, log))
            costs.setdefault("test scoring, one checkpoint", []).append(json.loads(path.read_text())["cpu_s"])
            if fresh:
                log(f"  scored {arm} on the test split: meta {np.mean([r['metametric'] for r in test[arm][seed]]):.4f} "
                    f"({time.perf_counter() - t0:.0f} s wall)")

    from smart_r1.eval.sources import BaselineSource, CheckpointSource

    log("oracle on the test split")
    oracle = cached(out / f"oracle-test-{score_tag}.json", score_tag, lambda: score_source_on_scenes(
        BaselineSource("oracle"), test_split.scenes, int(exp["test_rollouts"]), int(exp["rollout_seed"]), backend))
    real: dict[str, dict[int, list[dict]]] = {}
    if not args.skip_real:
        from smart_r1.data.scenario_io import iter_scenes

        real_scenes = list(iter_scenes(str(REAL_SCENE)))
        from smart_r1.eval.evaluate import make_backend

        rb = make_backend(exp["real_backend"], int(exp["real_rollouts"]))  # official: n_rollouts checked
        k = int(dict(cfg.eval.sampler_params).get("k", 5))
        real_tag = _tag({"R": int(exp["real_rollouts"]), "backend": exp["real_backend"], "k": k, "rs": int(exp["rollout_seed"])})
        for b in ("constant_velocity", "log_replay"):
            real[f"baseline: {b}"] = {0: cached(out / f"real-{b}-{real_tag}.json", real_tag, lambda: score_source_on_scenes(
                BaselineSource(b), real_scenes, int(exp["real_rollouts"]), int(exp["rollout_seed"]), rb))}
        for arm in ["sft_checkpoint"] + list(stages):
            per = {}
            for seed in args.seeds:
                sd = out / f"seed{seed}"
                run_dir = sd / "base" if arm == "sft_checkpoint" else sd / arm
                ckpt = final_checkpoint(run_dir, "sft1" if arm == "sft_checkpoint" else stages[arm][-1]["name"])
                if not (run_dir / f"real-{real_tag}.json").exists():
                    log(f"  real WOMD scene: seed {seed} {arm}")
                per[seed] = cached(run_dir / f"real-{real_tag}.json", real_tag, lambda: score_source_on_scenes(
                    CheckpointSource(str(ckpt), top_k=k), real_scenes, int(exp["real_rollouts"]), int(exp["rollout_seed"]), rb))
            real[arm] = per
        log("real WOMD scene scored")

    for what, pattern in (("oracle on the test split", f"oracle-test-{score_tag}.json"),
                          ("real WOMD scene, one policy", "seed*/*/real-*.json")):
        for f in out.glob(pattern):
            costs.setdefault(what, []).append(json.loads(f.read_text()).get("cpu_s", float("nan")))
    header = (f"{args.label + ' — ' if args.label else ''}config `{args.config}`"
              f"{' ' + ' '.join('--set ' + o for o in args.overrides) if args.overrides else ''}: model `{cfg.model.preset}`, "
              f"{len(data.train)} train / {len(data.val)} validation / {len(test_split)} test scenes (profile `{cfg.data.synthetic.profile}`), "
              f"RFT {_stage(raw, 'rft')['steps']} steps x {_stage(raw, 'rft')['params'].get('n_rollout')} rollouts, "
              f"test scoring {exp['test_rollouts']} rollouts ({cfg.eval.backend} backend).")
    mean_costs = {k: float(np.mean(v)) for k, v in costs.items()}
    md, summary = build_report(test, oracle, real, exp, header, validation, mean_costs)
    summary["costs_cpu_s"] = mean_costs
    summary["rft_steps"] = _stage(raw, "rft")["steps"]
    (out / "report.md").write_text(md)
    (out / "summary.json").write_text(json.dumps(summary, indent=1))
    title = (f"{args.label + ': ' if args.label else ''}paired Δ vs SFT continued, {int(exp['ci_level'] * 100)}% bootstrap CI; "
             f"`{cfg.model.preset}`, seeds {args.seeds}, {len(test_split)} test scenes x {exp['test_rollouts']} rollouts")
    plot_deltas(summary, Path(args.plot or out / "deltas.png"), title)
    if args.write_docs:
        Path(args.write_docs).write_text(md)
    print(md)
    log(f"done; CPU {cpu_seconds() - t_start:.0f} s in this process")
    return 0


if __name__ == "__main__":
    sys.exit(main())
