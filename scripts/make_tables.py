"""Turn runs into the papers' own tables, each cell beside the paper's number.

    python scripts/make_tables.py                     # runs/ -> results/tables/
    python scripts/make_tables.py --runs a/ b/ --wandb ENTITY/PROJECT
    python scripts/make_tables.py --variant kd_resnet32x4_8x4:trainer.precision=bf16   # a named variant fills its cell

Per dataset and paper with runs (CRD, DKD, ...): <dataset>_<paper>.md and .csv, laid out as the paper's table
(methods as rows, teacher -> student pairs as columns), each cell `mean ± std (n) · published · difference`
of the top-1 the paper reports (last or best epoch, named in the header). Per dataset: <dataset>_variants.md
(everything not compared: cells no paper printed, overrides, other groups, unfinished runs, generated data,
runs without run.json) and <dataset>_vs_published.png (one panel per paper); index.md lists it all. A cell is
the mean ± std over the seeds of one identity group; groups are never averaged together. Cells with fewer
seeds than their paper averaged are marked, and the commands that run the missing seeds are printed (also
with --commands-only).
"""

from __future__ import annotations

import argparse
import logging
import shlex
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run as a file from anywhere
    sys.path.insert(0, str(ROOT))

from distillbench.errors import EXIT_USER_ERROR, UserError  # noqa: E402
from distillbench.reporting import plot  # noqa: E402
from distillbench.reporting.papers import PaperTable, paper_tables, unpublished_groups  # noqa: E402
from distillbench.reporting.published import PublishedTable  # noqa: E402
from distillbench.reporting.render import (  # noqa: E402
    index_lines,
    render_index,
    render_paper_csv,
    render_paper_markdown,
    render_variants_markdown,
)
from distillbench.reporting.runs import load_local_runs, load_wandb_runs  # noqa: E402
from distillbench.reporting.tables import (  # noqa: E402
    PROTOCOL,
    Selection,
    build_cells,
    missing_seed_commands,
    select,
)


def parse_variants(values: list[str]) -> dict[str, str]:
    """``EXPERIMENT:VARIANT`` (that experiment only) or ``VARIANT`` (every experiment that has it)."""
    chosen = {}
    for value in values:
        head, sep, tail = value.partition(":")
        if sep and "=" not in head and "," not in head:
            chosen[head] = tail
        else:
            chosen["*"] = value
    return chosen


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", nargs="*", type=Path, default=[Path("runs")], help="folders holding run directories")
    parser.add_argument("--wandb", action="append", default=[], metavar="ENTITY/PROJECT",
                        help="also read the finished runs of this W&B project (needs `wandb login`)")
    parser.add_argument("--published", type=Path, default=ROOT / "results" / "paper" / "published.yaml")
    parser.add_argument("--out", type=Path, default=ROOT / "results" / "tables")
    parser.add_argument("--dataset", action="append", help="datasets to tabulate (default: those with runs)")
    parser.add_argument("--variant", action="append", default=[], metavar="[EXPERIMENT:]VARIANT",
                        help="let this variant (a run.json 'variant', e.g. trainer.precision=bf16) fill the main "
                             "tables in place of the default one; such cells are marked ‡. Repeatable.")
    parser.add_argument("--commands-only", action="store_true",
                        help="write nothing; print the commands that complete each cell's seed set")
    return parser.parse_args(argv)


def write(path: Path, text: str) -> None:
    path.write_text(text)
    print(f"wrote {path}")


def write_dataset(out: Path, dataset: str, tables: list[PaperTable], selection: Selection) -> list[str]:
    """A dataset's paper tables (those with runs), its variants table and plot; its lines of index.md."""
    for table in tables:
        if table.filled:
            write(out / f"{table.slug}.md", render_paper_markdown(table))
            write(out / f"{table.slug}.csv", render_paper_csv(table))
    empty = [t.name for t in tables if not t.filled]
    if empty:
        print(f"{dataset}: no runs yet in the tables of {', '.join(empty)}; no table written for them")
    unpublished = unpublished_groups(selection, tables)
    variants_file = f"{dataset}_variants.md"
    write(out / variants_file, render_variants_markdown(selection.variants, dataset, unpublished))
    plot_file = None
    if not plot.available():
        print("matplotlib is not installed: no plot (pip install matplotlib)")
    elif plot.save_plot(tables, dataset, out / f"{dataset}_vs_published.png"):
        plot_file = f"{dataset}_vs_published.png"
        print(f"wrote {out / plot_file}")
    else:
        print(f"{dataset}: no cell has both runs and a published number; no plot")
    return index_lines(dataset, tables, variants_file, len(selection.variants) + len(unpublished), plot_file)


def make_tables(args: argparse.Namespace, command: str) -> int:
    records = [r for project in args.wandb for r in load_wandb_runs(project)]  # first: a refused login fails fast
    records += load_local_runs(args.runs)
    if not args.published.is_file():
        raise UserError(f"The published numbers file {args.published} does not exist; pass --published with the "
                        "path of results/paper/published.yaml.")
    published = PublishedTable(args.published)
    datasets = args.dataset or sorted({r.dataset for r in records})
    if not datasets:
        raise UserError(f"No runs under {', '.join(map(str, args.runs))}. Run an experiment first (e.g. "
                        "`python -m distillbench experiment=kd_resnet32x4_8x4`), or pass --runs with the folders "
                        "that hold run directories.")
    variants = parse_variants(args.variant)

    if not args.commands_only:
        args.out.mkdir(parents=True, exist_ok=True)
    commands, index = [], []
    for dataset in datasets:
        selection = select(records, published, dataset, variants)
        commands += missing_seed_commands(build_cells(records, published, dataset, PROTOCOL, selection=selection))
        if not args.commands_only:
            index.append(write_dataset(args.out, dataset, paper_tables(selection, published, dataset), selection))
    if index:
        write(args.out / "index.md", render_index(command, index))
    if commands:
        print("\nCells with fewer seeds than their paper averaged; to run the missing seeds:")
        for line in commands:
            print(f"  {line}")
    return 0


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s: %(message)s")
    command = " ".join(["python scripts/make_tables.py", *map(shlex.quote, sys.argv[1:] if argv is None else argv)])
    try:
        return make_tables(args, command)
    except UserError as err:
        print(f"make_tables: {err}", file=sys.stderr)
        return EXIT_USER_ERROR


if __name__ == "__main__":
    sys.exit(main())
