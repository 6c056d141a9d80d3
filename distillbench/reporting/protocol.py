"""A paper's reporting protocol for a table cell: how many seeds it averaged and which epoch it reports.

Each experiment file carries it (``protocol: {seeds: 5, report: best_epoch, paper: dkd}``, written by
scripts/make_experiments.py from the ``papers`` block of results/paper/published.yaml), so every run's
config.yaml (and W&B config) holds the rule its cell is reported by.
"""

from __future__ import annotations

from dataclasses import dataclass

# report rule -> the per-run summary value averaged over seeds
REPORT_METRIC = {"last_epoch": "acc1_last", "best_epoch": "acc1_best"}


@dataclass(frozen=True)
class Protocol:
    seeds: int | None  # runs the paper averaged; None: not stated
    report: str  # last_epoch (the final epoch's test top-1), best_epoch (each run's best epoch), unknown
    paper: str | None = None

    @classmethod
    def from_config(cls, block) -> Protocol | None:
        if not block:
            return None
        block = dict(block)
        seeds = block.get("seeds")
        return cls(seeds=int(seeds) if seeds is not None else None, report=str(block.get("report", "unknown")),
                   paper=block.get("paper"))

    @classmethod
    def from_papers(cls, papers: dict, paper: str, dataset: str) -> Protocol:
        """The protocol of ``paper`` on ``dataset`` from published.yaml's papers block."""
        entry = papers.get(paper, {})
        runs = entry.get("runs")
        seeds = runs.get(dataset) if isinstance(runs, dict) else runs
        return cls(seeds=seeds, report=entry.get("metric", "unknown"), paper=paper)

    @property
    def metric(self) -> str:
        """The summary value each run contributes. A paper whose rule is unknown is read as last-epoch
        (and the cell is marked), the stricter of the two."""
        return REPORT_METRIC.get(self.report, "acc1_last")

    @property
    def known(self) -> bool:
        return self.report in REPORT_METRIC

    def short(self) -> str:
        return {"last_epoch": "last", "best_epoch": "best"}.get(self.report, "last?")


def missing_seeds(have: set[int], protocol: Protocol | None) -> list[int]:
    """Seeds 0..N-1 of the paper's N that no run covers yet."""
    if protocol is None or not protocol.seeds:
        return []
    return [s for s in range(protocol.seeds) if s not in have]


def seed_command(experiment: str, seeds: list[int], overrides: tuple[str, ...] | list[str] = ()) -> str:
    """The command that runs the given seeds of one experiment (and variant), as one Hydra multirun."""
    parts = ["python -m distillbench -m", f"experiment={experiment}", *overrides,
             "seed=" + ",".join(str(s) for s in seeds)]
    return " ".join(parts)
