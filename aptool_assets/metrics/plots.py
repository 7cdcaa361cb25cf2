"""Small PNG charts for Dagster metadata: counts per school only, never student detail.

The UI renders markdown images with ``data:`` URIs, so a chart travels inside the
materialization event itself and needs no file server or artifact store.
"""

from __future__ import annotations

import base64
import io

import polars as pl

from aptool_assets.vocabulary import TIERS

# Green → red, so a glance at the bar shows how much of a school is chronically absent.
TIER_COLORS = {
    "satisfactory": "#4c9a2a",
    "at_risk": "#e0b400",
    "moderate_chronic": "#e07000",
    "severe_chronic": "#c0262d",
}


def tier_counts_by_school(summary: pl.DataFrame) -> pl.DataFrame:
    """One row per school, one count column per tier (zero-filled, tiers in contract order)."""
    counts = summary.group_by("school_code", "attendance_tier").len()
    wide = {"school_code": sorted(set(counts.get_column("school_code").to_list()))}
    lookup = {(sc, t): n for sc, t, n in counts.iter_rows()}
    for tier in TIERS:
        wide[tier] = [lookup.get((sc, tier), 0) for sc in wide["school_code"]]
    return pl.DataFrame(wide, schema={"school_code": pl.Int64, **dict.fromkeys(TIERS, pl.Int64)})


def tier_distribution_png(summary: pl.DataFrame, title: str) -> bytes:
    """Horizontal stacked bars of students per attendance tier, one bar per school."""
    # The object API with an explicit Agg canvas: no global backend switch, no display needed,
    # safe inside Dagster's run workers and threads.
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    wide = tier_counts_by_school(summary)
    schools = [str(sc) for sc in wide.get_column("school_code").to_list()]
    fig = Figure(figsize=(7, 1.2 + 0.45 * max(len(schools), 1)), dpi=96)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    left = [0] * len(schools)
    for tier in TIERS:
        values = wide.get_column(tier).to_list()
        ax.barh(schools, values, left=left, color=TIER_COLORS[tier], label=tier.replace("_", " "))
        left = [a + b for a, b in zip(left, values, strict=True)]
    ax.invert_yaxis()  # first school on top, like the markdown tables
    ax.set_xlabel("students")
    ax.set_ylabel("school")
    ax.set_title(title, fontsize=10)
    ax.legend(
        ncols=len(TIERS),
        fontsize=8,
        loc="upper center",
        bbox_to_anchor=(0.5, -0.35 if schools else -0.2),
        frameon=False,
    )
    ax.spines[["top", "right"]].set_visible(False)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return buf.getvalue()


def png_markdown(png: bytes, alt: str) -> str:
    """Markdown that embeds the PNG as a data URI (the Dagster UI allows ``data:`` image sources)."""
    return f"![{alt}](data:image/png;base64,{base64.b64encode(png).decode('ascii')})"


STATUS_CUT_POINTS: tuple[tuple[float, str], ...] = (
    (2.5, "very low ≤ 2.5"),
    (5.0, "low ≤ 5.0"),
    (10.0, "medium ≤ 10.0"),
    (20.0, "high ≤ 20.0"),
)
"""The Dashboard's chronic absenteeism status cut points (contract §4.5), drawn as lines on the group chart."""


def group_rates_png(rates: pl.DataFrame, title: str) -> bytes:
    """Bars of ``rate_pct`` per ``student_group`` (suppressed groups left out by the caller), with the status
    cut points as vertical lines, so a reader sees which groups sit in which status band."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    ordered = rates.sort("rate_pct", descending=True)
    groups = ordered.get_column("student_group").to_list()
    values = ordered.get_column("rate_pct").to_list()
    fig = Figure(figsize=(7, 1.4 + 0.35 * max(len(groups), 1)), dpi=96)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    ax.barh(groups, values, color="#3d6fb6")
    for cut, label in STATUS_CUT_POINTS:
        ax.axvline(cut, color="#999999", linewidth=0.8, linestyle="--")
        ax.text(cut, -0.7, label, fontsize=7, color="#555555", ha="center", va="bottom")
    ax.invert_yaxis()
    ax.set_xlabel("chronically absent (% of eligible students)")
    ax.set_title(title, fontsize=10)
    ax.spines[["top", "right"]].set_visible(False)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return buf.getvalue()
