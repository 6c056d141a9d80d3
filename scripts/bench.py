"""Time the training step of one distillation cell along several paths, interleaved in one process.

    python scripts/bench.py                                    # CRD resnet32x4 -> resnet8x4, 50,000 images
    python scripts/bench.py --paths reference_loop,reference,fast,fast_cached,fast_compiled,fast_step_compiled \\
        --count-ops --json results/bench/gpu_<date>.json --out results/bench/gpu_<date>.txt
    python scripts/bench.py --images 512 --teacher resnet8 --student resnet8 --rounds 3   # a CPU smoke run

Every path trains the same cell on the same generated CIFAR-100-shaped files, built once and kept in
memory side by side. After a warm-up (setup, the teacher-output cache, compilation) the paths are
timed in rounds, ``--steps`` steps of each in turn (A B C D A B C D ...), so that the machine's drifts
fall on all of them alike; steps that end an epoch (evaluation, checkpoint) are never timed. Printed
per path: the step time over the rounds (min and median), images/s, the ratio against the plain loop
in the papers' style (``reference_loop``, min and median), achieved TFLOP/s (FlopCounterMode), the
setup time, and with ``--count-ops`` the host operations per step (``distillbench.benchmark.op_count``).
Runs packed several to a GPU are measured by ``scripts/bench_packing.py``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import logging
import math
import os
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from distillbench.benchmark.interleave import Contestant, run_rounds, warm_up  # noqa: E402
from distillbench.benchmark.machine import describe, machine_info  # noqa: E402
from distillbench.benchmark.op_count import count_step_ops, cuda_sync, mark_cpu_kernels, no_sync  # noqa: E402
from distillbench.benchmark.workspace import generated_cell, write_json  # noqa: E402

CIFAR_EPOCH = 50_000
BASELINE = "reference_loop"


@dataclass(frozen=True)
class BenchPath:
    what: str
    overrides: tuple[str, ...]
    compiled: bool = False
    teacher_cached: bool = False
    plain_loop: bool = False


# The reference settings, spelt out (configs/trainer/default.yaml): float32, NCHW, torch's SGD, live teacher.
REFERENCE = ("dataset.loader=torch", "trainer.precision=float32", "trainer.channels_last=false",
             "trainer.fused_optimizer=false", "trainer.teacher_cache=false", "trainer.compile=false")
# The fast preset (configs/trainer/fast.yaml) with the device loader (what auto picks on a GPU).
FAST = ("trainer=fast", "dataset.loader=device")
PATHS = {
    BASELINE: BenchPath("plain loop in the papers' style: DataLoader + PIL workers, float32, live teacher, "
                        "loss.item() every step", REFERENCE, plain_loop=True),
    "reference": BenchPath("distillbench's trainer, reference settings (paper precision)", REFERENCE),
    "reference_compiled": BenchPath("reference settings + torch.compile", REFERENCE, compiled=True),
    "fast": BenchPath("trainer=fast (device loader, bf16, channels_last, fused SGD), live teacher",
                      (*FAST, "trainer.teacher_cache=false")),
    "fast_compiled": BenchPath("trainer=fast, live teacher, + torch.compile", (*FAST, "trainer.teacher_cache=false"),
                               compiled=True),
    "fast_cached": BenchPath("trainer=fast + teacher-output cache", (*FAST, "trainer.teacher_cache=true"),
                             teacher_cached=True),
    "fast_cached_compiled": BenchPath("trainer=fast + teacher-output cache + torch.compile",
                                      (*FAST, "trainer.teacher_cache=true"), compiled=True, teacher_cached=True),
    # The whole step as one compiled unit (trainer.compile_scope=step): forwards, losses, backward, optimiser.
    "fast_step_compiled": BenchPath("trainer=fast, live teacher, whole step compiled",
                                    (*FAST, "trainer.teacher_cache=false", "trainer.compile_scope=step"),
                                    compiled=True),
    "fast_cached_step_compiled": BenchPath("trainer=fast + teacher-output cache, whole step compiled",
                                           (*FAST, "trainer.teacher_cache=true", "trainer.compile_scope=step"),
                                           compiled=True, teacher_cached=True),
}
DEFAULT_PATHS = "reference_loop,reference,fast,fast_cached"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--distiller", default="crd")
    parser.add_argument("--teacher", default="resnet32x4")
    parser.add_argument("--student", default="resnet8x4")
    parser.add_argument("--images", type=int, default=CIFAR_EPOCH, help="generated training images")
    parser.add_argument("--test-images", type=int, default=1000, help="generated test images (evaluated untimed)")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--paths", default=DEFAULT_PATHS, help=f"comma-separated, of: {', '.join(PATHS)}")
    parser.add_argument("--rounds", type=int, default=10, help="timed rounds (each path once per round)")
    parser.add_argument("--steps", type=int, default=20, help="timed steps of a path per round")
    parser.add_argument("--warmup", type=int, default=5, help="untimed steps of each path before the rounds")
    parser.add_argument("--count-ops", action="store_true", help="also count host operations per step")
    parser.add_argument("--ops-steps", type=int, default=3, help="steps profiled per path for --count-ops")
    parser.add_argument("--compile-mode", default="auto",
                        help="trainer.compile of the *_compiled paths; auto: reduce-overhead on CUDA, default else")
    parser.add_argument("--workers", type=int, default=8, help="DataLoader workers of the reference paths")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--override", action="append", default=[], help="extra config override (repeatable)")
    parser.add_argument("--out", type=Path, help="also write the printed report here")
    parser.add_argument("--json", type=Path, help="also write every figure, with the machine, here")
    args = parser.parse_args(argv)
    args.path_names = [name for name in args.paths.split(",") if name]
    unknown = [name for name in args.path_names if name not in PATHS]
    if unknown or not args.path_names:
        parser.error(f"--paths: unknown {', '.join(unknown) or '(none given)'}; choose from {', '.join(PATHS)}.")
    if min(args.rounds, args.steps, args.warmup, args.ops_steps, args.images, args.test_images) < 1:
        parser.error("--rounds, --steps, --warmup, --ops-steps, --images and --test-images must be positive.")
    return args


# ------------------------------------------------------------------ configs
def compose(overrides: list[str]):
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir

    from distillbench.catalog import CONFIG_DIR

    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        return hydra_compose(config_name="config", overrides=overrides)


def base_overrides(args: argparse.Namespace, data_root: Path, teacher_file: Path, runs: Path) -> list[str]:
    return [
        f"distiller={args.distiller}", f"teacher={args.teacher}", f"student={args.student}",
        f"teacher.checkpoint={teacher_file}", "teacher.expected_acc1=null",
        f"dataset.root={data_root}", "dataset.verify_checksums=false", f"dataset.batch_size={args.batch_size}",
        f"dataset.num_workers={args.workers}", f"dataset.test_num_workers={min(args.workers, 2)}",
        f"trainer.epochs={epochs_needed(args)}", f"trainer.device={args.device}", "trainer.progress=false",
        "logger.wandb.mode=disabled", "logger.console=false", f"paths.runs={runs}", f"paths.cache={runs / 'cache'}",
    ]


def epochs_needed(args: argparse.Namespace) -> int:
    """Enough epochs that no path ends while it is measured (each chunk may first step past an epoch end)."""
    per_epoch = max(1, args.images // args.batch_size)
    chunks = args.rounds + (1 if args.count_ops else 0)
    total = args.warmup + args.rounds * args.steps + args.ops_steps + chunks * per_epoch
    return total // per_epoch + 2


def negatives_overrides(cfg, images: int) -> tuple[list[str], list[str]]:
    """Contrastive methods draw ``num_negatives`` from a memory of one row per training image: on a benchmark
    set smaller than that, lower them to ``images - 1`` (with a note, as it lightens the method's step)."""
    overrides, notes = [], []

    def walk(node, prefix: str) -> None:
        for key, value in node.items():
            if key == "num_negatives" and isinstance(value, int) and value >= images:
                overrides.append(f"{prefix}{key}={images - 1}")
                notes.append(f"{prefix}{key} lowered from {value} to {images - 1}: the benchmark set has {images} "
                             "images and the memory one row per image, so its step does less work than at full size.")
            elif hasattr(value, "items"):
                walk(value, f"{prefix}{key}.")

    if cfg.distiller.method is not None:
        walk(cfg.distiller.method, "distiller.method.")
    return overrides, notes


def path_overrides(args: argparse.Namespace, name: str, compile_mode: str) -> list[str]:
    path = PATHS[name]
    return [*path.overrides, *([f"trainer.compile={compile_mode}"] if path.compiled else []),
            f"name=bench_{name}", *args.override]


# ------------------------------------------------------------------ the contestants
def build_contestant(name: str, cfg, run_dir: Path, device: torch.device) -> Contestant:
    if PATHS[name].plain_loop:
        from distillbench.benchmark.reference_loop import reference_loop

        steps, per_epoch = reference_loop(cfg, device)
        return Contestant(name, steps, per_epoch)
    from distillbench.build import build_trainer

    cfg.run_dir = str(run_dir)
    trainer = build_trainer(cfg, run_dir)
    return Contestant(name, trainer.steps(), len(trainer.train_loader))


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


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if torch.device(name).type == "cuda" and not torch.cuda.is_available():
        raise SystemExit(f"--device {name}, but no CUDA GPU is visible; use --device cpu or auto.")
    return torch.device(name)


def measure(args: argparse.Namespace) -> dict:
    device = resolve_device(args.device)
    args.device = str(device)
    compile_mode = args.compile_mode if args.compile_mode != "auto" else (
        "reduce-overhead" if device.type == "cuda" else "default")
    sync = cuda_sync if device.type == "cuda" else no_sync
    notes = []
    load_before = os.getloadavg()
    if args.count_ops and device.type == "cpu" and any(PATHS[n].compiled for n in args.path_names):
        mark_cpu_kernels()
        notes.append("Inductor's C++ kernels carry profiler marks (cpp.enable_kernel_profile) so they can be counted.")
    with tempfile.TemporaryDirectory(prefix="distillbench-bench-") as tmp:
        tmp = Path(tmp)
        data_root, teacher_file = generated_cell(tmp, args.images, args.test_images, args.teacher)
        base = base_overrides(args, data_root, teacher_file, tmp / "runs")
        clamp, clamp_notes = negatives_overrides(compose(base), args.images)
        notes += clamp_notes
        for note in notes:
            print(f"note: {note}", flush=True)
        contestants = [build_contestant(name, compose([*base, *clamp, *path_overrides(args, name, compile_mode)]),
                                        tmp / "runs" / name, device) for name in args.path_names]
        try:
            steps = min(args.steps, *(c.steps_per_epoch - 1 for c in contestants))
            if steps < 1:
                raise SystemExit(f"--images {args.images} at --batch-size {args.batch_size} leaves an epoch too "
                                 "short to time steps inside it; give at least 3 batches' worth of images.")
            if steps < args.steps:
                notes.append(f"--steps lowered from {args.steps} to {steps} to fit inside one epoch.")
                print(f"note: {notes[-1]}", flush=True)
            for contestant in contestants:
                warm_up(contestant, args.warmup, sync)
                print(f"  {contestant.name}: warm ({contestant.setup_s:.1f} s to the first step's end)", flush=True)
            order = run_rounds(contestants, args.rounds, steps, sync)
            ops = {}
            if args.count_ops:
                for contestant in contestants:
                    contestant.clear_epoch_end(args.ops_steps)
                    ops[contestant.name] = count_step_ops(contestant.step, args.ops_steps, sync,
                                                          device.type == "cuda").as_dict()
        finally:
            for contestant in contestants:
                contestant.close()
    load = {"before": load_before, "after": os.getloadavg()}
    return summarise(args, contestants, ops, order, steps, notes, device, compile_mode, load)


def summarise(args, contestants: list[Contestant], ops: dict, order: list[str], steps: int, notes: list[str],
              device: torch.device, compile_mode: str, load: dict) -> dict:
    baseline = next((c for c in contestants if c.name == BASELINE), None)
    rows = []
    for c in contestants:
        path = PATHS[c.name]
        flops = flops_per_image(args, path.teacher_cached)
        rows.append({
            "path": c.name, "what": path.what, "overrides": list(path.overrides),
            "compiled": compile_mode if path.compiled else False, "teacher_cached": path.teacher_cached,
            "setup_s": c.setup_s, "step_s": c.step_s, "step_s_min": c.min_s, "step_s_median": c.median_s,
            "images_per_s_median": args.batch_size / c.median_s, "images_per_s_best": args.batch_size / c.min_s,
            "s_per_cifar_epoch_median": CIFAR_EPOCH / args.batch_size * c.median_s,
            "speedup_vs_reference_loop_min": baseline.min_s / c.min_s if baseline else None,
            "speedup_vs_reference_loop_median": baseline.median_s / c.median_s if baseline else None,
            "flops_per_image": flops, "tflops_median": args.batch_size / c.median_s * flops / 1e12,
            "ops_per_step": ops.get(c.name),
        })
    return {
        "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "machine": machine_info(device),
        # The host's 1/5/15-minute load averages: other work competing with the measurement.
        "load_average": load,
        "cell": {"distiller": args.distiller, "teacher": args.teacher, "student": args.student},
        "settings": {"images": args.images, "test_images": args.test_images, "batch_size": args.batch_size,
                     "rounds": args.rounds, "steps_per_round": steps, "warmup": args.warmup,
                     "ops_steps": args.ops_steps if args.count_ops else None, "compile_mode": compile_mode,
                     "workers": args.workers, "device": str(device), "overrides": args.override,
                     "steps_per_epoch": {c.name: c.steps_per_epoch for c in contestants}},
        "notes": notes, "order": order, "paths": rows,
    }


# ------------------------------------------------------------------ the report
def format_ops(ops: dict | None) -> str:
    if ops is None:
        return "-"
    parts = [f"{ops['aten_ops']:.0f} aten"]
    if ops["generated_kernels"] or ops["extern_calls"]:
        parts.append(f"{ops['generated_kernels']:.0f} kernels + {ops['extern_calls']:.0f} extern")
    if ops["graph_replays"]:
        parts.append(f"{ops['graph_replays']:.0f} graph replays")
    total = f"{ops['host_ops']:.0f} ({', '.join(parts)})"
    return total + (f"; {ops['device_launches']:.0f} launches" if ops["device_launches"] is not None else "")


def ratio(value: float | None) -> str:
    return "-" if value is None or not math.isfinite(value) else f"{value:.2f}"


HEADER = ("| path | step ms (min / median) | images/s (median) | × reference_loop (min / median) | TFLOP/s | "
          "setup s | host ops per step |\n|---|---|---|---|---|---|---|")


def format_row(row: dict) -> str:
    return (f"| {row['path']} | {1e3 * row['step_s_min']:.1f} / {1e3 * row['step_s_median']:.1f} | "
            f"{row['images_per_s_median']:,.0f} | {ratio(row['speedup_vs_reference_loop_min'])} / "
            f"{ratio(row['speedup_vs_reference_loop_median'])} | {row['tflops_median']:.3g} | {row['setup_s']:.1f} | "
            f"{format_ops(row['ops_per_step'])} |")


def report(result: dict) -> str:
    cell, s = result["cell"], result["settings"]
    title = (f"{cell['distiller']} {cell['teacher']} -> {cell['student']}, batch {s['batch_size']}, {s['images']} "
             f"generated training images; {s['rounds']} interleaved rounds x {s['steps_per_round']} steps per path "
             f"after {s['warmup']} warm-up steps; {describe(result['machine'])}; {result['date']}")
    lines = [title, "", HEADER, *(format_row(row) for row in result["paths"]), ""]
    lines += [f"- {row['path']}: {row['what']}" for row in result["paths"]]
    lines += [f"- note: {note}" for note in result["notes"]]
    before, after = (", ".join(f"{x:.2f}" for x in result["load_average"][k]) for k in ("before", "after"))
    lines.append(f"- host load average (1, 5, 15 min): {before} before, {after} after")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    logging.getLogger("distillbench").setLevel(logging.INFO)
    logging.basicConfig(format="  [%(name)s] %(message)s")
    result = measure(args)
    text = report(result)
    print("\n" + text, flush=True)
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text + "\n")
    write_json(args.json, result)
    return result


if __name__ == "__main__":
    main()
