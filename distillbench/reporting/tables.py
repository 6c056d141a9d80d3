"""Mean ± std over seeds per table cell, rendered as the papers lay their tables out.

``acc1_last`` and ``acc1_best`` are aggregated and tabulated separately, and each is compared
only with published numbers of the same kind (CRD reports last-epoch accuracy, DKD best-epoch):
mixing them would flatter or penalise a method by the gap between the two.
"""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass

from distillbench.reporting.published import Published, PublishedTable
from distillbench.reporting.runs import RunRecord

METRICS = {"acc1_last": "last_epoch", "acc1_best": "best_epoch"}

# Row order of the CRD paper's tables, then the methods that came after it.
METHOD_ORDER = [
    "vanilla_teacher", "vanilla_student", "kd", "fitnet", "at", "sp", "cc", "vid", "rkd", "pkt", "ab", "ft", "fsp",
    "nst", "crd", "crd_kd", "crcd", "wcord", "rrd", "rrd_kd", "ckd", "dkd",
]


@dataclass(frozen=True)
class Stats:
    mean: float
    std: float  # sample standard deviation over seeds; 0 for a single run
    n: int


@dataclass(frozen=True)
class Cell:
    method: str
    teacher: str
    student: str
    ours: Stats | None
    published: Published | None

    @property
    def difference(self) -> float | None:
        if self.ours is None or self.published is None or self.published.top1 is None:
            return None
        return self.ours.mean - self.published.top1

    @property
    def outside_spread(self) -> bool:
        """The published number lies outside our mean ± 2 std over seeds (needs at least 2 seeds)."""
        diff = self.difference
        return diff is not None and self.ours.n >= 2 and abs(diff) > 2 * self.ours.std


def runs_of_cell(records: list[RunRecord], dataset: str, method: str, teacher: str, student: str) -> list[RunRecord]:
    """A teacher's runs fill every column it teaches in; a vanilla student's every column it is the student of."""
    def belongs(r: RunRecord) -> bool:
        if r.dataset != dataset or r.method != method:
            return False
        if method == "vanilla_teacher":
            return r.teacher == teacher
        if method == "vanilla_student":
            return r.student == student
        return (r.teacher, r.student) == (teacher, student)

    return [r for r in records if belongs(r)]


def stats(values: list[float]) -> Stats:
    return Stats(mean=statistics.fmean(values), std=statistics.stdev(values) if len(values) > 1 else 0.0,
                 n=len(values))


def build_cells(records: list[RunRecord], published: PublishedTable, dataset: str, metric: str) -> list[Cell]:
    pairs = published.pairs(dataset)
    for r in records:
        if r.dataset == dataset and r.teacher and r.student and (r.teacher, r.student) not in pairs:
            pairs.append((r.teacher, r.student))
    methods = {e["method"] for e in published.entries if e["dataset"] == dataset} | {
        r.method for r in records if r.dataset == dataset}
    cells = []
    for method in sorted(methods, key=lambda m: (METHOD_ORDER.index(m) if m in METHOD_ORDER else 99, m)):
        for teacher, student in pairs:
            runs = runs_of_cell(records, dataset, method, teacher, student)
            ours = stats([getattr(r, metric) for r in runs]) if runs else None
            pub = published.lookup(dataset, method, teacher, student, METRICS[metric])
            if ours is not None or (pub is not None and pub.top1 is not None):
                cells.append(Cell(method, teacher, student, ours, pub))
    return cells


def format_cell(cell: Cell) -> str:
    parts = []
    if cell.ours is not None:
        ours = f"{cell.ours.mean:.2f}"
        if cell.ours.n > 1:
            ours += f" ± {cell.ours.std:.2f}"
        parts.append(f"**{ours}**" + (" †" if cell.outside_spread else ""))
    if cell.published is not None and cell.published.top1 is not None:
        published = f"{cell.published.top1:.2f}"
        if cell.published.metric == "unknown":
            published += "?"
        diff = cell.difference
        parts.append(f"({published}" + (f", {diff:+.2f})" if diff is not None else ")"))
    return " ".join(parts)


def render_markdown(cells: list[Cell], dataset: str, metric: str) -> str:
    pairs = list(dict.fromkeys((c.teacher, c.student) for c in cells))
    methods = list(dict.fromkeys(c.method for c in cells))
    by_key = {(c.method, c.teacher, c.student): c for c in cells}
    header = "| method | " + " | ".join(f"{t} → {s}" for t, s in pairs) + " |"
    lines = [
        f"## {dataset}: {metric} top-1 (%)",
        "",
        "Ours: mean ± std over seeds (bold); in brackets the published number and our difference. "
        "† marks a published number outside our mean ± 2 std; ? a published number whose kind (last or best "
        "epoch) is unknown.",
        "",
        header,
        "|---|" + "---|" * len(pairs),
    ]
    for method in methods:
        row = [format_cell(by_key[(method, t, s)]) if (method, t, s) in by_key else "" for t, s in pairs]
        lines.append(f"| {method} | " + " | ".join(row) + " |")
    seeds = sorted({c.ours.n for c in cells if c.ours is not None})
    lines += ["", f"Seeds per cell: {', '.join(map(str, seeds)) or 'no runs yet'}."]
    return "\n".join(lines) + "\n"


def plot_against_published(cells_by_metric: dict[str, list[Cell]], path) -> int:
    """Ours against published, one panel per metric; returns the number of points drawn."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(cells_by_metric), figsize=(5 * len(cells_by_metric), 5), squeeze=False)
    drawn = 0
    for ax, (metric, cells) in zip(axes[0], cells_by_metric.items(), strict=True):
        points = [c for c in cells if c.difference is not None]
        xs = [c.published.top1 for c in points]
        ys = [c.ours.mean for c in points]
        ax.errorbar(xs, ys, yerr=[c.ours.std for c in points], fmt="o", ms=4, capsize=2)
        if points:
            lo, hi = math.floor(min(xs + ys)) - 1, math.ceil(max(xs + ys)) + 1
            ax.plot([lo, hi], [lo, hi], "k--", lw=0.8)
        ax.set_xlabel("published top-1 (%)")
        ax.set_ylabel("distillbench top-1 (%)")
        ax.set_title(metric)
        drawn += len(points)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return drawn
