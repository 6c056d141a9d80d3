"""Which runs fill a table cell: identity groups, the group chosen per cell, and mean ± std over its seeds.

Runs are grouped by their identity group (the hash of everything that can change the result, the seed
left out): a cell is the mean ± std over the seeds of **one** group, and two groups are never averaged
together. Only finished runs of an experiment's default variant, trained on the real data, stand against
a published number; everything else (overrides, unfinished runs, generated data, runs without a run
record, a second group of the same cell such as a fast bf16 run beside the float32 one) is listed in a
separate variants table.

``acc1_last`` and ``acc1_best`` are aggregated separately, and each is compared only with published numbers
of the same kind (CRD reports last-epoch accuracy, DKD best-epoch): mixing them would flatter or penalise a
method by the gap between the two. ``papers.py`` lays the cells out as each paper printed them.
"""

from __future__ import annotations

import logging
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

    @property
    def code_revisions(self) -> list[str]:
        """The code revisions its seeds ran (several when seeds were run at different commits)."""
        return sorted({r.code_revision for r in self.runs if r.code_revision})


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
