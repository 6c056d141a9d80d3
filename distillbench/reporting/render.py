"""The papers' tables as Markdown and CSV, the variants table, and the index of what was written.

A paper's Markdown table has one column per teacher → student pair and one cell string per method:
``ours · published · difference`` (e.g. ``73.20 ± 0.20 (3) · 73.33 · -0.13``), so that it reads next to the
paper. Its CSV has the same rows and columns, each pair split into sub-columns (mean, std, n, published,
diff, and the group, precision and code revision behind the number) for a spreadsheet or pandas.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Sequence

from distillbench.reporting.papers import PaperTable
from distillbench.reporting.runs import DEFAULT_VARIANT
from distillbench.reporting.tables import Cell, Group, Stats

EMPTY = "—"
# The marks a cell may carry, in the order the legend lists them.
MARKS = {
    "†": "the published number lies outside our mean ± 2 std",
    "⚠": "fewer seeds than {paper} averaged",
    "‡": "filled by a non-default variant (`--variant`; named under the table)",
    "§": "the published number's source or attribution is in doubt (`doubtful` in results/paper/published.yaml)",
}
METRIC_WORDS = {
    "last_epoch": "the **last epoch** (the final epoch's test top-1), as {paper} reports it",
    "best_epoch": "each run's **best epoch** (its highest test top-1 over training), as {paper} reports it",
    "unknown": ("the **last epoch** (the final epoch's test top-1): {paper} does not say whether it reports the "
                "last or the best epoch, so ours is read the stricter way"),
}
CSV_PARTS = ("mean", "std", "n", "published", "diff", "group", "precision", "code_revision")


def pair_name(teacher: str, student: str) -> str:
    return f"{teacher} → {student}"


def format_ours(ours: Stats) -> str:
    """``mean ± std`` over seeds (± left out for one seed)."""
    text = f"{ours.mean:.2f}"
    if ours.n > 1:
        text += f" ± {ours.std:.2f}"
    return text


def cell_marks(cell: Cell) -> dict[str, str]:
    """Which part of the cell string each mark follows: ours (⚠ ‡), published (§), difference (†)."""
    marks = {}
    if cell.fewer_seeds:
        marks["⚠"] = "ours"
    if cell.ours is not None and cell.variant != DEFAULT_VARIANT:
        marks["‡"] = "ours"
    if cell.published is not None and cell.published.doubtful and cell.published.top1 is not None:
        marks["§"] = "published"
    if cell.outside_spread:
        marks["†"] = "difference"
    return marks


def format_paper_cell(cell: Cell) -> str:
    """``mean ± std (n) · published · difference``, with — for a part that is missing."""
    marks = cell_marks(cell)

    def marked(text: str, part: str) -> str:
        return " ".join([text, *(m for m, p in marks.items() if p == part)])

    ours = marked(f"{format_ours(cell.ours)} ({cell.ours.n})", "ours") if cell.ours is not None else EMPTY
    top1 = cell.published.top1 if cell.published is not None else None
    published = marked(f"{top1:.2f}", "published") if top1 is not None else "n/a"
    diff = cell.difference
    difference = marked(f"{diff:+.2f}", "difference") if diff is not None else EMPTY
    return f"{ours} · {published} · {difference}"


def _header(table: PaperTable) -> list[str]:
    name, protocol = table.name, table.protocol
    seeds = (f"{name} averaged {protocol.seeds} run{'s' if protocol.seeds != 1 else ''} per cell"
             if protocol.seeds else f"{name} does not state how many runs it averaged")
    metric = METRIC_WORDS.get(protocol.report, METRIC_WORDS["unknown"]).format(paper=name)
    used = {m for c in table.cells.values() for m in cell_marks(c)}
    legend = "; ".join(f"{m} {text.format(paper=name)}" for m, text in MARKS.items() if m in used)
    return [f"## {name} on {table.dataset}: {table.metric_label} (%)", "",
            f"{table.title}. Top-1 accuracy (%) at {metric}; {seeds}. Each cell reads "
            "`ours · published · difference`: ours is the mean ± std (n seeds) over one identity group of runs, "
            "published is the paper's number, the "
            f"difference is ours minus published, in points; {EMPTY} marks a part with no value (no runs yet), "
            "n/a a cell the paper left empty." + (f" Marks: {legend}." if legend else ""), ""]


def _grid(table: PaperTable) -> list[str]:
    lines = ["| method | " + " | ".join(pair_name(t, s) for t, s in table.pairs) + " |",
             "|---|" + "---|" * len(table.pairs)]
    for method in table.methods:
        row = [format_paper_cell(table.cells[(method, t, s)]) if (method, t, s) in table.cells else ""
               for t, s in table.pairs]
        lines.append(f"| {method} | " + " | ".join(row) + " |")
    return lines


def _trace(table: PaperTable) -> list[str]:
    """Where each measured number comes from: experiment, variant, identity group, seeds, precision, code."""
    filled = table.filled
    lines = ["", f"{len(filled)} of {len(table.cells)} cells have runs.", ""]
    if filled:
        lines += ["| method | teacher → student | experiment | variant | group | seeds | precision | code revision |",
                  "|---|---|---|---|---|---|---|---|"]
        for c in filled:
            g = c.group
            lines.append(f"| {c.method} | {pair_name(c.teacher, c.student)} | {g.first.experiment or '?'} | "
                         f"`{g.first.variant}` | `{g.first.group or '—'}` | {','.join(map(str, g.seeds))} | "
                         f"{g.first.precision or '?'} | {', '.join(g.code_revisions) or '?'} |")
        lines.append("")
    sources: dict[str, int] = {}
    for c in table.cells.values():
        sources[c.published.source] = sources.get(c.published.source, 0) + 1
    lines.append(f"Published numbers: results/paper/published.yaml, paper `{table.paper}`; from "
                 + "; ".join(f"{source} ({n} cells)" for source, n in sources.items()) + ".")
    return lines


def render_paper_markdown(table: PaperTable) -> str:
    return "\n".join([*_header(table), *_grid(table), *_trace(table)]) + "\n"


def _number(value: float | None) -> str:
    return "" if value is None else f"{value:.4f}".rstrip("0").rstrip(".")


def _csv_parts(cell: Cell | None) -> list[str]:
    if cell is None:
        return [""] * len(CSV_PARTS)
    ours, g = cell.ours, cell.group
    measured = [_number(ours.mean), _number(ours.std), str(ours.n)] if ours is not None else ["", "", ""]
    trace = ([g.first.group or "", g.first.precision or "", " ".join(g.code_revisions)] if ours is not None
             else ["", "", ""])
    return [*measured, _number(cell.published.top1 if cell.published else None), _number(cell.difference), *trace]


def render_paper_csv(table: PaperTable) -> str:
    """The Markdown table's rows and columns, each pair as sub-columns; ``metric`` names the summary value."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["method", "metric", *(f"{t}→{s} {part}" for t, s in table.pairs for part in CSV_PARTS)])
    for method in table.methods:
        row = [method, table.metric]
        for t, s in table.pairs:
            row += _csv_parts(table.cells.get((method, t, s)))
        writer.writerow(row)
    return out.getvalue()


# ---------------------------------------------------------------------------------------------- variants
def _epochs(g: Group) -> str:
    done = sorted({r.epochs_done for r in g.runs if r.epochs_done is not None})
    planned = sorted({r.epochs_planned for r in g.runs if r.epochs_planned is not None})
    text = "/".join(",".join(map(str, v)) for v in (done, planned) if v)
    return text or "?"


UNPUBLISHED = "ok; no paper printed this cell"


def variant_rows(groups: Sequence[Group], unpublished: Sequence[Group] = ()) -> list[dict]:
    rows = []
    for g in [*unpublished, *groups]:
        status = UNPUBLISHED if any(g is u for u in unpublished) else g.status
        rows.append({
            "experiment": g.first.experiment or "?", "variant": g.first.variant,
            "group": g.first.group or "—", "n": len(g.runs), "seeds": g.seeds,
            "acc1_last": g.stats("acc1_last"), "acc1_best": g.stats("acc1_best"), "epochs": _epochs(g),
            "precision": g.first.precision or "?", "code": ", ".join(g.code_revisions) or "?",
            "status": status + (f"; {len(g.duplicates)} duplicate seed(s) dropped" if g.duplicates else ""),
        })
    return rows


def render_variants_markdown(groups: Sequence[Group], dataset: str, unpublished: Sequence[Group] = ()) -> str:
    lines = [f"## {dataset}: variants and runs not compared with a published number", "",
             "Every group of runs that stands in no paper's table: cells no paper printed (e.g. CKD), overrides "
             "of an experiment (variant), a second group of the same cell (e.g. bf16 beside float32), unfinished "
             "runs, runs on generated data or with fewer epochs, and runs written before run.json existed. n "
             "counts seeds of one identity group; epochs reads done/planned. Never compared with a published "
             "number.", "",
             "| experiment | variant | group | n | last: mean ± std | best: mean ± std | epochs | precision | "
             "code revision | status |", "|---|---|---|---|---|---|---|---|---|---|"]
    rows = variant_rows(groups, unpublished)
    for row in rows:
        last = format_ours(row["acc1_last"]) if row["acc1_last"] else EMPTY
        best = format_ours(row["acc1_best"]) if row["acc1_best"] else EMPTY
        lines.append(f"| {row['experiment']} | `{row['variant']}` | `{row['group']}` | {row['n']} | {last} | "
                     f"{best} | {row['epochs']} | {row['precision']} | {row['code']} | {row['status']} |")
    if not rows:
        lines.append("| (none) | | | | | | | | | |")
    return "\n".join(lines) + "\n"


# ------------------------------------------------------------------------------------------------ index
def index_lines(dataset: str, tables: list[PaperTable], variants_file: str, n_variants: int,
                plot_file: str | None) -> list[str]:
    """One dataset's part of index.md: its paper tables, the papers with no runs yet (one line), the rest."""
    lines = [f"## {dataset}", ""]
    for t in tables:
        if t.filled:
            lines.append(f"- {t.name}: [{t.slug}.md]({t.slug}.md), [{t.slug}.csv]({t.slug}.csv): "
                         f"{len(t.filled)} of {_cells(len(t.cells))} have runs; {t.metric_label}.")
    empty = [t for t in tables if not t.filled]
    if empty:
        lines.append("- No runs yet for " + ", ".join(f"{t.name} ({_cells(len(t.cells))} published)" for t in empty)
                     + ": no table.")
    lines.append(f"- [{variants_file}]({variants_file}): {n_variants} group(s) not compared with a published "
                 "number.")
    if plot_file:
        lines.append(f"- [{plot_file}]({plot_file}): ours against the published numbers, one panel per paper.")
    return lines + [""]


def _cells(n: int) -> str:
    return f"{n} cell{'s' if n != 1 else ''}"


def render_index(command: str, sections: list[list[str]]) -> str:
    return "\n".join(["# Tables", "", f"Written by `{command}`. One table per paper, laid out as the paper's "
                      "(methods as rows, teacher → student pairs as columns); results/README.md explains the files.",
                      "", *(line for s in sections for line in s)])
