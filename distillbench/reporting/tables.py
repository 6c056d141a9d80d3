"""Mean ± std over seeds per table cell, rendered as the papers lay their tables out.

Runs are grouped by their identity group (the hash of everything that can change the result, the seed
left out): a cell is the mean ± std over the seeds of **one** group, and two groups are never averaged
together. Only finished runs of an experiment's default variant, trained on the real data, stand against
a published number; everything else (overrides, unfinished runs, generated data, runs without a run
record, a second group of the same cell such as a fast bf16 run beside the float32 one) is listed in a
separate variants table.

``acc1_last`` and ``acc1_best`` are aggregated and tabulated separately, and each is compared only with
published numbers of the same kind (CRD reports last-epoch accuracy, DKD best-epoch): mixing them would
flatter or penalise a method by the gap between the two. The protocol table reports each cell by the
rule of the paper it is compared with (its experiment's ``protocol``) and marks cells that have fewer
seeds than the paper averaged.
"""

from __future__ import annotations

import logging
import math
import statistics
from collections import defaultdict
from dataclasses import dataclass, field

from distillbench.reporting.protocol import Protocol, missing_seeds, seed_command
from distillbench.reporting.published import Published, PublishedTable
from distillbench.reporting.runs import DEFAULT_VARIANT, RunRecord

log = logging.getLogger("distillbench")

METRICS = {"acc1_last": "last_epoch", "acc1_best": "best_epoch"}
PROTOCOL = "protocol"  # the table whose cells follow their paper's rule
PAPER_PRECISION = "float32"  # what the papers trained in; preferred when a cell has several groups

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


def stats(values: list[float]) -> Stats:
    return Stats(mean=statistics.fmean(values), std=statistics.stdev(values) if len(values) > 1 else 0.0,
                 n=len(values))


@dataclass
class Group:
    """The runs of one identity group (one per seed) that share a status."""

    key: str
    runs: list[RunRecord]
    status: str
    duplicates: list[str] = field(default_factory=list)

    @property
    def first(self) -> RunRecord:
        return self.runs[0]

    @property
    def seeds(self) -> list[int]:
        return sorted(r.seed for r in self.runs)

    def stats(self, metric: str) -> Stats | None:
        values = [r.value(metric) for r in self.runs if r.value(metric) is not None]
        return stats(values) if values else None

    @property
    def protocol(self) -> Protocol | None:
        return next((r.protocol for r in self.runs if r.protocol is not None), None)


def _status_kind(status: str) -> str:
    return status.split(" (")[0]


def group_runs(records: list[RunRecord]) -> list[Group]:
    """Runs grouped by identity group and status; a seed seen twice in a group is kept once (with a warning:
    the same run read from disk and from W&B, or a rerun)."""
    buckets: dict[tuple, list[RunRecord]] = defaultdict(list)
    for r in records:
        key = r.group if r.group else f"~{r.experiment}|{r.dataset}|{r.method}|{r.teacher}|{r.student}"
        buckets[(key, _status_kind(r.status))].append(r)
    groups = []
    for (key, _), runs in buckets.items():
        kept: dict[int, RunRecord] = {}
        duplicates = []
        for r in runs:
            if r.seed in kept:
                duplicates.append(f"seed {r.seed}: {r.source} (kept {kept[r.seed].source})")
                log.warning("Group %s has seed %d twice: %s and %s; one is kept.", key, r.seed,
                            kept[r.seed].source, r.source)
            else:
                kept[r.seed] = r
        runs = sorted(kept.values(), key=lambda r: r.seed)
        statuses = sorted({r.status for r in runs})
        status = statuses[0] if len(statuses) == 1 else _status_kind(statuses[0])
        groups.append(Group(key=key, runs=runs, status=status, duplicates=duplicates))
    return sorted(groups, key=lambda g: (g.first.experiment or "", g.first.variant, g.key, g.status))


def belongs(r: RunRecord, dataset: str, method: str, teacher: str, student: str) -> bool:
    """A teacher's runs fill every column it teaches in; a vanilla student's every column it is the student of."""
    if r.dataset != dataset or r.method != method:
        return False
    if method == "vanilla_teacher":
        return r.teacher == teacher
    if method == "vanilla_student":
        return r.student == student
    return (r.teacher, r.student) == (teacher, student)


def runs_of_cell(records: list[RunRecord], dataset: str, method: str, teacher: str, student: str) -> list[RunRecord]:
    return [r for r in records if belongs(r, dataset, method, teacher, student)]


def wanted_variant(experiment: str | None, variants: dict[str, str] | None) -> str:
    """The variant that fills an experiment's cell: its default unless ``variants`` names another
    (key: the experiment, or ``*`` for every experiment that has a variant of that name)."""
    variants = variants or {}
    return variants.get(experiment or "", variants.get("*", DEFAULT_VARIANT))


def eligible(g: Group, variants: dict[str, str] | None) -> bool:
    """May stand against a published number: finished on real data with a run record, the wanted variant."""
    return g.status == "ok" and g.first.variant == wanted_variant(g.first.experiment, variants)


def choose(candidates: list[Group]) -> Group | None:
    """One group per cell, never a mix: the paper's precision (float32) first, then the most seeds."""
    if not candidates:
        return None
    return min(candidates, key=lambda g: (g.first.precision != PAPER_PRECISION, g.first.variant != DEFAULT_VARIANT,
                                          -len(g.runs), g.key))


@dataclass(frozen=True)
class Cell:
    method: str
    teacher: str
    student: str
    ours: Stats | None
    published: Published | None
    protocol: Protocol | None = None
    group: Group | None = None

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

    @property
    def seeds_wanted(self) -> int | None:
        return self.protocol.seeds if self.protocol is not None else None

    @property
    def fewer_seeds(self) -> bool:
        """Fewer seeds than the paper averaged for this number."""
        return self.ours is not None and self.seeds_wanted is not None and self.ours.n < self.seeds_wanted

    @property
    def variant(self) -> str:
        return self.group.first.variant if self.group is not None else DEFAULT_VARIANT


@dataclass
class Selection:
    """Which group fills each cell of a dataset's tables, and every other group (the variants)."""

    groups: list[Group]
    chosen: dict[tuple[str, str, str], Group]
    pairs: list[tuple[str, str]]
    methods: list[str]

    @property
    def variants(self) -> list[Group]:
        used = {id(g) for g in self.chosen.values()}
        return [g for g in self.groups if id(g) not in used]


def select(records: list[RunRecord], published: PublishedTable, dataset: str,
           variants: dict[str, str] | None = None) -> Selection:
    records = [r for r in records if r.dataset == dataset]
    pairs = published.pairs(dataset)
    for r in records:
        if r.teacher and r.student and (r.teacher, r.student) not in pairs:
            pairs.append((r.teacher, r.student))
    methods = {e["method"] for e in published.entries if e["dataset"] == dataset} | {r.method for r in records}
    methods = sorted(methods, key=lambda m: (METHOD_ORDER.index(m) if m in METHOD_ORDER else 99, m))
    groups = group_runs(records)
    chosen = {}
    for method in methods:
        for teacher, student in pairs:
            candidates = [g for g in groups if eligible(g, variants) and belongs(g.first, dataset, method, teacher,
                                                                               student)]
            best = choose(candidates)
            if best is not None:
                chosen[(method, teacher, student)] = best
                for other in candidates:
                    if other is not best and other.status == "ok":
                        other.status = f"not averaged: another group fills {method} {teacher} → {student}"
    return Selection(groups=groups, chosen=chosen, pairs=pairs, methods=methods)


def build_cells(records: list[RunRecord], published: PublishedTable, dataset: str, metric: str,
                variants: dict[str, str] | None = None, selection: Selection | None = None) -> list[Cell]:
    """The cells of one table: ``metric`` is acc1_last, acc1_best or ``protocol`` (each cell by its paper's rule)."""
    selection = selection or select(records, published, dataset, variants)
    cells = []
    for method in selection.methods:
        for teacher, student in selection.pairs:
            group = selection.chosen.get((method, teacher, student))
            pub = published.lookup(dataset, method, teacher, student, None if metric == PROTOCOL else METRICS[metric])
            protocol = group.protocol if group is not None else None
            if protocol is None and pub is not None:
                protocol = Protocol.from_papers(published.papers, pub.paper, dataset)
            value = (protocol.metric if protocol else "acc1_last") if metric == PROTOCOL else metric
            ours = group.stats(value) if group is not None else None
            if ours is not None or (pub is not None and pub.top1 is not None):
                cells.append(Cell(method, teacher, student, ours, pub, protocol, group))
    return cells


# ---------------------------------------------------------------------------------------------- rendering
def format_ours(ours: Stats) -> str:
    text = f"{ours.mean:.2f}"
    if ours.n > 1:
        text += f" ± {ours.std:.2f}"
    return text


def format_cell(cell: Cell, rule: bool = False) -> str:
    parts = []
    if cell.ours is not None:
        parts.append(f"**{format_ours(cell.ours)}**" + (" †" if cell.outside_spread else "")
                     + (" ‡" if cell.variant != DEFAULT_VARIANT else ""))
    if cell.published is not None and cell.published.top1 is not None:
        published = f"{cell.published.top1:.2f}"
        if cell.published.metric == "unknown":
            published += "?"
        if cell.published.doubtful:
            published += " §"
        diff = cell.difference
        parts.append(f"({published}" + (f", {diff:+.2f})" if diff is not None else ")"))
    if cell.ours is not None and (rule or cell.fewer_seeds):
        notes = [cell.protocol.short()] if rule and cell.protocol is not None else []
        if cell.seeds_wanted:
            notes.append(f"n={cell.ours.n}/{cell.seeds_wanted}" + (" ⚠" if cell.fewer_seeds else ""))
        elif rule:
            notes.append(f"n={cell.ours.n}")
        parts.append(", ".join(notes))
    return " ".join(parts)


def _table(cells: list[Cell], rule: bool) -> list[str]:
    pairs = list(dict.fromkeys((c.teacher, c.student) for c in cells))
    methods = list(dict.fromkeys(c.method for c in cells))
    by_key = {(c.method, c.teacher, c.student): c for c in cells}
    lines = ["| method | " + " | ".join(f"{t} → {s}" for t, s in pairs) + " |", "|---|" + "---|" * len(pairs)]
    for method in methods:
        row = [format_cell(by_key[(method, t, s)], rule) if (method, t, s) in by_key else "" for t, s in pairs]
        lines.append(f"| {method} | " + " | ".join(row) + " |")
    return lines


def _footer(cells: list[Cell]) -> list[str]:
    seeds = sorted({c.ours.n for c in cells if c.ours is not None})
    lines = ["", f"Seeds per cell: {', '.join(map(str, seeds)) or 'no runs yet'}."]
    short = sum(c.fewer_seeds for c in cells)
    if short:
        lines.append(f"⚠ {short} cell(s) have fewer seeds than the paper averaged (scripts/make_tables.py prints "
                     "the commands that run the missing seeds).")
    variants = sorted({(c.group.first.experiment, c.variant) for c in cells
                       if c.group is not None and c.variant != DEFAULT_VARIANT})
    for experiment, variant in variants:
        lines.append(f"‡ {experiment}: variant `{variant}` (chosen with --variant), not the experiment as "
                     "published.")
    return lines


LEGEND = ("Ours: mean ± std over the seeds of one identity group (bold); in brackets the published number and "
          "our difference. † marks a published number outside our mean ± 2 std; ? a published number whose kind "
          "(last or best epoch) is unknown; ⚠ n=k/N fewer seeds than the paper's N; ‡ a cell filled by a "
          "non-default variant; § a published number whose source or attribution is in doubt (see `doubtful` "
          "in results/paper/published.yaml). Variants, unfinished runs and runs on generated data are in the "
          "variants table.")


def render_markdown(cells: list[Cell], dataset: str, metric: str) -> str:
    lines = [f"## {dataset}: {metric} top-1 (%)", "", LEGEND, "", *_table(cells, rule=False), *_footer(cells)]
    return "\n".join(lines) + "\n"


def render_protocol_markdown(cells: list[Cell], dataset: str) -> str:
    lines = [f"## {dataset}: top-1 (%) as each paper reports it", "",
             "Each cell follows the protocol of the paper it is compared with (its experiment's `protocol`): "
             "`last` = the final epoch's test top-1, `best` = each run's best epoch, `last?` = the paper's rule is "
             "unknown (read as last epoch), averaged over seeds; n=k/N gives our seeds and the paper's. "
             + LEGEND, "", *_table(cells, rule=True), *_footer(cells)]
    return "\n".join(lines) + "\n"


def _epochs(g: Group) -> str:
    done = sorted({r.epochs_done for r in g.runs if r.epochs_done is not None})
    planned = sorted({r.epochs_planned for r in g.runs if r.epochs_planned is not None})
    text = "/".join(",".join(map(str, v)) for v in (done, planned) if v)
    return text or "?"


def variant_rows(groups: list[Group]) -> list[dict]:
    rows = []
    for g in groups:
        last, best = g.stats("acc1_last"), g.stats("acc1_best")
        rows.append({
            "experiment": g.first.experiment or "?", "variant": g.first.variant,
            "group": g.first.group or "—", "n": len(g.runs), "seeds": g.seeds,
            "acc1_last": last, "acc1_best": best, "epochs": _epochs(g), "precision": g.first.precision or "?",
            "status": g.status + (f"; {len(g.duplicates)} duplicate seed(s) dropped" if g.duplicates else ""),
        })
    return rows


def render_variants_markdown(groups: list[Group], dataset: str) -> str:
    lines = [f"## {dataset}: variants and runs not compared with a published number", "",
             "Every group of runs that does not fill a cell of the main tables: overrides of an experiment "
             "(variant), a second group of the same cell (e.g. bf16 beside float32), unfinished runs, runs on "
             "generated data or with fewer epochs, and runs written before run.json existed. n counts seeds of "
             "one identity group; epochs reads done/planned. Never compared with the published number.", "",
             "| experiment | variant | group | n | last: mean ± std | best: mean ± std | epochs | precision | "
             "status |", "|---|---|---|---|---|---|---|---|---|"]
    for row in variant_rows(groups):
        last = format_ours(row["acc1_last"]) if row["acc1_last"] else "—"
        best = format_ours(row["acc1_best"]) if row["acc1_best"] else "—"
        lines.append(f"| {row['experiment']} | `{row['variant']}` | `{row['group']}` | {row['n']} | {last} | "
                     f"{best} | {row['epochs']} | {row['precision']} | {row['status']} |")
    if not groups:
        lines.append("| (none) | | | | | | | | |")
    return "\n".join(lines) + "\n"


def missing_seed_commands(cells: list[Cell]) -> list[str]:
    """One command per experiment (and variant) whose cell has fewer seeds than its paper averaged."""
    commands = {}
    for c in cells:
        if c.group is None or c.protocol is None:
            continue
        missing = missing_seeds(set(c.group.seeds), c.protocol)
        experiment = c.group.first.experiment
        if missing and experiment:
            commands[(experiment, c.variant)] = seed_command(experiment, missing, c.group.first.overrides)
    return [commands[k] for k in sorted(commands)]


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
