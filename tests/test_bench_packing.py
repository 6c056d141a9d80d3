"""scripts/bench_packing.py: one run alone first, then the packings asked for, summed and compared with it."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "bench_packing.py"
spec = importlib.util.spec_from_file_location("bench_packing", SCRIPT)
packing = importlib.util.module_from_spec(spec)
spec.loader.exec_module(packing)


def test_one_run_alone_comes_first_then_the_packings() -> None:
    args = packing.parse_args(["--side-by-side", "2,4", "--concurrent", "3"])
    assert packing.packings(args) == [(1, "processes"), (3, "processes"), (2, "one process"), (4, "one process")]


def test_packed_runs_are_summed_and_compared_with_one_run_alone() -> None:
    alone = packing.summarise(1, "processes", [{"images_per_s": 20.0, "peak_bytes": 1e9, "peak_kind": "GPU"}], 9.0)
    packed = packing.summarise(2, "one process", [{"images_per_s": 30.0, "peak_bytes": 2e9, "peak_kind": "GPU"}],
                               12.0)
    assert packed["images_per_s"] == 30.0 and packed["s_per_cifar_epoch"] == packing.CIFAR_EPOCH / 15.0
    assert packing.format_row(packed, alone) == "| 2 (one process) | 30 | 3333.33 | 2.00 GB (GPU) | 1.50 |"


@pytest.mark.slow
def test_concurrent_runs_are_measured_end_to_end(tmp_path) -> None:
    out = tmp_path / "packing.md"
    packing.main(["--distiller", "kd", "--teacher", "resnet8", "--student", "resnet8", "--images", "64",
                  "--test-images", "16", "--epochs", "1", "--workers", "0", "--device", "cpu", "--concurrent", "2",
                  "--out", str(out)])
    rows = json.loads(out.with_suffix(".json").read_text())["rows"]
    assert [(r["runs"], r["packing"]) for r in rows] == [(1, "processes"), (2, "processes")]
    assert all(r["images_per_s"] > 0 and r["peak_gb"] > 0 for r in rows)
    assert out.read_text().splitlines()[-2].endswith("| 1.00 |")
