"""Leaderboard-style tables of WOSAC results (the columns of the SMART-R1 paper's tables 1 and 7):
realism meta metric, the kinematic / interactive / map-based groups, the 10 sub-metric
likelihoods and minADE. Rows are `SceneScores.as_flat_dict()`-style dicts (official field names),
e.g. one per scene plus the `aggregate(...)` row."""

from __future__ import annotations

import io
import math
from typing import Mapping

from smart_r1.metrics.base import LIKELIHOOD_FIELDS

# (official field name, column header) in table order.
COLUMNS: tuple[tuple[str, str], ...] = (
    ("metametric", "Realism meta"),
    ("kinematic_metrics", "Kinematic"),
    ("interactive_metrics", "Interactive"),
    ("map_based_metrics", "Map-based"),
    ("linear_speed_likelihood", "Lin. speed"),
    ("linear_acceleration_likelihood", "Lin. accel."),
    ("angular_speed_likelihood", "Ang. speed"),
    ("angular_acceleration_likelihood", "Ang. accel."),
    ("distance_to_nearest_object_likelihood", "Dist. to obj."),
    ("collision_indication_likelihood", "Collision"),
    ("time_to_collision_likelihood", "TTC"),
    ("distance_to_road_edge_likelihood", "Dist. to edge"),
    ("offroad_indication_likelihood", "Offroad"),
    ("traffic_light_violation_likelihood", "Traffic light"),
    ("min_average_displacement_error", "minADE (m)"),
)
assert [c[0] for c in COLUMNS[4:14]] == list(LIKELIHOOD_FIELDS)


def _fmt(value, digits: int) -> str:
    if value is None:
        return "-"
    try:
        v = float(value)
    except (TypeError, ValueError):
        return str(value)
    return "nan" if math.isnan(v) else f"{v:.{digits}f}"


def leaderboard_table(rows: Mapping[str, Mapping], fmt: str = "markdown", digits: int = 4, title: str = "") -> str:
    """Rows (name -> flat result dict with official field names) as a table string.

    `fmt`: "markdown" (GitHub table) or "rich" (box-drawn text rendered by rich). Missing
    fields print as "-". Row order is the mapping's order.
    """
    if not rows:
        raise ValueError("leaderboard_table: no rows")
    headers = ["Scene"] + [h for _, h in COLUMNS]
    body = [[str(name)] + [_fmt(row.get(key), digits) for key, _ in COLUMNS] for name, row in rows.items()]
    if fmt == "markdown":
        lines = ["| " + " | ".join(headers) + " |", "|" + "|".join(["---"] + ["---:"] * len(COLUMNS)) + "|"]
        lines += ["| " + " | ".join(r) + " |" for r in body]
        return (f"**{title}**\n\n" if title else "") + "\n".join(lines)
    if fmt == "rich":
        from rich.console import Console
        from rich.table import Table

        table = Table(title=title or None)
        table.add_column(headers[0], no_wrap=True)
        for h in headers[1:]:
            table.add_column(h, justify="right")
        for r in body:
            table.add_row(*r)
        console = Console(record=True, width=max(120, 14 * len(headers)), file=io.StringIO())
        console.print(table)
        return console.export_text()
    raise ValueError(f"leaderboard_table: unknown fmt {fmt!r} (markdown, rich)")
