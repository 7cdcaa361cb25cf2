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


GROWTH_COLORS = {
    "on_track_stretch": "#2f7d32",
    "on_track_typical": "#8bc34a",
    "below_typical": "#e07000",
    "no_progress_data": "#bdbdbd",
}


def _png(fig) -> bytes:
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return buf.getvalue()


def growth_status_png(growth: pl.DataFrame, title: str) -> bytes:
    """Stacked bars of growth rows per status, one bar per school and grade ("101 g3")."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    label = pl.concat_str(
        [pl.col("school_code").cast(pl.Utf8).fill_null("?"), pl.lit(" g"), pl.col("grade").cast(pl.Utf8).fill_null("?")]
    )
    counts = growth.with_columns(label.alias("_bar")).group_by("_bar", "growth_status").len()
    bars = sorted(set(counts.get_column("_bar").to_list()))
    lookup = {(b, s): n for b, s, n in counts.iter_rows()}
    fig = Figure(figsize=(7, 1.4 + 0.3 * max(len(bars), 1)), dpi=96)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    left = [0] * len(bars)
    for status, color in GROWTH_COLORS.items():
        values = [lookup.get((b, status), 0) for b in bars]
        ax.barh(bars, values, left=left, color=color, label=status.replace("_", " "))
        left = [a + b for a, b in zip(left, values, strict=True)]
    ax.invert_yaxis()
    ax.set_xlabel("students × subjects")
    ax.set_title(title, fontsize=10)
    ax.legend(ncols=2, fontsize=8, loc="lower right", frameon=False)
    ax.spines[["top", "right"]].set_visible(False)
    return _png(fig)


def projected_chronic_png(counts: pl.DataFrame, title: str) -> bytes:
    """Per school, students chronically absent today beside those projected to be by June."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    schools = [str(sc) for sc in counts.get_column("school_code").to_list()]
    positions = list(range(len(schools)))
    fig = Figure(figsize=(7, 1.4 + 0.5 * max(len(schools), 1)), dpi=96)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    ax.barh(
        [p - 0.2 for p in positions],
        counts.get_column("chronic_today").to_list(),
        height=0.4,
        color="#e07000",
        label="chronic today",
    )
    ax.barh(
        [p + 0.2 for p in positions],
        counts.get_column("projected_chronic").to_list(),
        height=0.4,
        color="#c0262d",
        label="projected by June",
    )
    ax.set_yticks(positions, schools)
    ax.invert_yaxis()
    ax.set_xlabel("students")
    ax.set_ylabel("school")
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=8, loc="lower right", frameon=False)
    ax.spines[["top", "right"]].set_visible(False)
    return _png(fig)
