"""Throughput of several fast-path runs packed onto one GPU, against one run alone.

    python scripts/bench_packing.py --side-by-side 2,4 --concurrent 2,4 --out results/bench/<gpu>_packing.md
    python scripts/bench_packing.py --images 256 --distiller kd --teacher resnet8 --student resnet8 --epochs 1 \\
        --concurrent 2                                      # a CPU smoke run

At CIFAR's batch of 64 one run leaves most of a large GPU idle. ``--concurrent N`` trains N runs
(seeds 0..N-1) as N processes at once, ``--side-by-side N`` as one process (``side_by_side_seeds``:
steps interleaved, one shared teacher-output cache). Each measurement is a whole ``run_job`` (the
command line's code path) on generated CIFAR-100-shaped files, in its own processes so its peak
memory is its own; runs train ``--epochs`` epochs and the figures come from the last one. Printed:
summed images/s, seconds per 50,000-image epoch per run, peak memory, and the ratio against one run
alone measured in the same invocation. Packing is measured whole run after whole run, so unlike
``scripts/bench.py`` (single steps, interleaved) its ratios also carry the machine's drift.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from distillbench.benchmark.workspace import generated_cell  # noqa: E402

RESULT_TAG = "BENCH_RESULT "
CIFAR_EPOCH = 50_000
FAST = ["trainer=fast", "dataset.loader=auto"]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--distiller", default="crd")
    parser.add_argument("--teacher", default="resnet32x4")
    parser.add_argument("--student", default="resnet8x4")
    parser.add_argument("--images", type=int, default=CIFAR_EPOCH, help="training images per epoch")
    parser.add_argument("--test-images", type=int, default=1000)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--epochs", type=int, default=2, help="the last epoch is measured")
    parser.add_argument("--workers", type=int, default=8)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--concurrent", default="", help="e.g. 2,4: runs in as many processes at once")
    parser.add_argument("--side-by-side", default="", help="e.g. 2,4: runs in one process (side_by_side_seeds)")
    parser.add_argument("--override", action="append", default=[], help="extra config override (repeatable)")
    parser.add_argument("--out", type=Path, help="also write the table (markdown) here, and its .json twin")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    return parser.parse_args(argv)


# ------------------------------------------------------------------ one measured run (a child process)
def run_worker(spec: dict) -> dict:
    from hydra import compose, initialize_config_dir

    from distillbench.catalog import CONFIG_DIR
    from distillbench.jobs import run_job, run_side_by_side
    from distillbench.loggers import read_metrics

    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        cfg = compose(config_name="config", overrides=spec["overrides"])
    cfg.run_dir = spec["run_dir"]
    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()
    run_dir = Path(spec["run_dir"])
    if cfg.side_by_side_seeds:
        run_side_by_side(cfg, run_dir)
        run_dirs = [run_dir.parent / f"seed{seed}" for seed in cfg.side_by_side_seeds]
    else:
        run_job(cfg, run_dir)
        run_dirs = [run_dir]
    last = [read_metrics(d)[-1] for d in run_dirs]
    if torch.cuda.is_available() and cfg.trainer.device != "cpu":
        peak, peak_kind = torch.cuda.max_memory_allocated(), "GPU"
    else:
        peak, peak_kind = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024, "host RSS"
    return {"images_per_s": sum(m["time/images_per_s"] for m in last), "epoch_s": max(m["time/epoch_s"] for m in last),
            "peak_bytes": peak, "peak_kind": peak_kind}


def spawn(spec: dict) -> subprocess.Popen:
    env = {**os.environ, "WANDB_MODE": "disabled"}
    return subprocess.Popen([sys.executable, __file__, "--worker", json.dumps(spec)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env)


def collect(process: subprocess.Popen) -> dict:
    out, err = process.communicate()
    for line in out.splitlines():
        if line.startswith(RESULT_TAG):
            return json.loads(line[len(RESULT_TAG):])
    raise RuntimeError(f"A benchmark run failed (exit {process.returncode}):\n{err[-4000:]}")


# ------------------------------------------------------------------ the parent
def base_overrides(args: argparse.Namespace, data_root: Path, teacher_file: Path, runs: Path) -> list[str]:
    return [
        f"distiller={args.distiller}", f"teacher={args.teacher}", f"student={args.student}",
        f"teacher.checkpoint={teacher_file}", "teacher.expected_acc1=null",
        f"dataset.root={data_root}", "dataset.verify_checksums=false",
        f"dataset.batch_size={args.batch_size}", f"dataset.num_workers={args.workers}",
        f"dataset.test_num_workers={min(args.workers, 2)}", f"trainer.epochs={args.epochs}",
        f"trainer.device={args.device}", "trainer.progress=false", "logger.wandb.mode=disabled",
        "logger.console=false", f"paths.runs={runs}", f"paths.cache={runs / 'cache'}", *FAST, *args.override,
    ]


def packings(args: argparse.Namespace) -> list[tuple[int, str]]:
    """(runs, how) to measure: one run alone first, the baseline of the ratios."""
    jobs = [(1, "processes")]
    jobs += [(int(n), "processes") for n in args.concurrent.split(",") if n and int(n) > 1]
    jobs += [(int(n), "one process") for n in args.side_by_side.split(",") if n and int(n) > 1]
    return jobs


def measure(args: argparse.Namespace) -> list[dict]:
    rows = []
    with tempfile.TemporaryDirectory(prefix="distillbench-packing-") as tmp:
        tmp = Path(tmp)
        data_root, teacher_file = generated_cell(tmp, args.images, args.test_images, args.teacher)
        base = base_overrides(args, data_root, teacher_file, tmp / "runs")
        for n, packing in packings(args):
            folder = tmp / "runs" / f"x{n}_{packing.replace(' ', '_')}"
            common = [*base, f"name=packing_x{n}"]
            if packing == "one process":
                seeds = ",".join(str(seed) for seed in range(n))
                specs = [{"overrides": [*common, f"side_by_side_seeds=[{seeds}]"], "run_dir": str(folder / "seed0")}]
            else:
                specs = [{"overrides": [*common, f"seed={seed}"], "run_dir": str(folder / f"seed{seed}")}
                         for seed in range(n)]
            start = time.perf_counter()
            results = [collect(p) for p in [spawn(spec) for spec in specs]]
            rows.append(summarise(n, packing, results, time.perf_counter() - start))
            print(format_row(rows[-1], rows[0]), flush=True)
    return rows


def summarise(n: int, packing: str, results: list[dict], wall_s: float) -> dict:
    images_per_s = sum(r["images_per_s"] for r in results)
    return {
        "runs": n, "packing": packing, "images_per_s": images_per_s,
        "s_per_cifar_epoch": CIFAR_EPOCH / (images_per_s / n), "wall_s": wall_s,
        "peak_gb": max(r["peak_bytes"] for r in results) / 1e9, "peak_kind": results[0]["peak_kind"],
    }


HEADER = ("| runs at once | images/s (sum) | s per 50k-image epoch (per run) | peak memory | × one run |\n"
          "|---|---|---|---|---|")


def format_row(row: dict, alone: dict) -> str:
    runs = f"{row['runs']} ({row['packing']})" if row["runs"] > 1 else "1"
    return (f"| {runs} | {row['images_per_s']:,.0f} | {row['s_per_cifar_epoch']:.2f} | "
            f"{row['peak_gb']:.2f} GB ({row['peak_kind']}) | {row['images_per_s'] / alone['images_per_s']:.2f} |")


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.worker:
        print(RESULT_TAG + json.dumps(run_worker(json.loads(args.worker))), flush=True)
        return
    from distillbench.benchmark.machine import describe, machine_info
    from distillbench.build import resolve_device

    machine = machine_info(resolve_device(args.device))
    title = (f"fast path, {args.distiller} {args.teacher} -> {args.student}, batch {args.batch_size}, {args.images} "
             f"training images, epoch {args.epochs} of {args.epochs} measured; {describe(machine)}")
    print(title + "\n\n" + HEADER, flush=True)
    rows = measure(args)
    table = "\n".join([title, "", HEADER, *(format_row(row, rows[0]) for row in rows)])
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(table + "\n")
        args.out.with_suffix(".json").write_text(json.dumps({"title": title, "machine": machine, "rows": rows},
                                                            indent=2) + "\n")


if __name__ == "__main__":
    main()
