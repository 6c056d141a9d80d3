"""The published numbers (results/paper/published.yaml) and which one a table cell is compared with."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import yaml

PROVENANCE_RANK = {"official_readme": 0, "official_readme_history": 1, "second_hand": 2, "pwc_archive": 3}


@dataclass(frozen=True)
class Published:
    paper: str
    metric: str  # last_epoch, best_epoch or unknown
    top1: float | None
    provenance: str
    source: str
    doubtful: str | None = None  # why the number or its attribution is in doubt


class PublishedTable:
    def __init__(self, path: Path):
        data = yaml.safe_load(Path(path).read_text())
        self.papers: dict[str, dict] = data["papers"]
        self.entries: list[dict] = data["entries"]

    def pairs(self, dataset: str) -> list[tuple[str, str]]:
        """The (teacher, student) columns of a dataset's tables, in the order the sources list them."""
        seen: dict[tuple[str, str], None] = {}
        for e in self.entries:
            if e["dataset"] == dataset:
                seen[(e["teacher"], e["student"])] = None
        return list(seen)

    def papers_of(self, dataset: str) -> list[str]:
        """The papers with numbers on ``dataset``, in the order the sources list them."""
        return list(dict.fromkeys(e["paper"] for e in self.entries if e["dataset"] == dataset))

    def entries_of(self, paper: str, dataset: str) -> list[dict]:
        """The cells one paper printed for ``dataset``: its own table, in its own order."""
        return [e for e in self.entries if (e["paper"], e["dataset"]) == (paper, dataset)]

    def published(self, entry: dict) -> Published:
        return Published(paper=entry["paper"], metric=self.papers.get(entry["paper"], {}).get("metric", "unknown"),
                         top1=entry["top1"], provenance=entry["provenance"], source=entry["source"],
                         doubtful=entry.get("doubtful"))

    def title(self, paper: str) -> str:
        return self.papers.get(paper, {}).get("title", paper)

    def lookup(self, dataset: str, method: str, teacher: str, student: str, metric: str | None) -> Published | None:
        """The published number for a cell whose paper reports ``metric`` (or an unknown metric); with
        ``metric=None`` whatever its paper reports (the number the cell's experiment names).

        Among several quotes, the paper that introduced the method comes first, then the CRD
        paper (which ran every baseline), then the most direct provenance.
        """
        candidates = []
        for e in self.entries:
            if (e["dataset"], e["method"], e["teacher"], e["student"]) != (dataset, method, teacher, student):
                continue
            paper_metric = self.papers.get(e["paper"], {}).get("metric", "unknown")
            if metric is not None and paper_metric not in (metric, "unknown"):
                continue
            own = 0 if method.startswith(e["paper"]) else 1 if e["paper"] == "crd" else 2
            candidates.append(((own, PROVENANCE_RANK.get(e["provenance"], 9)), e))
        if not candidates:
            return None
        _, e = min(candidates, key=lambda c: c[0])
        return self.published(e)
