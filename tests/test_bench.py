"""scripts/bench.py runs end to end at CPU size and reports every figure for every path (no timing asserts)."""

from __future__ import annotations

import importlib.util
import json
import math

from tests.conftest import CONFIG_DIR

spec = importlib.util.spec_from_file_location("bench", CONFIG_DIR.parent / "scripts" / "bench.py")
bench = importlib.util.module_from_spec(spec)
spec.loader.exec_module(bench)


def test_bench_measures_both_paths_and_their_ratio(tmp_path, capsys) -> None:
    out = tmp_path / "bench.md"
    bench.main(["--distiller", "kd", "--teacher", "resnet8", "--student", "resnet8", "--images", "128",
                "--test-images", "32", "--epochs", "1", "--workers", "0", "--device", "cpu",
                "--paths", "reference,fast", "--out", str(out)])
    printed = capsys.readouterr().out
    table = out.read_text()
    assert "| reference | 1 | live |" in table and "| fast | 1 | live |" in table
    assert table.splitlines()[-1] in printed
    rows = json.loads(out.with_suffix(".json").read_text())["rows"]
    assert [(r["path"], r["runs"], r["packing"]) for r in rows] == [
        ("reference", 1, "processes"), ("fast", 1, "processes")]
    for row in rows:
        assert row["images_per_s"] > 0 and math.isfinite(row["s_per_cifar_epoch"])
        assert row["tflops"] > 0 and row["peak_gb"] > 0
    # The reference row's ratio is 1 by construction; the fast row's is the measured one.
    assert table.splitlines()[-2].endswith("| 1.00 |")


def test_flops_per_image_counts_the_teacher_only_when_it_runs() -> None:
    args = bench.parse_args(["--teacher", "resnet32x4", "--student", "resnet8x4"])
    live, cached = bench.flops_per_image(args, False), bench.flops_per_image(args, True)
    # performance.md: resnet8x4 fwd+bwd 1.061 GFLOP, resnet32x4 fwd 2.166 GFLOP per image.
    assert abs(cached / 1e9 - 1.061) < 0.01
    assert abs((live - cached) / 1e9 - 2.166) < 0.01


def test_runs_packed_in_one_process_are_one_worker_with_their_seeds() -> None:
    args = bench.parse_args(["--side-by-side", "2,4", "--concurrent", "3"])
    assert args.side_by_side == "2,4" and args.concurrent == "3"
    row = bench.summarise("fast", 2, "one process", [{"images_per_s": 30.0, "peak_bytes": 1e9, "peak_kind": "GPU"}],
                          flops=1e9, cached=True)
    assert row["images_per_s"] == 30.0 and row["s_per_cifar_epoch"] == bench.CIFAR_EPOCH / 15.0
    assert "| 2 (one process) | cached |" in bench.format_row(row, row)
