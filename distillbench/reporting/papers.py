"""Each paper's own table: the methods and teacher → student pairs it printed, its numbers beside ours.

A paper's table holds exactly the cells that paper printed (its entries in results/paper/published.yaml, in
the order its source lists them), so it reads next to the paper. Each cell is filled by the identity group
``select`` chose for that cell and reported by the paper's rule: the last epoch for CRD, the best epoch for
DKD, the last epoch where a paper does not say (the stricter reading). One group can therefore stand in
several papers' tables, each time measured the way that paper measured.
"""

from __future__ import annotations

from dataclasses import dataclass

from distillbench.reporting.protocol import Protocol
from distillbench.reporting.published import PublishedTable
from distillbench.reporting.tables import Cell, Group, Selection

# How the papers name themselves where it is not the upper-cased key of published.yaml.
PAPER_NAMES = {"wcord": "WCoRD", "reviewkd": "ReviewKD"}


def paper_name(paper: str) -> str:
    return PAPER_NAMES.get(paper, paper.upper())


@dataclass(frozen=True)
class PaperTable:
    paper: str
    title: str
    dataset: str
    protocol: Protocol  # the paper's report rule and the runs it averaged on this dataset
    methods: list[str]  # rows, in the paper's order
    pairs: list[tuple[str, str]]  # columns, in the paper's order
    cells: dict[tuple[str, str, str], Cell]  # (method, teacher, student) -> the cell the paper printed

    @property
    def name(self) -> str:
        return paper_name(self.paper)

    @property
    def metric(self) -> str:
        """The summary value our cells report: acc1_last or acc1_best."""
        return self.protocol.metric

    @property
    def metric_label(self) -> str:
        """Which top-1 the cells hold, in words for titles."""
        return {"last_epoch": "last-epoch top-1", "best_epoch": "best-epoch top-1"}.get(
            self.protocol.report, "last-epoch top-1, rule unstated")

    @property
    def filled(self) -> list[Cell]:
        return [c for c in self.cells.values() if c.ours is not None]

    @property
    def slug(self) -> str:
        """The file name stem of this table's Markdown and CSV."""
        return f"{self.dataset}_{self.paper}"


def paper_table(selection: Selection, published: PublishedTable, dataset: str, paper: str) -> PaperTable:
    protocol = Protocol.from_papers(published.papers, paper, dataset)
    cells = {}
    for entry in published.entries_of(paper, dataset):
        key = (entry["method"], entry["teacher"], entry["student"])
        group = selection.chosen.get(key)
        ours = group.stats(protocol.metric) if group is not None else None
        cells[key] = Cell(*key, ours=ours, published=published.published(entry), protocol=protocol, group=group)
    return PaperTable(paper=paper, title=published.title(paper), dataset=dataset, protocol=protocol,
                      methods=list(dict.fromkeys(k[0] for k in cells)),
                      pairs=list(dict.fromkeys(k[1:] for k in cells)), cells=cells)


def paper_tables(selection: Selection, published: PublishedTable, dataset: str) -> list[PaperTable]:
    """One table per paper with numbers on ``dataset``, whether or not any of its cells has runs yet."""
    return [paper_table(selection, published, dataset, paper) for paper in published.papers_of(dataset)]


def unpublished_groups(selection: Selection, tables: list[PaperTable]) -> list[Group]:
    """Groups that fill no cell any paper printed (e.g. CKD on CIFAR-100): listed with the variants, uncompared."""
    shown = {id(c.group) for table in tables for c in table.cells.values() if c.group is not None}
    unshown: dict[int, Group] = {}
    for group in selection.chosen.values():
        if id(group) not in shown:
            unshown.setdefault(id(group), group)
    return list(unshown.values())
