"""The paper-tables experiment (SMART-R1 tables 3-6) on the synthetic benchmark.

    .venv/bin/python -m experiments.paper_tables --config configs/cpu_demo.yaml --seeds 0 1 2 \
        --out .smart_r1_runs/paper_tables --write-docs docs/results.md

Per training seed (the data and the held-out split are fixed by `data.synthetic.seed`):

1. `base`: stages [bc, sft1] of the config -> rows "BC" (base) and "BC+SFT";
2. branches that start from the sft1 checkpoint (`init_from`):
   - `sft_sft`  [sft2]            -> "BC+SFT+SFT"
   - `rft_mpo`  [rft(mpo), sft2]  -> "BC+SFT+RFT", "BC+SFT+RFT+SFT" (and MPO / alpha=c / beta=0.04 rows)
   - `rft_grpo`, `rft_dpo`, `rft_ppo` [rft(method)] -> table 4
   - `alpha_lo`, `alpha_hi` [rft(mpo, alpha = c -+ delta)] -> table 5 (c = calibrated mean reward)
   - `beta_0.004`, `beta_0.4` [rft(mpo, beta)] -> table 6
Every run evaluates on the same held-out scenes with the same rollout seed. Results are
aggregated as mean +- std over seeds. Finished runs are skipped on re-run (their
`evaluation.json` is read back), so the script can be interrupted and continued.
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
import time
from pathlib import Path

import numpy as np

from smart_r1.metrics.base import GROUPS, LIKELIHOOD_FIELDS
from smart_r1.train.config import config_from_dict, load_config, resolved_dict
from smart_r1.train.pipeline import prepare_data, run_pipeline

MAIN_COLS = [("metametric", "realism meta ↑"), ("kinematic_metrics", "kinematic ↑"), ("interactive_metrics", "interactive ↑"),
             ("map_based_metrics", "map ↑"), ("min_average_displacement_error", "minADE ↓"),
             ("guard/distance_ratio", "dist. / log"), ("guard/frozen_fraction", "frozen")]
SUB_COLS = [(k, k.replace("_likelihood", "").replace("_", " ")) for k in LIKELIHOOD_FIELDS]


def _stage(raw: dict, name: str) -> dict:
    for s in raw["stages"]:
        if s["name"] == name:
            return copy.deepcopy(s)
    raise KeyError(f"config has no stage {name!r} (needs bc, sft1, rft, sft2)")


def branches(raw: dict, alpha_delta: float) -> dict[str, list[dict]]:
    rft = _stage(raw, "rft")
    sft2 = _stage(raw, "sft2")
    common = {k: v for k, v in rft["params"].items() if k in ("n_rollout", "sampler", "sampler_params", "backend", "reward")}

    def rft_with(objective: str, **params):
        s = copy.deepcopy(rft)
        s["objective"] = objective
        s["params"] = dict(common, **params) if objective != "mpo" else dict(rft["params"], **params)
        return s

    return {
        "sft_sft": [sft2],
        "rft_mpo": [rft, sft2],
        "rft_grpo": [rft_with("grpo", beta=rft["params"].get("beta", 0.04))],
        "rft_dpo": [rft_with("dpo")],
        "rft_ppo": [rft_with("ppo")],
        "alpha_lo": [rft_with("mpo", alpha="calibrate", alpha_offset=-alpha_delta)],
        "alpha_hi": [rft_with("mpo", alpha="calibrate", alpha_offset=alpha_delta)],
        "beta_0.004": [rft_with("mpo", beta=0.004)],
        "beta_0.4": [rft_with("mpo", beta=0.4)],
        # Not in the paper: MPO with a per-scene leave-one-out baseline instead of the global alpha.
        "mpo_group_mean": [rft_with("mpo", advantage="group_mean")],
        # Not in the paper: GRPO on the leave-one-out reward (each rollout's contribution to the
        # 8-rollout distribution metric) instead of each rollout scored alone.
        "grpo_loo": [rft_with("grpo", beta=rft["params"].get("beta", 0.04), reward="leave_one_out")],
    }


def run_one(raw: dict, stages: list[dict], out: Path, data, init_from: str | None, log) -> dict:
    done = out / "evaluation.json"
    if done.exists():
        return json.loads(done.read_text())
    r = copy.deepcopy(raw)
    r["stages"] = stages
    r["output_dir"] = str(out)
    r["init_from"] = init_from
    r["progress"] = False
    r["tracking"] = {"enabled": False}
    cfg = config_from_dict(r, str(out))
    t0 = time.perf_counter()
    res = run_pipeline(cfg, data=data, resume=True)
    log(f"  {out.name}: {time.perf_counter() - t0:.0f} s, " + ", ".join(
        f"{k}: meta {v.get('metametric', float('nan')):.4f} minADE {v.get('min_average_displacement_error', float('nan')):.3f}"
        for k, v in res.evaluations.items()))
    return res.evaluations


def reevaluate(raw: dict, out: Path, seeds: list[int], data, log) -> None:
    """Re-score every finished run's stage checkpoints with the current `evaluate` and the
    config's `eval:` section (e.g. `--set eval.n_rollout=32`), so every row of every table is
    measured by the same code, rollouts and seed. The training-time numbers are kept in
    `evaluation.train.json`; each checkpoint's result is cached in `reeval/` (resumable)."""
    import torch

    from smart_r1.train.checkpoint import Checkpoint
    from smart_r1.train.loop import evaluate
    from smart_r1.train.pipeline import build_model_for

    cfg = config_from_dict(copy.deepcopy(raw), "<reevaluate>")
    if cfg.num_threads:
        torch.set_num_threads(cfg.num_threads)
    tag = json.dumps(resolved_dict(cfg)["eval"], sort_keys=True)
    for seed in seeds:
        for run_dir in sorted((out / f"seed{seed}").glob("*/")):
            done = run_dir / "evaluation.json"
            if not done.exists():
                continue
            train_copy = run_dir / "evaluation.train.json"
            if not train_copy.exists():
                train_copy.write_text(done.read_text())
            stages = list(json.loads(train_copy.read_text()))
            result = {}
            for stage in stages:
                ckpts = sorted((run_dir / "checkpoints").glob(f"[0-9][0-9]_{stage}.pt"))
                if not ckpts:
                    raise FileNotFoundError(f"{run_dir}: no stage checkpoint for {stage!r}")
                cache = run_dir / "reeval" / f"{ckpts[-1].stem}.json"
                if cache.exists() and json.loads(cache.read_text()).get("eval_config") == tag:
                    result[stage] = json.loads(cache.read_text())["metrics"]
                    continue
                model = build_model_for(cfg, data.vocab)
                model.load_state_dict(Checkpoint.load(ckpts[-1]).model)
                t0 = time.perf_counter()
                ev = evaluate(model, data.val, data.vocab, cfg.eval, seed, cfg.data.max_train_agents, cfg.data.train_radius_m)
                cache.parent.mkdir(exist_ok=True)
                cache.write_text(json.dumps({"eval_config": tag, "metrics": ev}, indent=1))
                result[stage] = ev
                log(f"  reevaluated seed{seed}/{run_dir.name}/{stage}: meta {ev['metametric']:.4f} "
                    f"minADE {ev['min_average_displacement_error']:.3f} ({time.perf_counter() - t0:.0f} s)")
            done.write_text(json.dumps(result, indent=1))


def rows_for_seed(results: dict[str, dict]) -> dict[str, dict[str, dict]]:
    """Map runs/stages to the table rows of the paper (rows whose run is missing are left out)."""
    spec = {
        "table3": [("BC (base)", "base", "bc"), ("BC + SFT", "base", "sft1"), ("BC + SFT + SFT", "sft_sft", "sft2"),
                   ("BC + SFT + RFT", "rft_mpo", "rft"), ("BC + SFT + RFT + SFT", "rft_mpo", "sft2")],
        "table4": [("SFT (no RFT)", "base", "sft1"), ("w/ PPO", "rft_ppo", "rft"), ("w/ DPO", "rft_dpo", "rft"),
                   ("w/ GRPO", "rft_grpo", "rft"), ("w/ MPO", "rft_mpo", "rft"),
                   ("w/ MPO, group-mean baseline (not in the paper)", "mpo_group_mean", "rft"),
                   ("w/ GRPO, leave-one-out reward (not in the paper)", "grpo_loo", "rft")],
        "table5": [("alpha = c - d", "alpha_lo", "rft"), ("alpha = c", "rft_mpo", "rft"), ("alpha = c + d", "alpha_hi", "rft")],
        "table6": [("beta = 0.004", "beta_0.004", "rft"), ("beta = 0.04", "rft_mpo", "rft"), ("beta = 0.4", "beta_0.4", "rft")],
    }
    out: dict[str, dict[str, dict]] = {}
    for table, rows in spec.items():
        got = {label: results[run][stage] for label, run, stage in rows if run in results and stage in results[run]}
        if len(got) > 1:
            out[table] = got
    return out


def _fmt(values: list[float]) -> str:
    v = np.asarray(values, float)
    if len(v) == 1:
        return f"{v[0]:.4f}"
    return f"{v.mean():.4f} ± {v.std(ddof=1):.4f}"


def markdown_tables(per_seed: list[dict[str, dict[str, dict]]], titles: dict[str, str]) -> str:
    lines = []
    for table, title in titles.items():
        if table not in per_seed[0]:
            continue
        rows = per_seed[0][table].keys()
        for cols, suffix in ((MAIN_COLS, ""), (SUB_COLS, " — sub-metrics")):
            lines.append(f"### {title}{suffix}\n")
            lines.append("| | " + " | ".join(c for _, c in cols) + " |")
            lines.append("|---|" + "---|" * len(cols))
            for row in rows:
                cells = [_fmt([s[table][row].get(k, float("nan")) for s in per_seed]) for k, _ in cols]
                lines.append(f"| {row} | " + " | ".join(cells) + " |")
            lines.append("")
    return "\n".join(lines)


RFT_RUNS = ["rft_mpo", "rft_grpo", "rft_dpo", "rft_ppo", "alpha_lo", "alpha_hi", "beta_0.004", "beta_0.4", "mpo_group_mean", "grpo_loo"]


def rft_history(run_dir: Path) -> list[dict]:
    """The per-step records of the run's RFT stage (from its stage checkpoint)."""
    from smart_r1.train.checkpoint import Checkpoint

    path = run_dir / "checkpoints" / "00_rft.pt"
    if not path.exists():
        return []
    return [h for h in Checkpoint.load(path).history if h.get("stage") == "rft"]


def rft_diagnostics(out: Path, seeds: list[str]) -> tuple[str, dict[str, dict[str, list[float]]]]:
    """Markdown table: per RFT run, what the training batches saw (mean +- std over seeds):
    alpha, training reward in the first and last third of the steps, share of steps whose mean
    advantage is negative, per-token KL to the reference at the end, distance travelled / log."""
    curves: dict[str, dict[str, list[float]]] = {}
    lines = ["| run | alpha | reward, first third | reward, last third | steps with mean A < 0 | KL (last 4 steps) | dist. / log (last third) |",
             "|---|---|---|---|---|---|---|"]
    for run in RFT_RUNS:
        cols: dict[str, list[float]] = {k: [] for k in ("alpha", "r0", "r1", "neg", "kl", "dist")}
        per_seed_curve = []
        for sd in seeds:
            h = rft_history(out / sd / run)
            if not h:
                continue
            n = len(h)
            third = max(1, n // 3)
            r = [x.get("reward/mean", float("nan")) for x in h]
            per_seed_curve.append(r)
            cols["alpha"].append(h[-1].get("alpha", float("nan")))
            cols["r0"].append(float(np.nanmean(r[:third])))
            cols["r1"].append(float(np.nanmean(r[-third:])))
            adv = [x.get("advantage/mean", float("nan")) for x in h]
            cols["neg"].append(float(np.mean([a < 0 for a in adv if np.isfinite(a)])) if any(np.isfinite(adv)) else float("nan"))
            cols["kl"].append(float(np.nanmean([x.get("kl", float("nan")) for x in h[-4:]])))
            cols["dist"].append(float(np.nanmean([x.get("guard/distance_ratio", float("nan")) for x in h[-third:]])))
        if not per_seed_curve:
            continue
        curves[run] = {"reward": list(np.nanmean(np.array(per_seed_curve, float), axis=0))}
        fmt = lambda v: "—" if not v or not np.isfinite(v).any() else _fmt(v)  # noqa: E731  (not applicable to this objective)
        lines.append(f"| {run} | " + " | ".join(fmt(cols[k]) for k in ("alpha", "r0", "r1", "neg", "kl", "dist")) + " |")
    return "\n".join(lines) + "\n", curves


def paired_deltas(all_results: dict[str, dict], seeds: list[str]) -> str:
    """Markdown: every row's realism-meta and minADE difference to BC + SFT of the *same* seed
    (the shared BC / SFT checkpoint removes the seed-to-seed spread of the starting point),
    mean ± standard error over seeds, and in how many seeds the row beats BC + SFT."""
    per_seed = {n: rows_for_seed(all_results[n]) for n in seeds}
    ref = {n: all_results[n]["base"]["sft1"] for n in seeds if "sft1" in all_results[n].get("base", {})}
    lines = ["| row | Δ realism meta vs BC + SFT | seeds better | Δ minADE (m) | seeds with n |",
             "|---|---|---|---|---|"]
    seen = set()
    for table in TITLES:
        for row in next((p[table] for p in per_seed.values() if table in p), {}):
            if row in seen or row in ("SFT (no RFT)", "BC + SFT"):
                continue
            seen.add(row)
            dm, da = [], []
            for n in seeds:
                ev = per_seed[n].get(table, {}).get(row)
                if ev is None or n not in ref:
                    continue
                dm.append(ev["metametric"] - ref[n]["metametric"])
                da.append(ev["min_average_displacement_error"] - ref[n]["min_average_displacement_error"])
            if not dm:
                continue
            se = lambda v: float(np.std(v, ddof=1) / np.sqrt(len(v))) if len(v) > 1 else float("nan")  # noqa: E731
            lines.append(f"| {row} | {np.mean(dm):+.4f} ± {se(dm):.4f} | {sum(d > 0 for d in dm)}/{len(dm)} | "
                         f"{np.mean(da):+.3f} ± {se(da):.3f} | {len(dm)} |")
    return "\n".join(lines) + "\n"


def plot_rft_curves(curves: dict[str, dict[str, list[float]]], path: Path) -> None:
    """Training-batch reward per RFT step (mean over seeds), one line per run."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    for run, c in curves.items():
        ax.plot(range(len(c["reward"])), c["reward"], label=run, lw=1.5 if run == "rft_mpo" else 1.0)
    ax.set_xlabel("RFT step")
    ax.set_ylabel("training-batch reward (mean over seeds)")
    ax.set_title("RFT: reward of the rolled-out training batches")
    ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


TITLES = {
    "table3": "Table 3 — post-training schedule",
    "table4": "Table 4 — RFT method",
    "table5": "Table 5 — MPO threshold alpha (c = calibrated mean reward of the SFT policy)",
    "table6": "Table 6 — KL coefficient beta",
}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", default="configs/cpu_demo.yaml")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--out", default=".smart_r1_runs/paper_tables")
    ap.add_argument("--set", dest="overrides", action="append", default=[], help="config override key=value")
    ap.add_argument("--alpha-delta", type=float, default=0.01, help="alpha sweep: c - d, c, c + d")
    ap.add_argument("--only", nargs="*", default=None, help="branch names to run (default all)")
    ap.add_argument("--write-docs", default=None, help="write the tables (markdown) to this file")
    ap.add_argument("--reevaluate", action="store_true",
                    help="re-score every finished run's stage checkpoints with the current eval config (no training)")
    ap.add_argument("--plot", default=None, help="with --aggregate-only: write the RFT reward curves (PNG) here")
    ap.add_argument("--aggregate-only", action="store_true", help="only rebuild the tables from <out>/results.json")
    args = ap.parse_args(argv)
    if args.aggregate_only:
        # Every finished run of every seed directory (also those of a still-running seed).
        all_results = {}
        for sd in sorted(Path(args.out).glob("seed*")):
            runs = {p.parent.name: json.loads(p.read_text()) for p in sd.glob("*/evaluation.json")}
            if "base" in runs:
                all_results[sd.name] = runs
        per_seed_all = {name: rows_for_seed(r) for name, r in all_results.items()}
        lines = []
        for table, title in TITLES.items():
            # Seeds that have every row of this table (the full row set seen in any seed).
            full = max((set(p.get(table, {})) for p in per_seed_all.values()), key=len, default=set())
            seeds = [n for n, p in per_seed_all.items() if set(p.get(table, {})) >= full and full]
            if not seeds:
                continue
            sub = [{table: {k: per_seed_all[n][table][k] for k in per_seed_all[seeds[0]][table] if k in full}} for n in seeds]
            lines.append(f"Seeds: {', '.join(seeds)}\n")
            lines.append(markdown_tables(sub, {table: title}))
        lines.append("### Paired differences to BC + SFT (same seed; mean ± standard error over seeds)\n")
        lines.append(paired_deltas(all_results, list(all_results)))
        diag, curves = rft_diagnostics(Path(args.out), list(all_results))
        if curves:
            lines.append("### RFT diagnostics — what the training batches saw (mean ± std over seeds)\n")
            lines.append(diag)
            if args.plot:
                plot_rft_curves(curves, Path(args.plot))
        md = "\n".join(lines)
        (Path(args.out) / "tables.md").write_text(md)
        print(f"seeds: {list(all_results)}")
        print(md)
        if args.write_docs:
            Path(args.write_docs).write_text(md)
        return 0
        print(f"seeds: {list(all_results)}")
        md = markdown_tables(per_seed, TITLES)
        (Path(args.out) / "tables.md").write_text(md)
        print(md)
        if args.write_docs:
            Path(args.write_docs).write_text(md)
        return 0

    cfg = load_config(args.config, args.overrides)
    raw = resolved_dict(cfg)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    logf = open(out / "log.txt", "a")

    def log(msg: str) -> None:
        print(msg, flush=True)
        logf.write(msg + "\n")
        logf.flush()

    t_all = time.perf_counter()
    data = prepare_data(cfg, out / "data")
    log(f"data: {len(data.train)} train / {len(data.val)} held-out scenes, vocab {data.vocab.vocab_id}")
    if args.reevaluate:
        reevaluate(raw, out, args.seeds, data, log)
        return 0
    per_seed, all_results = [], {}
    for seed in args.seeds:
        raw_s = copy.deepcopy(raw)
        raw_s["seed"] = seed
        sd = out / f"seed{seed}"
        log(f"seed {seed}")
        results = {"base": run_one(raw_s, [_stage(raw, "bc"), _stage(raw, "sft1")], sd / "base", data, None, log)}
        init = str(sd / "base" / "checkpoints" / "01_sft1.pt")
        for name, stages in branches(raw, args.alpha_delta).items():
            if args.only and name not in args.only:
                continue
            results[name] = run_one(raw_s, stages, sd / name, data, init, log)
        all_results[seed] = results
        (out / "results.json").write_text(json.dumps(all_results, indent=1))
        per_seed.append(rows_for_seed(results))
    log(f"total {time.perf_counter() - t_all:.0f} s")
    if per_seed:
        md = markdown_tables(per_seed, TITLES)
        (out / "tables.md").write_text(md)
        print(md)
        if args.write_docs:
            Path(args.write_docs).write_text(md)
    return 0


if __name__ == "__main__":
    sys.exit(main())
