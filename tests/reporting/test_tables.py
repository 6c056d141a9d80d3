"""Tables from fabricated run directories: one identity group per cell, variants apart, each paper's protocol."""

from __future__ import annotations

import json
import statistics
import sys

import pytest

from distillbench.reporting.published import PublishedTable
from distillbench.reporting.render import format_paper_cell, render_variants_markdown
from distillbench.reporting.runs import load_local_runs, load_wandb_runs
from distillbench.reporting.tables import PROTOCOL, build_cells, missing_seed_commands, select
from tests.reporting.conftest import CRD, DKD, PUBLISHED, ROOT, write_run

KD = "kd_resnet32x4_8x4"


@pytest.fixture(scope="module")
def published() -> PublishedTable:
    return PublishedTable(PUBLISHED)


def cell(cells, method, teacher="resnet32x4", student="resnet8x4"):
    (found,) = [c for c in cells if (c.method, c.teacher, c.student) == (method, teacher, student)]
    return found


def variant_row(selection, experiment, variant="default", status=None):
    rows = [g for g in selection.variants if g.first.experiment == experiment and g.first.variant == variant
            and (status is None or g.status.startswith(status))]
    assert len(rows) == 1, [(g.first.experiment, g.first.variant, g.status) for g in selection.variants]
    return rows[0]


def test_cells_aggregate_seeds_and_compare_like_with_like(runs, published):
    records = load_local_runs([runs])
    assert len(records) == 9
    last = build_cells(records, published, "cifar100", "acc1_last")
    best = build_cells(records, published, "cifar100", "acc1_best")

    kd = cell(last, "kd")
    assert kd.ours.n == 3  # the default variant's three seeds only
    assert kd.ours.mean == pytest.approx(73.2)
    assert kd.ours.std == pytest.approx(statistics.stdev([73.0, 73.4, 73.2]))
    assert kd.published.top1 == 73.33 and kd.published.paper == "crd"
    assert kd.difference == pytest.approx(73.2 - 73.33)
    assert not kd.outside_spread and not kd.fewer_seeds
    assert format_paper_cell(kd) == "73.20 ± 0.20 (3) · 73.33 · -0.13"

    # DKD's published number is best-epoch: it appears against acc1_best only, and is far off.
    assert cell(last, "dkd").published is None
    dkd = cell(best, "dkd")
    assert dkd.published.top1 == 76.32 and dkd.published.metric == "best_epoch"
    assert dkd.outside_spread and dkd.fewer_seeds  # 2 seeds of the paper's 5
    assert format_paper_cell(dkd) == "70.05 ± 0.07 (2) ⚠ · 76.32 · -6.27 †"

    # A teacher run fills its row in every column it teaches; a vanilla student likewise.
    assert cell(last, "vanilla_teacher", "resnet32x4", "ShuffleV1").ours.mean == 79.5
    assert cell(last, "vanilla_student").ours.mean == 72.4


def test_two_variants_of_one_experiment_are_two_rows_each_with_its_own_n(runs, published):
    selection = select(load_local_runs([runs]), published, "cifar100")
    assert selection.chosen[("kd", "resnet32x4", "resnet8x4")].seeds == [0, 1, 2]
    lr = variant_row(selection, KD, "optim.lr=0.1")
    assert lr.seeds == [0, 1] and lr.status == "ok" and lr.stats("acc1_last").mean == pytest.approx(75.1)
    text = render_variants_markdown(selection.variants, "cifar100")
    row = (f"| {KD} | `optim.lr=0.1` | `{lr.first.group}` | 2 | 75.10 ± 0.14 | 75.40 ± 0.14 | 240/240 | float32 | "
           "4db8f62a1b2c | ok |")
    assert row in text


def test_a_named_variant_fills_the_main_table_only_when_asked(runs, published):
    records = load_local_runs([runs])
    kd = cell(build_cells(records, published, "cifar100", "acc1_last", variants={KD: "optim.lr=0.1"}), "kd")
    assert kd.ours.n == 2 and kd.ours.mean == pytest.approx(75.1) and kd.variant == "optim.lr=0.1"
    assert format_paper_cell(kd) == "75.10 ± 0.14 (2) ‡ · 73.33 · +1.77 †"
    # the default runs are then a variant row themselves, never averaged with the chosen ones
    selection = select(records, published, "cifar100", {"*": "optim.lr=0.1"})
    assert variant_row(selection, KD, "default").seeds == [0, 1, 2]


def test_groups_are_never_averaged_the_papers_precision_fills_the_cell(tmp_path, published):
    root = tmp_path / "runs"
    for seed, acc in enumerate([73.0, 73.2]):
        write_run(root, KD, seed, acc, acc, protocol=CRD)
    for seed, acc in enumerate([60.0, 60.2, 60.4]):  # a fast bf16 group of the same default experiment
        write_run(root, KD, seed, acc, acc, precision="bf16", subdir=f"{KD}/bf16", protocol=CRD)
    for seed, acc in enumerate([50.0]):  # another float32 group (e.g. other teacher weights): fewer seeds
        write_run(root, KD, seed, acc, acc, group_salt="teacher-b", subdir=f"{KD}/other", protocol=CRD)
    records = load_local_runs([root])
    selection = select(records, published, "cifar100")
    kd = cell(build_cells(records, published, "cifar100", "acc1_last", selection=selection), "kd")
    assert kd.ours.n == 2 and kd.ours.mean == pytest.approx(73.1)
    others = [g for g in selection.variants if g.first.experiment == KD]
    assert sorted(len(g.runs) for g in others) == [1, 3]
    assert all(g.status.startswith("not averaged") for g in others)
    assert {g.first.precision for g in others} == {"bf16", "float32"}


def test_imagenet_networks_meet_their_published_rows_under_the_papers_names(tmp_path, published):
    root = tmp_path / "runs"
    write_run(root, "kd_imagenet_r34_r18", 0, 71.0, 71.1, teacher="imagenet_resnet34", student="imagenet_resnet18",
              dataset="imagenet", protocol=DKD)
    write_run(root, "unfinished_bf16", 0, 60.0, 60.0, teacher="imagenet_resnet34", student="imagenet_resnet18",
              dataset="imagenet", precision="bf16", finished=False, epochs_done=3, epochs=100, protocol=DKD)
    records = load_local_runs([root])
    assert {(r.teacher, r.student) for r in records} == {("resnet34", "resnet18")}
    assert {r.precision for r in records} == {"float32", "bf16"}  # from run.json even before a summary exists
    kd = cell(build_cells(records, published, "imagenet", "acc1_best", selection=select(records, published,
                                                                                       "imagenet")),
              "kd", "resnet34", "resnet18")
    assert kd.ours.n == 1 and kd.published is not None and kd.published.top1 is not None


def test_short_unfinished_generated_and_old_runs_are_variants(tmp_path, published):
    root = tmp_path / "runs"
    write_run(root, KD, 0, 20.0, 20.0, variant="trainer.epochs=1", overrides=("trainer.epochs=1",), epochs=1)
    write_run(root, KD, 1, 99.0, 99.0, generated=True, subdir=f"{KD}/gen")
    write_run(root, KD, 2, 0.0, 0.0, finished=False, epochs_done=12, subdir=f"{KD}/running")
    write_run(root, KD, 3, 71.0, 71.5, epochs_done=100, subdir=f"{KD}/stopped")
    write_run(root, KD, 4, 73.0, 73.0, run_record=False, subdir=f"{KD}/old")
    records = load_local_runs([root])
    selection = select(records, published, "cifar100")
    assert ("kd", "resnet32x4", "resnet8x4") not in selection.chosen
    assert cell(build_cells(records, published, "cifar100", "acc1_last", selection=selection), "kd").ours is None
    statuses = {g.first.variant if g.first.variant != "default" else g.first.source.split("/")[-2]: g.status
                for g in selection.variants}
    assert statuses == {"trainer.epochs=1": "ok", "gen": "generated data", "running": "unfinished (12/240 epochs)",
                        "stopped": "fewer epochs (100/240)", "old": "no run record"}
    running = variant_row(selection, KD, status="unfinished")
    assert running.runs[0].acc1_best is not None  # from metrics.jsonl so far
    assert variant_row(selection, KD, "trainer.epochs=1").runs[0].epochs_done == 1


def test_duplicate_seeds_in_a_group_are_kept_once(tmp_path, published, caplog):
    root = tmp_path / "runs"
    write_run(root, KD, 0, 73.0, 73.0, protocol=CRD)
    write_run(root, KD, 1, 73.4, 73.4, protocol=CRD)
    write_run(root, KD, 1, 73.6, 73.6, protocol=CRD, subdir=f"{KD}/copy")  # the same seed again
    kd = cell(build_cells(load_local_runs([root]), published, "cifar100", "acc1_last"), "kd")
    assert kd.ours.n == 2
    assert "seed 1 twice" in caplog.text


def test_the_protocol_table_follows_each_papers_rule_and_lists_missing_seeds(runs, published):
    records = load_local_runs([runs])
    cells = build_cells(records, published, "cifar100", PROTOCOL)
    kd, dkd = cell(cells, "kd"), cell(cells, "dkd")
    assert kd.protocol.report == "last_epoch" and kd.ours.mean == pytest.approx(73.2)  # CRD: last epoch
    assert dkd.protocol.report == "best_epoch" and dkd.ours.mean == pytest.approx(70.05)  # DKD: best epoch
    assert (kd.protocol.short(), kd.ours.n, kd.seeds_wanted, kd.fewer_seeds) == ("last", 3, 1, False)
    assert (dkd.protocol.short(), dkd.ours.n, dkd.seeds_wanted, dkd.fewer_seeds) == ("best", 2, 5, True)
    assert missing_seed_commands(cells) == ["python -m distillbench -m experiment=dkd_resnet32x4_8x4 seed=2,3,4"]
    # without a protocol in the run's config, the paper's comes from published.yaml
    bare = [r.__class__(**{**r.__dict__, "protocol": None}) for r in records]
    assert cell(build_cells(bare, published, "cifar100", PROTOCOL), "dkd").protocol.seeds == 5


def test_wandb_runs_become_the_same_records(runs):
    import yaml

    found = [(json.loads((p.parent / "summary.json").read_text()), yaml.safe_load(p.read_text()))
             for p in sorted(runs.rglob("config.yaml"))]

    class FakeRun:
        def __init__(self, i, summary, config):
            self.id, self.summary, self.config = f"r{i}", summary, config

    class FakeApi:
        def runs(self, path, filters):
            assert path == "me/distillbench" and filters == {"state": "finished"}
            return [FakeRun(i, s, c) for i, (s, c) in enumerate(found)]

    key = lambda r: (r.method, r.teacher, r.student, r.seed, r.group, r.variant, r.acc1_last, r.protocol)  # noqa: E731
    assert sorted(map(key, load_wandb_runs("me/distillbench", api=FakeApi()))) == sorted(
        map(key, load_local_runs([runs])))


def test_commands_only_prints_the_missing_seeds(runs, tmp_path, capsys):
    sys.path.insert(0, str(ROOT / "scripts"))
    from make_tables import main

    out = tmp_path / "none"
    assert main(["--runs", str(runs), "--out", str(out), "--commands-only"]) == 0
    assert not out.exists()
    assert "experiment=dkd_resnet32x4_8x4 seed=2,3,4" in capsys.readouterr().out


def test_a_paper_protocol_reaches_every_run_config():
    """The fixtures' protocols are what make_experiments writes into the experiment files."""
    import yaml

    def block(name):
        return yaml.safe_load((ROOT / "configs" / "experiment" / f"{name}.yaml").read_text())["protocol"]

    assert block("dkd_resnet32x4_8x4") == DKD and block(KD) == CRD
    assert block("dkd_imagenet_r34_r18") == {"seeds": 3, "report": "best_epoch", "paper": "dkd"}
