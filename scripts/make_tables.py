"""Turn finished runs into the papers' tables, beside the published numbers.

    python scripts/make_tables.py                     # runs/ -> results/tables/
    python scripts/make_tables.py --runs a/ b/ --wandb ENTITY/PROJECT
"""

from __future__ import annotations

import argparse
from pathlib import Path

from distillbench.reporting.published import PublishedTable
from distillbench.reporting.runs import load_local_runs, load_wandb_runs
from distillbench.reporting.tables import METRICS, build_cells, plot_against_published, render_markdown

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", nargs="*", type=Path, default=[Path("runs")], help="folders holding run directories")
    parser.add_argument("--wandb", action="append", default=[], help="also read finished runs of ENTITY/PROJECT")
    parser.add_argument("--published", type=Path, default=ROOT / "results" / "paper" / "published.yaml")
    parser.add_argument("--out", type=Path, default=ROOT / "results" / "tables")
    parser.add_argument("--dataset", action="append", help="datasets to tabulate (default: those with runs)")
    args = parser.parse_args()

    records = load_local_runs(args.runs)
    for project in args.wandb:
        records += load_wandb_runs(project)
    published = PublishedTable(args.published)
    datasets = args.dataset or sorted({r.dataset for r in records})
    if not datasets:
        raise SystemExit(f"No finished runs (summary.json) under {', '.join(map(str, args.runs))}.")

    args.out.mkdir(parents=True, exist_ok=True)
    for dataset in datasets:
        cells = {metric: build_cells(records, published, dataset, metric) for metric in METRICS}
        for metric, metric_cells in cells.items():
            path = args.out / f"{dataset}_{metric}.md"
            path.write_text(render_markdown(metric_cells, dataset, metric))
            print(f"wrote {path}")
        png = args.out / f"{dataset}_vs_published.png"
        plot_against_published(cells, png)
        print(f"wrote {png}")


if __name__ == "__main__":
    main()
