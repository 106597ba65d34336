"""Evaluation report: `report.md` + `report.html` with the leaderboard table (paper tables
1/2/7 columns + parameter count, best value per column in bold), per-metric bar charts
comparing the sources, logged-vs-simulated histograms (speed, acceleration, distance to the
nearest object) for one scene, and the worst scenes by meta metric with their renders.

Layout of the report folder:

    report.md, report.html
    figures/bars.png, figures/histograms_<scene>.png
    renders/<source>/<scene>_grid.png, renders/<source>/<scene>_rollout1.gif

Images are referenced relatively (the folder is self-contained); `embed_images=True` inlines
them into report.html as data URIs instead (one file to mail around).
"""

from __future__ import annotations

import base64
import html
import math
import os
import sys
import time
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np

from smart_r1.eval.evaluate import SCALAR_FIELDS, EvaluationResult, aggregate_rows, evaluate, find_scenes  # noqa: F401  (aggregate_rows: re-exported)
from smart_r1.metrics.leaderboard import COLUMNS

# Column of the report table: (field, header, higher_is_better)
TABLE_COLUMNS: tuple[tuple[str, str, bool], ...] = tuple(
    (k, h, k != "min_average_displacement_error") for k, h in COLUMNS
) + (("num_parameters", "Params", False),)
BOLD_EXEMPT = {"num_parameters"}  # informative, not a score
HIST_FEATURES = (
    ("linear_speed", "speed (m/s)", (0.0, 25.0)),
    ("linear_acceleration", "acceleration (m/s²)", (-12.0, 12.0)),
    ("distance_to_nearest_object", "distance to nearest object (m)", (-5.0, 40.0)),
)


# ----------------------------------------------------------------------------------------------
# numbers
# ----------------------------------------------------------------------------------------------


def best_values(table: Mapping[str, Mapping], digits: int = 4) -> dict[str, float]:
    """Best value of each column (max, minADE: min) at display precision."""
    best = {}
    for key, _, higher in TABLE_COLUMNS:
        if key in BOLD_EXEMPT:
            continue
        vals = [round(float(r[key]), digits) for r in table.values() if r.get(key) is not None and not math.isnan(float(r[key]))]
        if vals:
            best[key] = max(vals) if higher else min(vals)
    return best


def _fmt(key: str, value, digits: int) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    if key == "num_parameters":
        v = int(value)
        return "0" if v == 0 else (f"{v / 1e6:.2f}M" if v >= 1e5 else f"{v:,}")
    return f"{float(value):.{digits}f}"


def table_cells(table: Mapping[str, Mapping], digits: int = 4) -> tuple[list[str], list[list[tuple[str, bool]]]]:
    """Headers and rows of (text, is_best) cells."""
    best = best_values(table, digits)
    headers = ["Model"] + [h for _, h, _ in TABLE_COLUMNS] + ["Scenes"]
    rows = []
    for name, r in table.items():
        cells = [(str(name), False)]
        for key, _, _ in TABLE_COLUMNS:
            v = r.get(key)
            is_best = key in best and v is not None and not math.isnan(float(v)) and round(float(v), digits) == best[key]
            cells.append((_fmt(key, v, digits), is_best))
        cells.append((str(r.get("n_scenes", "-")), False))
        rows.append(cells)
    return headers, rows


def markdown_table(table: Mapping[str, Mapping], digits: int = 4) -> str:
    headers, rows = table_cells(table, digits)
    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join(["---"] + ["---:"] * (len(headers) - 1)) + "|"]
    for cells in rows:
        lines.append("| " + " | ".join(f"**{t}**" if b else t.replace("|", "\\|") for t, b in cells) + " |")
    return "\n".join(lines)


def html_table(table: Mapping[str, Mapping], digits: int = 4) -> str:
    headers, rows = table_cells(table, digits)
    out = ['<table class="leaderboard">', "<thead><tr>" + "".join(f"<th>{html.escape(h)}</th>" for h in headers) + "</tr></thead>", "<tbody>"]
    for cells in rows:
        tds = []
        for i, (t, b) in enumerate(cells):
            text = html.escape(t)
            tds.append(f'<td class="{"name" if i == 0 else "num"}">' + (f"<b>{text}</b>" if b else text) + "</td>")
        out.append("<tr>" + "".join(tds) + "</tr>")
    out.append("</tbody></table>")
    return "\n".join(out)


# ----------------------------------------------------------------------------------------------
# figures
# ----------------------------------------------------------------------------------------------


def _figure(**kw):
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(**kw)
    FigureCanvasAgg(fig)
    return fig


def bar_charts(table: Mapping[str, Mapping], out_path: Path, dpi: int = 80) -> Path:
    """One small bar chart per metric (meta, 3 groups, 10 sub-metrics, minADE), bars = sources."""
    keys = [(k, h) for k, h, _ in TABLE_COLUMNS if k not in BOLD_EXEMPT]
    names = list(table)
    ncol = 5
    nrow = math.ceil(len(keys) / ncol)
    fig = _figure(figsize=(3.0 * ncol, 2.4 * nrow), dpi=dpi)
    colours = [f"C{i % 10}" for i in range(len(names))]
    for i, (key, header) in enumerate(keys):
        ax = fig.add_subplot(nrow, ncol, i + 1)
        vals = np.array([float(table[n][key]) for n in names])  # [n_source]
        ax.bar(np.arange(len(names)), vals, color=colours)
        ax.set_title(header, fontsize=9)
        ax.set_xticks(np.arange(len(names)))
        ax.set_xticklabels([str(j + 1) for j in range(len(names))], fontsize=7)
        ax.tick_params(axis="y", labelsize=7)
        if key != "min_average_displacement_error":
            lo = max(0.0, float(np.nanmin(vals)) - 0.1)
            ax.set_ylim(lo, min(1.0, float(np.nanmax(vals)) + 0.05) if np.isfinite(vals).any() else 1.0)
        best = int(np.nanargmin(vals) if key == "min_average_displacement_error" else np.nanargmax(vals)) if np.isfinite(vals).any() else None
        if best is not None:
            ax.patches[best].set_edgecolor("black")
            ax.patches[best].set_linewidth(1.5)
    from matplotlib.patches import Patch

    fig.legend(
        [Patch(color=c) for c in colours], [f"{j + 1}: {n}" for j, n in enumerate(names)],
        loc="lower center", ncol=min(len(names), 4), fontsize=8, frameon=False,
    )
    fig.tight_layout(rect=(0, 0.06 + 0.02 * math.ceil(len(names) / 4), 1, 1))
    out_path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out_path, dpi=dpi)
    return out_path


def feature_samples(scene, rollouts) -> dict[str, dict[str, np.ndarray]]:
    """Logged and simulated values of the histogram features over the evaluated agents' future
    steps (fast-backend features; log masked by its validity like the metrics).
    -> {"log": {feature: [n]}, "sim": {feature: [m]}}"""
    from smart_r1.metrics.fast import FastBackend

    backend = FastBackend(device="cpu", per_rollout=False)
    res = backend.score_detailed(scene, rollouts, keep_features=True)
    feats = res.features  # name -> [R + 1, E, 80] (log last)
    cur = scene.current_time_index
    row_of = {int(a): i for i, a in enumerate(scene.agent_id)}
    rows = np.asarray([row_of[int(a)] for a in scene.eval_agent_ids()], np.int64)  # [E]
    valid = scene.agent_valid[rows, cur + 1 :]  # [E, 80]
    speed_valid = np.zeros_like(valid)
    speed_valid[:, 1:-1] = valid[:, 2:] & valid[:, :-2]
    accel_valid = np.zeros_like(valid)
    accel_valid[:, 1:-1] = speed_valid[:, 2:] & speed_valid[:, :-2]
    masks = {"linear_speed": speed_valid, "linear_acceleration": accel_valid, "distance_to_nearest_object": valid}
    out = {"log": {}, "sim": {}}
    for name, _, _ in HIST_FEATURES:
        x = feats[name]  # [R + 1, E, 80]
        log = x[-1][masks[name]]
        sim = x[:-1].reshape(-1)
        ok = lambda v: v[np.isfinite(v) & (np.abs(v) < 1e9)]  # noqa: E731
        out["log"][name] = ok(log)
        out["sim"][name] = ok(sim)
    return out


def histograms(samples: Mapping[str, Mapping], scenario_id: str, out_path: Path, dpi: int = 80) -> Path:
    """Logged vs simulated distributions. `samples`: source -> feature_samples(...) output."""
    fig = _figure(figsize=(4.2 * len(HIST_FEATURES), 3.2), dpi=dpi)
    for i, (name, label, (lo, hi)) in enumerate(HIST_FEATURES):
        ax = fig.add_subplot(1, len(HIST_FEATURES), i + 1)
        bins = np.linspace(lo, hi, 31)
        first = next(iter(samples.values()))
        ax.hist(np.clip(first["log"][name], lo, hi), bins=bins, density=True, color="#999999", alpha=0.6, label="log")
        for j, (src, s) in enumerate(samples.items()):
            ax.hist(np.clip(s["sim"][name], lo, hi), bins=bins, density=True, histtype="step", linewidth=1.6, color=f"C{j % 10}", label=src)
        ax.set_xlabel(label, fontsize=9)
        ax.tick_params(labelsize=7)
        if i == 0:
            ax.set_ylabel("density", fontsize=9)
            ax.legend(fontsize=7, frameon=False)
    fig.suptitle(f"logged vs simulated, scene {scenario_id}", fontsize=10)
    fig.tight_layout()
    out_path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out_path, dpi=dpi)
    return out_path


# ----------------------------------------------------------------------------------------------
# the report
# ----------------------------------------------------------------------------------------------


def _img_src(path: Path, root: Path, embed: bool) -> str:
    if embed:
        mime = "image/gif" if path.suffix == ".gif" else "image/png"
        return f"data:{mime};base64," + base64.b64encode(path.read_bytes()).decode()
    return path.relative_to(root).as_posix()


_CSS = """
body { font-family: -apple-system, 'Segoe UI', Helvetica, Arial, sans-serif; margin: 24px; color: #1d1f24; background: #fff; }
h1 { font-size: 22px; } h2 { font-size: 18px; margin-top: 28px; border-bottom: 1px solid #ddd; padding-bottom: 4px; }
table.leaderboard { border-collapse: collapse; font-size: 12px; }
table.leaderboard th, table.leaderboard td { border: 1px solid #ccc; padding: 3px 6px; }
table.leaderboard th { background: #2f7bf5; color: white; }
table.leaderboard td.num { text-align: right; font-variant-numeric: tabular-nums; }
table.leaderboard tr:nth-child(even) { background: #f3f6fb; }
table.worst { border-collapse: collapse; font-size: 12px; margin-bottom: 8px; }
table.worst td, table.worst th { border: 1px solid #ddd; padding: 2px 6px; }
img { max-width: 100%; } .renders img { margin: 4px; vertical-align: top; }
.meta { color: #555; font-size: 12px; }
"""


def build_report(
    result,
    scenes,
    out_dir,
    backend: str = "fast",
    num_rollouts: int = 32,
    seed: int = 0,
    worst_k: int = 5,
    hist_scene: str | None = None,
    render: bool = True,
    gif: bool = True,
    frame_px: int = 240,
    grid_rollouts: int = 3,
    gif_steps: Sequence[int] | None = None,
    hist_rollouts: int | None = None,
    embed_images: bool = False,
    progress: bool = True,
    title: str = "smart-r1 evaluation",
) -> Path:
    """Write the report folder `<out_dir>/report` for an `EvaluationResult`. Returns the folder."""
    from tqdm import tqdm

    from smart_r1.eval.sources import slug
    from smart_r1.viz.pipeline import render_scene_outputs
    from smart_r1.viz.render import RenderConfig

    root = Path(out_dir) / "report"
    fig_dir = root / "figures"
    fig_dir.mkdir(parents=True, exist_ok=True)
    order = [s.name for s in result.sources]
    sources = {s.name: s for s in result.sources}
    rows = result.rows
    table = aggregate_rows(rows, order)
    for name in table:
        table[name]["num_parameters"] = sources[name].num_parameters()
    scored_ids = {r["scenario_id"] for r in rows}

    # ---- figures ----
    bars = bar_charts(table, fig_dir / "bars.png")
    all_ids = [r["scenario_id"] for r in rows]
    if hist_scene is None:
        hist_scene = all_ids[0] if all_ids else None
    elif hist_scene not in scored_ids:
        raise LookupError(f"report: histogram scene {hist_scene!r} was not scored (scored: {sorted(scored_ids)[:5]}...)")
    worst: dict[str, list[dict]] = {}
    for name in table:
        mine = sorted((r for r in rows if r["source"] == name), key=lambda r: r["metametric"])
        worst[name] = mine[:worst_k]
    need = {hist_scene} | {r["scenario_id"] for w in worst.values() for r in w} if render else {hist_scene}
    scene_of = find_scenes(scenes, {i for i in need if i})

    hist_path = None
    if hist_scene and hist_scene in scene_of:
        samples = {}
        scene = scene_of[hist_scene]
        for name in table:
            src = sources[name]
            if not src.covers(scene):
                continue
            ro = src.rollouts(scene, hist_rollouts or num_rollouts, seed)
            samples[name] = feature_samples(scene, ro)
        if samples:
            hist_path = histograms(samples, hist_scene, fig_dir / f"histograms_{slug(hist_scene)}.png")

    renders: dict[str, dict[str, list[Path]]] = {}
    if render:
        jobs = [(name, r["scenario_id"]) for name, w in worst.items() for r in w]
        config = RenderConfig(frame_px=frame_px)
        for name, sid in tqdm(jobs, desc="renders", unit="scene", disable=not progress, file=sys.stderr):
            scene = scene_of.get(sid)
            if scene is None:
                continue
            ro = sources[name].rollouts(scene, num_rollouts, seed)
            paths = render_scene_outputs(
                scene, ro, root / "renders" / slug(name), config=config, max_rollouts=grid_rollouts,
                gif=gif, gif_rollouts=1, gif_steps=gif_steps, prefix=slug(sid),
            )
            renders.setdefault(name, {})[sid] = paths

    # ---- text ----
    common = min((t["n_scenes"] for t in table.values()), default=0)
    n_total = len(scored_ids)
    stamp = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    meta_line = (
        f"backend `{backend}`, {num_rollouts} rollouts per scene, seed {seed}, {n_total} scene(s) scored"
        + (f", table over the {common} scene(s) every model was scored on" if common != n_total else "")
        + f"; generated {stamp}"
    )
    legend = "Best value per column in bold (likelihoods / meta: higher is better; minADE: lower is better)."
    cost = {}
    for n in order:
        mine = [r for r in rows if r["source"] == n]
        if mine:
            cost[n] = (float(np.mean([r["seconds_rollout"] for r in mine])), float(np.mean([r["seconds_score"] for r in mine])))
    sources_lines = [
        f"- **{n}**: {sources[n].kind} `{sources[n].spec}`"
        + (f" (per scene: rollouts {cost[n][0]:.2f} s, scoring {cost[n][1]:.2f} s)" if n in cost else "")
        for n in order
    ]
    extra_lines = []
    for name, ids in (result.uncovered or {}).items():
        extra_lines.append(f"- {name}: no rollouts for {len(ids)} scene(s) (e.g. {', '.join(ids[:3])})")
    for name, errs in (result.failed or {}).items():
        for sid, msg in list(errs.items())[:5]:
            extra_lines.append(f"- {name} failed on {sid}: {msg}")

    md = [f"# {title}", "", meta_line, "", "## Leaderboard", "", markdown_table(table), "", legend, "", "Models:", *sources_lines, ""]
    if extra_lines:
        md += ["Not scored:", *extra_lines, ""]
    md += ["## Metrics by model", "", f"![per-metric bar charts]({_img_src(bars, root, False)})", ""]
    if hist_path is not None:
        md += [f"## Logged vs simulated: scene `{hist_scene}`", "", f"![histograms]({_img_src(hist_path, root, False)})", ""]
    md += [f"## Worst {worst_k} scenes by realism meta metric", ""]
    for name, w in worst.items():
        md += [f"### {name}", "", "| Scene | Meta | Collision rate | Offroad rate | Red-light rate | minADE |", "|---|---:|---:|---:|---:|---:|"]
        for r in w:
            md.append(
                f"| {r['scenario_id']} | {r['metametric']:.4f} | {r['simulated_collision_rate']:.3f} | "
                f"{r['simulated_offroad_rate']:.3f} | {r['simulated_traffic_light_violation_rate']:.3f} | "
                f"{r['min_average_displacement_error']:.2f} |"
            )
        md.append("")
        for sid, paths in renders.get(name, {}).items():
            md.append(f"**{sid}**: " + " ".join(f"![{p.name}]({_img_src(p, root, False)})" for p in paths))
            md.append("")
    (root / "report.md").write_text("\n".join(md) + "\n")

    h = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>{html.escape(title)}</title>",
        f"<style>{_CSS}</style></head><body>",
        f"<h1>{html.escape(title)}</h1>",
        f'<p class="meta">{html.escape(meta_line.replace("`", ""))}</p>',
        "<h2>Leaderboard</h2>",
        html_table(table),
        f'<p class="meta">{html.escape(legend)}</p>',
        "<ul>"
        + "".join(
            f"<li><b>{html.escape(n)}</b>: {html.escape(sources[n].kind)} <code>{html.escape(sources[n].spec)}</code>"
            + (f" (per scene: rollouts {cost[n][0]:.2f} s, scoring {cost[n][1]:.2f} s)" if n in cost else "")
            + "</li>"
            for n in order
        )
        + "</ul>",
    ]
    if extra_lines:
        h.append("<p>Not scored:</p><ul>" + "".join(f"<li>{html.escape(x[2:])}</li>" for x in extra_lines) + "</ul>")
    h += ["<h2>Metrics by model</h2>", f'<img alt="per-metric bar charts" src="{_img_src(bars, root, embed_images)}">']
    if hist_path is not None:
        h += [f"<h2>Logged vs simulated: scene {html.escape(hist_scene)}</h2>", f'<img alt="histograms" src="{_img_src(hist_path, root, embed_images)}">']
    h.append(f"<h2>Worst {worst_k} scenes by realism meta metric</h2>")
    for name, w in worst.items():
        h.append(f"<h3>{html.escape(name)}</h3>")
        h.append('<table class="worst"><tr><th>Scene</th><th>Meta</th><th>Collision rate</th><th>Offroad rate</th><th>Red-light rate</th><th>minADE</th></tr>')
        for r in w:
            h.append(
                f"<tr><td>{html.escape(r['scenario_id'])}</td><td>{r['metametric']:.4f}</td><td>{r['simulated_collision_rate']:.3f}</td>"
                f"<td>{r['simulated_offroad_rate']:.3f}</td><td>{r['simulated_traffic_light_violation_rate']:.3f}</td>"
                f"<td>{r['min_average_displacement_error']:.2f}</td></tr>"
            )
        h.append("</table>")
        for sid, paths in renders.get(name, {}).items():
            h.append(f'<div class="renders"><p><b>{html.escape(sid)}</b></p>')
            h += [f'<img alt="{html.escape(p.name)}" src="{_img_src(p, root, embed_images)}">' for p in paths]
            h.append("</div>")
    h.append("</body></html>")
    (root / "report.html").write_text("\n".join(h) + "\n")
    return root


def evaluate_and_report(
    *args,
    report: bool = True,
    report_options: dict | None = None,
    evaluate_fn=evaluate,
    **kwargs,
) -> EvaluationResult:
    """`evaluate_fn(*args, **kwargs)` (default `smart_r1.eval.evaluate.evaluate`; e.g.
    `learner.distributed_eval.evaluate_distributed` for Ray), then, with `report` and rows to
    show, the report folder `<out_dir>/report` (`build_report(**report_options)`), also logged
    to the `tracker` when one is given. Data flows one way: evaluation knows nothing of the report."""
    scenes = kwargs.get("scenes", args[1] if len(args) > 1 else None)
    if scenes is not None and not isinstance(scenes, (str, os.PathLike, list, tuple)):
        scenes = list(scenes)  # an iterator: kept so the report can look the scenes up again
        if "scenes" in kwargs:
            kwargs["scenes"] = scenes
        else:
            args = (args[0], scenes) + tuple(args[2:])
    result = evaluate_fn(*args, **kwargs)
    out_dir = kwargs.get("out_dir", "eval_out")
    if report and out_dir is not None and result.rows:
        result.report_dir = build_report(
            result,
            scenes=scenes,
            out_dir=out_dir,
            backend=result.backend,
            num_rollouts=kwargs.get("num_rollouts", 32),
            seed=kwargs.get("seed", 0),
            progress=kwargs.get("progress", True),
            **dict(report_options or {}),
        )
        tracker = kwargs.get("tracker")
        if tracker is not None:
            tracker.log_artifact(result.report_dir, artifact_path="evaluation/report")
    return result

