"""Ours against the published numbers: one panel per paper whose table has a measured, published cell.

matplotlib is optional for the tables (``available()``); the figure is built on a bare ``Figure`` (no pyplot
state, no display needed) so tests can read its titles, labels and legends.
"""

from __future__ import annotations

import importlib.util
import math

from distillbench.reporting.papers import PaperTable

PANELS_PER_ROW = 3
MARKERS = "osD^vP*Xhp<>"


def available() -> bool:
    return importlib.util.find_spec("matplotlib") is not None


def _points(table: PaperTable) -> list:
    """The cells with both our mean and the paper's number."""
    return [c for c in table.cells.values() if c.difference is not None]


def figure_against_published(tables: list[PaperTable], dataset: str):
    """A ``matplotlib.figure.Figure`` with one panel per paper that has points, or None when none has."""
    from matplotlib.figure import Figure

    shown = [t for t in tables if _points(t)]
    if not shown:
        return None
    cols = min(len(shown), PANELS_PER_ROW)
    rows = math.ceil(len(shown) / cols)
    fig = Figure(figsize=(5.5 * cols, 5 * rows + 0.6), layout="constrained")
    fig.suptitle(f"{dataset}: distillbench against the published top-1 (each paper's own rule)")
    for i, table in enumerate(shown):
        ax = fig.add_subplot(rows, cols, i + 1)
        points = _points(table)
        for j, method in enumerate(dict.fromkeys(c.method for c in points)):
            mine = [c for c in points if c.method == method]
            ax.errorbar([c.published.top1 for c in mine], [c.ours.mean for c in mine],
                        yerr=[c.ours.std for c in mine], fmt=MARKERS[j % len(MARKERS)], ms=5, capsize=2,
                        label=method)
        values = [c.published.top1 for c in points] + [c.ours.mean for c in points]
        lo, hi = math.floor(min(values)) - 1, math.ceil(max(values)) + 1
        ax.plot([lo, hi], [lo, hi], "k--", lw=0.8, label="ours = published")
        ax.set_xlim(lo, hi)
        ax.set_ylim(lo, hi)
        ax.set_title(f"{table.name} ({table.metric_label}), {len(points)} cell{'s' if len(points) != 1 else ''}")
        ax.set_xlabel(f"published top-1 (%), {table.name}")
        ax.set_ylabel("distillbench top-1 (%), mean ± std over seeds")
        ax.legend(fontsize="small", loc="best")
    return fig


def save_plot(tables: list[PaperTable], dataset: str, path) -> int:
    """Write the figure to ``path``; the number of panels (0: nothing to plot, nothing written)."""
    fig = figure_against_published(tables, dataset)
    if fig is None:
        return 0
    fig.savefig(path, dpi=120)
    return len(fig.axes)
