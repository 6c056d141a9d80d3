"""Measure the reference and the fast training path of one distillation cell, in one run.

    python scripts/bench.py                                   # CRD resnet32x4 -> resnet8x4, full size
    python scripts/bench.py --images 256 --teacher resnet8 --student resnet8 --epochs 2   # a CPU smoke run
    python scripts/bench.py --side-by-side 2,4 --concurrent 2,4 --out results/bench/h100.md

Each measurement is a real ``run_job`` (the command line's code path) on generated CIFAR-100-shaped
files, in its own process so its peak memory is its own. A run trains ``--epochs`` epochs; the
first pays for warm-up (cuDNN autotuning, compilation, building the teacher-output cache) and the
figures come from the last one. Printed per path: training images/s, seconds per 50,000-image
epoch, achieved TFLOP/s (FLOPs counted with torch's FlopCounterMode: the student's forward and
backward plus the teacher's forward unless it is cached), peak memory, and the ratio against the
reference path measured in the same invocation. Runs per GPU: ``--concurrent N`` runs N fast-path
runs (seeds 0..N-1) as N processes at once, ``--side-by-side N`` as one process
(``side_by_side_seeds``); both report the summed throughput.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

RESULT_TAG = "BENCH_RESULT "
CIFAR_EPOCH = 50_000

PATHS = {
    # DataLoader with PIL transforms in workers, float32, live teacher, torch's default SGD.
    "reference": ["dataset.loader=torch", "trainer.precision=float32", "trainer.channels_last=false",
                  "trainer.fused_optimizer=false", "trainer.teacher_cache=false", "trainer.compile=false"],
    # Data on the device, bf16 on a GPU, NHWC, fused SGD, cached teacher outputs where the method allows.
    "fast": ["dataset.loader=device", "trainer.precision=auto", "trainer.channels_last=auto",
             "trainer.fused_optimizer=auto", "trainer.teacher_cache=auto", "trainer.compile=false"],
    # The same, plus torch.compile with CUDA graphs.
    "fast_compiled": ["dataset.loader=device", "trainer.precision=auto", "trainer.channels_last=auto",
                      "trainer.fused_optimizer=auto", "trainer.teacher_cache=auto", "trainer.compile=reduce-overhead"],
}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--distiller", default="crd")
    parser.add_argument("--teacher", default="resnet32x4")
    parser.add_argument("--student", default="resnet8x4")
    parser.add_argument("--images", type=int, default=CIFAR_EPOCH, help="training images per epoch")
    parser.add_argument("--test-images", type=int, default=1000)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--epochs", type=int, default=2, help="the last epoch is measured")
    parser.add_argument("--workers", type=int, default=8, help="DataLoader workers of the reference path")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--paths", default="reference,fast", help=f"comma-separated, of {', '.join(PATHS)}")
    parser.add_argument("--concurrent", default="", help="e.g. 2,4: fast-path runs in as many processes at once")
    parser.add_argument("--side-by-side", default="", help="e.g. 2,4: fast-path runs in one process (seeds)")
    parser.add_argument("--override", action="append", default=[], help="extra config override (repeatable)")
    parser.add_argument("--out", type=Path, help="also write the table (markdown) here")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    return parser.parse_args(argv)


# ------------------------------------------------------------------ one measured run (a child process)
def run_worker(spec: dict) -> dict:
    from hydra import compose, initialize_config_dir

    from distillbench.cli import run_job, run_side_by_side
    from distillbench.loggers import read_metrics

    with initialize_config_dir(config_dir=str(REPO / "configs"), version_base="1.3"):
        cfg = compose(config_name="config", overrides=spec["overrides"])
    cfg.run_dir = spec["run_dir"]
    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()
    start = time.perf_counter()
    run_dir = Path(spec["run_dir"])
    if cfg.side_by_side_seeds:
        run_side_by_side(cfg, run_dir)
        run_dirs = [run_dir.parent / f"seed{seed}" for seed in cfg.side_by_side_seeds]
    else:
        run_job(cfg, run_dir)
        run_dirs = [run_dir]
    wall = time.perf_counter() - start
    last = [read_metrics(d)[-1] for d in run_dirs]
    if torch.cuda.is_available() and cfg.trainer.device != "cpu":
        peak, peak_kind = torch.cuda.max_memory_allocated(), "GPU"
    else:
        peak, peak_kind = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024, "host RSS"
    return {"images_per_s": sum(m["time/images_per_s"] for m in last), "epoch_s": max(m["time/epoch_s"] for m in last),
            "wall_s": wall, "peak_bytes": peak, "peak_kind": peak_kind}


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
def flops_per_image(args: argparse.Namespace, teacher_cached: bool) -> float:
    """Training FLOPs per image: student forward + backward, plus the teacher's forward when it runs."""
    from torch.utils.flop_counter import FlopCounterMode

    from distillbench.models import create_model
    from distillbench.models.outputs import forward_features

    x = torch.zeros(2, 3, 32, 32)
    student, teacher = create_model(args.student, num_classes=100), create_model(args.teacher, num_classes=100)
    with FlopCounterMode(display=False) as counter:
        forward_features(student, x).logits.sum().backward()
    total = counter.get_total_flops()
    if not teacher_cached:
        with FlopCounterMode(display=False) as counter, torch.no_grad():
            teacher.eval()(x)
        total += counter.get_total_flops()
    return total / len(x)


def base_overrides(args: argparse.Namespace, data_root: Path, teacher_file: Path, runs: Path) -> list[str]:
    return [
        f"distiller={args.distiller}", f"teacher={args.teacher}", f"student={args.student}",
        f"teacher.checkpoint={teacher_file}", "teacher.expected_acc1=null",
        f"dataset.root={data_root}", "dataset.verify_checksums=false",
        f"dataset.batch_size={args.batch_size}", f"dataset.num_workers={args.workers}",
        f"dataset.test_num_workers={min(args.workers, 2)}", f"trainer.epochs={args.epochs}",
        f"trainer.device={args.device}", "trainer.progress=false", "logger.wandb.mode=disabled",
        "logger.console=false", f"paths.runs={runs}", f"paths.cache={runs / 'cache'}", *args.override,
    ]


def measure(args: argparse.Namespace) -> list[dict]:
    from distillbench.data import write_fake_cifar100
    from distillbench.models import create_model

    rows = []
    with tempfile.TemporaryDirectory(prefix="distillbench-bench-") as tmp:
        tmp = Path(tmp)
        write_fake_cifar100(tmp / "data", n_train=args.images, n_test=args.test_images, seed=0)
        torch.manual_seed(0)
        teacher_file = tmp / "teacher.pth"
        torch.save({"model": create_model(args.teacher, num_classes=100).state_dict()}, teacher_file)
        base = base_overrides(args, tmp / "data", teacher_file, tmp / "runs")
        jobs = [(path, 1, "processes") for path in args.paths.split(",") if path]
        jobs += [("fast", int(n), "processes") for n in args.concurrent.split(",") if n and int(n) > 1]
        jobs += [("fast", int(n), "one process") for n in args.side_by_side.split(",") if n and int(n) > 1]
        for path, n, packing in jobs:
            if path not in PATHS:
                raise SystemExit(f"Unknown path '{path}'; choose from {', '.join(PATHS)}.")
            folder = tmp / "runs" / f"{path}_x{n}_{packing.replace(' ', '_')}"
            common = [*base, *PATHS[path], f"name=bench_{path}_x{n}"]
            if packing == "one process":
                seeds = ",".join(str(seed) for seed in range(n))
                specs = [{"overrides": [*common, f"side_by_side_seeds=[{seeds}]"], "run_dir": str(folder / "seed0")}]
            else:
                specs = [{"overrides": [*common, f"seed={seed}"], "run_dir": str(folder / f"seed{seed}")}
                         for seed in range(n)]
            results = [collect(p) for p in [spawn(spec) for spec in specs]]
            cached = path != "reference" and any(Path(tmp / "runs" / "cache").glob("teacher_outputs_*.pt"))
            rows.append(summarise(path, n, packing, results, flops_per_image(args, cached), cached))
            print(format_row(rows[-1], rows[0]), flush=True)
    return rows


def summarise(path: str, n: int, packing: str, results: list[dict], flops: float, cached: bool) -> dict:
    images_per_s = sum(r["images_per_s"] for r in results)
    return {
        "path": path, "runs": n, "packing": packing, "teacher_cached": cached, "images_per_s": images_per_s,
        "s_per_cifar_epoch": CIFAR_EPOCH / (images_per_s / n), "tflops": images_per_s * flops / 1e12,
        "peak_gb": max(r["peak_bytes"] for r in results) / 1e9, "peak_kind": results[0]["peak_kind"],
    }


HEADER = ("| path | runs at once | teacher | images/s (sum) | s per 50k-image epoch (per run) | "
          "achieved TFLOP/s | peak memory | × reference |\n|---|---|---|---|---|---|---|---|")


def format_row(row: dict, reference: dict) -> str:
    ratio = row["images_per_s"] / reference["images_per_s"]
    runs = f"{row['runs']} ({row['packing']})" if row["runs"] > 1 else "1"
    return (f"| {row['path']} | {runs} | {'cached' if row['teacher_cached'] else 'live'} | "
            f"{row['images_per_s']:,.0f} | {row['s_per_cifar_epoch']:.2f} | {row['tflops']:.3g} | "
            f"{row['peak_gb']:.2f} GB ({row['peak_kind']}) | {ratio:.2f} |")


def describe_machine(device: str) -> str:
    if torch.cuda.is_available() and device != "cpu":
        name = torch.cuda.get_device_name()
    else:
        name = f"CPU ({os.cpu_count()} cores, {platform.processor() or platform.machine()})"
    return f"{name}; torch {torch.__version__}; python {platform.python_version()}"


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.worker:
        print(RESULT_TAG + json.dumps(run_worker(json.loads(args.worker))), flush=True)
        return
    title = (f"{args.distiller} {args.teacher} -> {args.student}, batch {args.batch_size}, {args.images} training "
             f"images, epoch {args.epochs} of {args.epochs} measured; {describe_machine(args.device)}")
    print(title + "\n\n" + HEADER, flush=True)
    rows = measure(args)
    table = "\n".join([title, "", HEADER, *(format_row(row, rows[0]) for row in rows)])
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(table + "\n")
        args.out.with_suffix(".json").write_text(json.dumps({"title": title, "rows": rows}, indent=2) + "\n")


if __name__ == "__main__":
    main()
