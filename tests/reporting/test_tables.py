"""scripts/make_tables.py on generated run directories."""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
from pathlib import Path

import pytest

from distillbench.reporting.published import PublishedTable
from distillbench.reporting.runs import load_local_runs, load_wandb_runs
from distillbench.reporting.tables import build_cells, format_cell

ROOT = Path(__file__).resolve().parents[2]
PUBLISHED = ROOT / "results" / "paper" / "published.yaml"


def write_run(root: Path, name: str, seed: int, **summary) -> None:
    run_dir = root / name / f"seed{seed}"
    run_dir.mkdir(parents=True)
    (run_dir / "summary.json").write_text(json.dumps({"name": name, "seed": seed, "dataset": "cifar100", **summary}))


@pytest.fixture
def runs(tmp_path) -> Path:
    root = tmp_path / "runs"
    kd_last = [73.0, 73.4, 73.2]
    for seed, acc in enumerate(kd_last):
        write_run(root, "kd_resnet32x4_8x4", seed, job_type="student", method="kd", arch="resnet8x4",
                  teacher="resnet32x4", student="resnet8x4", acc1_last=acc, acc1_best=acc + 0.3)
    for seed, acc in enumerate([70.0, 70.1]):  # far below DKD's published 76.32 (best epoch)
        write_run(root, "dkd_resnet32x4_8x4", seed, job_type="student", method="dkd", arch="resnet8x4",
                  teacher="resnet32x4", student="resnet8x4", acc1_last=acc - 0.2, acc1_best=acc)
    write_run(root, "teacher_resnet32x4", 0, job_type="teacher", method="none", arch="resnet32x4",
              acc1_last=79.5, acc1_best=79.6)
    write_run(root, "vanilla_resnet8x4", 0, job_type="student", method="none", arch="resnet8x4",
              acc1_last=72.4, acc1_best=72.7)
    (root / "unfinished" / "seed0").mkdir(parents=True)  # no summary.json yet: ignored
    return root


def cell(cells, method, teacher="resnet32x4", student="resnet8x4"):
    (found,) = [c for c in cells if (c.method, c.teacher, c.student) == (method, teacher, student)]
    return found


def test_cells_aggregate_seeds_and_compare_like_with_like(runs):
    records = load_local_runs([runs])
    assert len(records) == 7
    published = PublishedTable(PUBLISHED)
    last = build_cells(records, published, "cifar100", "acc1_last")
    best = build_cells(records, published, "cifar100", "acc1_best")

    kd = cell(last, "kd")
    assert kd.ours.n == 3
    assert kd.ours.mean == pytest.approx(73.2)
    assert kd.ours.std == pytest.approx(statistics.stdev([73.0, 73.4, 73.2]))
    assert kd.published.top1 == 73.33 and kd.published.paper == "crd"
    assert kd.difference == pytest.approx(73.2 - 73.33)
    assert not kd.outside_spread

    # DKD's published number is best-epoch: it appears against acc1_best only, and is far off.
    assert cell(last, "dkd").published is None
    dkd = cell(best, "dkd")
    assert dkd.published.top1 == 76.32 and dkd.published.metric == "best_epoch"
    assert dkd.outside_spread

    # A teacher run fills its row in every column it teaches; a vanilla student likewise.
    assert cell(last, "vanilla_teacher", "resnet32x4", "ShuffleV1").ours.mean == 79.5
    assert cell(last, "vanilla_student").ours.mean == 72.4
    assert "73.20 ± 0.20" in format_cell(kd) and "(73.33, -0.13)" in format_cell(kd)


def test_script_writes_markdown_tables_and_a_plot(runs, tmp_path):
    out = tmp_path / "tables"
    subprocess.run([sys.executable, str(ROOT / "scripts" / "make_tables.py"), "--runs", str(runs), "--out", str(out)],
                   check=True, capture_output=True, timeout=120)
    last = (out / "cifar100_acc1_last.md").read_text()
    best = (out / "cifar100_acc1_best.md").read_text()
    assert "| method | wrn_40_2 → wrn_16_2 |" in last
    kd_row = next(line for line in last.splitlines() if line.startswith("| kd |"))
    assert "**73.20 ± 0.20** (73.33, -0.13)" in kd_row
    dkd_row = next(line for line in best.splitlines() if line.startswith("| dkd |"))
    assert "**70.05 ± 0.07** † (76.32, -6.27)" in dkd_row
    png = out / "cifar100_vs_published.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_wandb_runs_become_the_same_records(runs):
    summaries = [json.loads(p.read_text()) for p in sorted(runs.rglob("summary.json"))]

    class FakeRun:
        def __init__(self, i, summary):
            self.id, self.summary = f"r{i}", summary

    class FakeApi:
        def runs(self, path, filters):
            assert path == "me/distillbench" and filters == {"state": "finished"}
            return [FakeRun(i, s) for i, s in enumerate(summaries)]

    from_wandb = load_wandb_runs("me/distillbench", api=FakeApi())
    local = load_local_runs([runs])
    key = lambda r: (r.method, r.teacher, r.student, r.seed)  # noqa: E731
    assert sorted((key(r), r.acc1_last) for r in from_wandb) == sorted((key(r), r.acc1_last) for r in local)
