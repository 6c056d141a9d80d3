"""Turn runs into the papers' tables, beside the published numbers.

    python scripts/make_tables.py                     # runs/ -> results/tables/
    python scripts/make_tables.py --runs a/ b/ --wandb ENTITY/PROJECT
    python scripts/make_tables.py --variant kd_resnet32x4_8x4:trainer.precision=bf16   # a named variant fills its cell

Per dataset: <dataset>_acc1_last.md and <dataset>_acc1_best.md (each compared only with papers that report
that kind of number), <dataset>_protocol.md (each cell by its paper's rule, with seeds n/N),
<dataset>_variants.md (everything not compared: overrides, other groups, unfinished runs, generated data,
runs without run.json) and <dataset>_vs_published.png. A cell is the mean ± std over the seeds of one
identity group; groups are never averaged together. Cells with fewer seeds than their paper averaged are
marked, and the commands that run the missing seeds are printed (also with --commands-only).
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run as a file from anywhere
    sys.path.insert(0, str(ROOT))

from distillbench.reporting.published import PublishedTable  # noqa: E402
from distillbench.reporting.runs import load_local_runs, load_wandb_runs  # noqa: E402
from distillbench.reporting.tables import (  # noqa: E402
    METRICS,
    PROTOCOL,
    build_cells,
    missing_seed_commands,
    plot_against_published,
    render_markdown,
    render_protocol_markdown,
    render_variants_markdown,
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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", nargs="*", type=Path, default=[Path("runs")], help="folders holding run directories")
    parser.add_argument("--wandb", action="append", default=[], help="also read finished runs of ENTITY/PROJECT")
    parser.add_argument("--published", type=Path, default=ROOT / "results" / "paper" / "published.yaml")
    parser.add_argument("--out", type=Path, default=ROOT / "results" / "tables")
    parser.add_argument("--dataset", action="append", help="datasets to tabulate (default: those with runs)")
    parser.add_argument("--variant", action="append", default=[], metavar="[EXPERIMENT:]VARIANT",
                        help="let this variant (a run.json 'variant', e.g. trainer.precision=bf16) fill the main "
                             "tables in place of the default one; such cells are marked ‡. Repeatable.")
    parser.add_argument("--commands-only", action="store_true",
                        help="write nothing; print the commands that complete each cell's seed set")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s: %(message)s")

    records = load_local_runs(args.runs)
    for project in args.wandb:
        records += load_wandb_runs(project)
    published = PublishedTable(args.published)
    datasets = args.dataset or sorted({r.dataset for r in records})
    if not datasets:
        raise SystemExit(f"No runs under {', '.join(map(str, args.runs))}.")
    variants = parse_variants(args.variant)

    if not args.commands_only:
        args.out.mkdir(parents=True, exist_ok=True)
    commands = []
    for dataset in datasets:
        selection = select(records, published, dataset, variants)
        cells = {metric: build_cells(records, published, dataset, metric, selection=selection) for metric in METRICS}
        protocol_cells = build_cells(records, published, dataset, PROTOCOL, selection=selection)
        commands += missing_seed_commands(protocol_cells)
        if args.commands_only:
            continue
        outputs = {f"{dataset}_{metric}.md": render_markdown(metric_cells, dataset, metric)
                   for metric, metric_cells in cells.items()}
        outputs[f"{dataset}_protocol.md"] = render_protocol_markdown(protocol_cells, dataset)
        outputs[f"{dataset}_variants.md"] = render_variants_markdown(selection.variants, dataset)
        for name, text in outputs.items():
            (args.out / name).write_text(text)
            print(f"wrote {args.out / name}")
        png = args.out / f"{dataset}_vs_published.png"
        plot_against_published(cells, png)
        print(f"wrote {png}")
        if selection.variants:
            print(f"{dataset}: {len(selection.variants)} group(s) listed as variants, not compared with a "
                  f"published number")
    if commands:
        print("\nCells with fewer seeds than their paper averaged; to run the missing seeds:")
        for command in commands:
            print(f"  {command}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
