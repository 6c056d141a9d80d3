"""How far a bf16 or fp16 teacher-output cache moves what the distillers read, on a real teacher forward.

    python scripts/teacher_cache_precision.py                         # resnet32x4, seeded random weights
    python scripts/teacher_cache_precision.py --checkpoint teacher.pth --images 4096   # a trained teacher

The teacher runs in float32 on random CIFAR-shaped images (uniform pixels, CIFAR-100 normalisation).
Its logits and pooled embedding are stored in each dtype and read back exactly as the cache does
(``TeacherCache.lookup``). Printed per dtype: the largest absolute and relative error of the logits
and of the pooled embedding (relative: over elements with |value| >= 1e-4), the change of the KD loss
(T=4, against a resnet8x4 student's logits on the same images), and how often the top-1 class stays.
``--json`` also writes the figures.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from distillbench.benchmark.workspace import write_json  # noqa: E402
from distillbench.data.transforms import CIFAR100_MEAN, CIFAR100_STD  # noqa: E402
from distillbench.distillers.kd import kd_loss  # noqa: E402
from distillbench.engine.teacher_cache import CACHE_DTYPES, TeacherCache  # noqa: E402
from distillbench.models import create_model  # noqa: E402
from distillbench.models.outputs import forward_features  # noqa: E402
from distillbench.weights import load_model_weights  # noqa: E402

RELATIVE_FLOOR = 1e-4


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--teacher", default="resnet32x4")
    parser.add_argument("--student", default="resnet8x4", help="whose logits the KD loss compares against")
    parser.add_argument("--checkpoint", type=Path, help="teacher weights (default: seeded random weights)")
    parser.add_argument("--num-classes", type=int, default=100)
    parser.add_argument("--images", type=int, default=1024)
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--temperature", type=float, default=4.0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", type=Path, help="also write the figures here")
    return parser.parse_args(argv)


@torch.no_grad()
def teacher_and_student_outputs(args: argparse.Namespace) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """float32 teacher logits, teacher pooled embedding and student logits on ``args.images`` random images."""
    torch.manual_seed(args.seed)
    teacher = create_model(args.teacher, num_classes=args.num_classes)
    if args.checkpoint is not None:
        load_model_weights(teacher, args.checkpoint, args.teacher, fields="--teacher and --num-classes")
    student = create_model(args.student, num_classes=args.num_classes)
    teacher.eval(), student.eval()
    generator = torch.Generator().manual_seed(args.seed)
    mean, std = torch.tensor(CIFAR100_MEAN)[:, None, None], torch.tensor(CIFAR100_STD)[:, None, None]
    logits, pooled, student_logits = [], [], []
    for start in range(0, args.images, args.batch_size):
        n = min(args.batch_size, args.images - start)
        images = (torch.randint(0, 256, (n, 3, 32, 32), generator=generator) / 255.0 - mean) / std
        out = forward_features(teacher, images)
        logits.append(out.logits)
        pooled.append(out.pooled.flatten(1))
        student_logits.append(student(images))
    return torch.cat(logits), torch.cat(pooled), torch.cat(student_logits)


def stored_and_read_back(logits: torch.Tensor, pooled: torch.Tensor, dtype: torch.dtype) -> tuple:
    """What a cache in ``dtype`` returns for these outputs (one view per image)."""
    cache = TeacherCache(logits.to(dtype)[:, None], pooled.to(dtype)[:, None])
    index = torch.arange(len(logits))
    out = cache.lookup(index, torch.zeros_like(index))
    return out.logits, out.pooled


def errors(exact: torch.Tensor, rounded: torch.Tensor) -> dict[str, float]:
    diff = (rounded - exact).abs()
    large = exact.abs() >= RELATIVE_FLOOR
    return {"max_abs": diff.max().item(), "max_rel": (diff[large] / exact.abs()[large]).max().item(),
            "max_value": exact.abs().max().item()}


def measure(args: argparse.Namespace) -> dict:
    logits, pooled, student_logits = teacher_and_student_outputs(args)
    kd_exact = kd_loss(student_logits, logits, args.temperature).item()
    rows = {}
    for name, dtype in CACHE_DTYPES.items():
        read_logits, read_pooled = stored_and_read_back(logits, pooled, dtype)
        kd = kd_loss(student_logits, read_logits, args.temperature).item()
        rows[name] = {
            "bytes_per_value": dtype.itemsize,
            "logits": errors(logits, read_logits),
            "pooled": errors(pooled, read_pooled),
            "kd_loss": kd, "kd_loss_abs_diff": abs(kd - kd_exact), "kd_loss_rel_diff": abs(kd - kd_exact) / kd_exact,
            "top1_agreement": (read_logits.argmax(1) == logits.argmax(1)).float().mean().item(),
        }
    return {"teacher": args.teacher, "weights": str(args.checkpoint) if args.checkpoint else f"random (seed "
            f"{args.seed})", "student": args.student, "images": args.images, "temperature": args.temperature,
            "kd_loss_float32": kd_exact, "dtypes": rows}


def report(result: dict) -> str:
    lines = [f"teacher {result['teacher']} ({result['weights']} weights), {result['images']} random images; KD loss "
             f"(T={result['temperature']:g}) against {result['student']}: {result['kd_loss_float32']:.6f} in float32",
             "", "| cache dtype | logits max abs err | logits max rel err | pooled max abs err | pooled max rel err | "
             "KD loss diff (abs / rel) | top-1 agreement |", "|---|---|---|---|---|---|---|"]
    for name, row in result["dtypes"].items():
        lg, pl = row["logits"], row["pooled"]
        lines.append(f"| {name} | {lg['max_abs']:.3g} (of max {lg['max_value']:.3g}) | {lg['max_rel']:.3g} | "
                     f"{pl['max_abs']:.3g} (of max {pl['max_value']:.3g}) | {pl['max_rel']:.3g} | "
                     f"{row['kd_loss_abs_diff']:.3g} / {row['kd_loss_rel_diff']:.3g} | "
                     f"{100 * row['top1_agreement']:.2f}% |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    result = measure(args)
    print(report(result))
    write_json(args.json, result)
    return result


if __name__ == "__main__":
    main()
