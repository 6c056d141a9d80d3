"""Each paper's own table (Markdown and CSV) from fabricated run directories, the plot, and --wandb without a key."""

from __future__ import annotations

import csv
import io
import subprocess
import sys

import pytest
import yaml

from distillbench.reporting.papers import paper_tables, unpublished_groups
from distillbench.reporting.published import PublishedTable
from distillbench.reporting.render import render_paper_csv, render_paper_markdown
from distillbench.reporting.runs import load_local_runs
from distillbench.reporting.tables import select
from tests.reporting.conftest import PUBLISHED, ROOT, write_run

KD = "kd_resnet32x4_8x4"
R8X4 = "resnet32x4 → resnet8x4"
REVISION = "4db8f62a1b2c"  # conftest's COMMIT, as the tables shorten it


@pytest.fixture(scope="module")
def published() -> PublishedTable:
    return PublishedTable(PUBLISHED)


@pytest.fixture
def tables(runs, published) -> dict:
    """cifar100's paper tables from the conftest runs plus one CKD run (a cell no paper printed)."""
    write_run(runs, "ckd_resnet32x4_8x4", 0, 75.4, 75.7, method="ckd")
    selection = select(load_local_runs([runs]), published, "cifar100")
    found = paper_tables(selection, published, "cifar100")
    return {"selection": selection, "list": found, **{t.paper: t for t in found}}


def grid(markdown: str) -> dict[str, dict[str, str]]:
    """The first Markdown table (the paper's grid) as {method: {column: cell}}."""
    lines = markdown.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("| method |"))
    block = []
    for line in lines[start:]:
        if not line.startswith("|"):
            break
        block.append([c.strip() for c in line.strip("|").split("|")])
    header = block[0]
    return {row[0]: dict(zip(header[1:], row[1:], strict=True)) for row in block[2:]}


def test_the_papers_are_those_the_experiments_name(published):
    named = set()
    for path in (ROOT / "configs" / "experiment").glob("*.yaml"):
        block = yaml.safe_load(path.read_text()).get("published")
        if block:
            named.add(block["paper"])
    with_numbers = {p for d in {e["dataset"] for e in published.entries} for p in published.papers_of(d)}
    assert named == with_numbers == {"at", "crcd", "crd", "dkd", "dot", "reviewkd", "rrd", "wcord"}


def test_each_table_has_the_papers_rows_columns_and_rule(tables):
    assert [t.paper for t in tables["list"]] == ["crd", "rrd", "wcord", "dkd", "dot", "reviewkd"]
    crd, dkd = tables["crd"], tables["dkd"]
    assert crd.metric == "acc1_last" and dkd.metric == "acc1_best"
    assert crd.methods[:4] == ["vanilla_teacher", "vanilla_student", "kd", "fitnet"] and len(crd.pairs) == 13
    assert crd.pairs[0] == ("wrn_40_2", "wrn_16_2")
    assert dkd.methods == ["kd", "dkd"] and len(dkd.pairs) == 11
    # one group of KD runs, measured by each paper's rule: last epoch for CRD, best epoch (of 5 seeds) for DKD
    kd_crd, kd_dkd = crd.cells[("kd", "resnet32x4", "resnet8x4")], dkd.cells[("kd", "resnet32x4", "resnet8x4")]
    assert kd_crd.group is kd_dkd.group
    assert kd_crd.ours.mean == pytest.approx(73.2) and not kd_crd.fewer_seeds
    assert kd_dkd.ours.mean == pytest.approx(73.5) and kd_dkd.fewer_seeds
    assert [t.paper for t in tables["list"] if t.filled] == ["crd", "dkd", "dot"]
    (ckd,) = unpublished_groups(tables["selection"], tables["list"])
    assert ckd.first.experiment == "ckd_resnet32x4_8x4"


def test_markdown_cells_read_ours_published_difference(tables):
    crd = render_paper_markdown(tables["crd"])
    assert crd.startswith("## CRD on cifar100: last-epoch top-1 (%)\n\nContrastive Representation Distillation (Tian "
                          "et al., ICLR 2020). Top-1 accuracy (%) at the **last epoch**")
    assert "at the **last epoch**" in crd and "CRD averaged 1 run per cell" in crd
    rows = grid(crd)
    assert list(rows)[:3] == ["vanilla_teacher", "vanilla_student", "kd"] and len(rows) == 16
    assert list(rows["kd"])[:2] == ["wrn_40_2 → wrn_16_2", "wrn_40_2 → wrn_40_1"] and len(rows["kd"]) == 13
    assert rows["kd"][R8X4] == "73.20 ± 0.20 (3) · 73.33 · -0.13"
    assert rows["kd"]["wrn_40_2 → wrn_16_2"] == "— · 74.92 · —"  # no runs: the published number alone
    assert rows["vanilla_student"][R8X4] == "72.40 (1) · 72.50 · -0.10"
    assert rows["vanilla_teacher"]["resnet32x4 → ShuffleV1"] == "79.50 (1) · 79.42 · +0.08"
    assert "75.10" not in crd  # the optim.lr=0.1 variant never fills a cell
    assert "5 of 202 cells have runs." in crd
    trace = next(line for line in crd.splitlines() if line.startswith(f"| kd | {R8X4} | {KD} |"))
    group = tables["crd"].cells[("kd", "resnet32x4", "resnet8x4")].group.first.group
    assert trace == f"| kd | {R8X4} | {KD} | `default` | `{group}` | 0,1,2 | float32 | {REVISION} |"
    assert "HobbitLong/RepDistiller README.md @ b84f547c5db6a35318d4671d7d5c4de74c822403" in crd
    assert "Marks:" not in crd  # no cell of this table is marked

    dkd = render_paper_markdown(tables["dkd"])
    assert dkd.startswith("## DKD on cifar100: best-epoch top-1 (%)\n")
    assert "each run's **best epoch**" in dkd and "DKD averaged 5 runs per cell" in dkd
    rows = grid(dkd)
    assert list(rows) == ["kd", "dkd"]
    assert rows["dkd"][R8X4] == "70.05 ± 0.07 (2) ⚠ · 76.32 · -6.27 †"
    assert rows["kd"][R8X4] == "73.50 ± 0.20 (3) ⚠ · 73.33 · +0.17"
    assert "† the published number lies outside" in dkd and "⚠ fewer seeds than DKD averaged" in dkd
    assert "‡" not in dkd


def test_csv_has_the_same_layout_with_sub_columns(tables):
    table = tables["crd"]
    rows = list(csv.DictReader(io.StringIO(render_paper_csv(table))))
    assert [r["method"] for r in rows] == table.methods and {r["metric"] for r in rows} == {"acc1_last"}
    assert len(rows[0]) == 2 + 8 * 13
    kd = next(r for r in rows if r["method"] == "kd")
    cell = {k.split(" ", 1)[1]: v for k, v in kd.items() if k.startswith("resnet32x4→resnet8x4 ")}
    group = table.cells[("kd", "resnet32x4", "resnet8x4")].group.first.group
    assert cell == {"mean": "73.2", "std": "0.2", "n": "3", "published": "73.33", "diff": "-0.13", "group": group,
                    "precision": "float32", "code_revision": REVISION}
    assert kd["wrn_40_2→wrn_16_2 mean"] == "" and kd["wrn_40_2→wrn_16_2 published"] == "74.92"

    dkd = {r["method"]: r for r in csv.DictReader(io.StringIO(render_paper_csv(tables["dkd"])))}
    assert dkd["dkd"]["metric"] == "acc1_best" and dkd["dkd"]["resnet32x4→resnet8x4 mean"] == "70.05"
    assert dkd["dkd"]["resnet32x4→resnet8x4 diff"] == "-6.27"


def test_plot_has_one_labelled_panel_per_paper_with_data(tables):
    pytest.importorskip("matplotlib")
    from distillbench.reporting.plot import figure_against_published

    fig = figure_against_published(tables["list"], "cifar100")
    assert [ax.get_title() for ax in fig.axes] == ["CRD (last-epoch top-1), 5 cells", "DKD (best-epoch top-1), 2 cells",
                                                    "DOT (best-epoch top-1), 1 cell"]
    assert "cifar100" in fig.get_suptitle()
    for ax in fig.axes:
        assert ax.get_xlabel().startswith("published top-1 (%)")
        assert ax.get_ylabel() == "distillbench top-1 (%), mean ± std over seeds"
        assert ax.get_legend() is not None
    assert [t.get_text() for t in fig.axes[1].get_legend().get_texts()] == ["ours = published", "kd", "dkd"]
    assert figure_against_published([tables["rrd"], tables["wcord"]], "cifar100") is None  # no runs: no figure


def test_script_writes_a_table_per_paper_with_runs(runs, tmp_path, capsys):
    sys.path.insert(0, str(ROOT / "scripts"))
    from make_tables import main

    write_run(runs, "ckd_resnet32x4_8x4", 0, 75.4, 75.7, method="ckd")
    out = tmp_path / "tables"
    assert main(["--runs", str(runs), "--out", str(out)]) == 0
    written = sorted(p.name for p in out.iterdir())
    assert written == ["cifar100_crd.csv", "cifar100_crd.md", "cifar100_dkd.csv", "cifar100_dkd.md",
                       "cifar100_dot.csv", "cifar100_dot.md", "cifar100_variants.md", "cifar100_vs_published.png",
                       "index.md"]
    assert (out / "cifar100_vs_published.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    index = (out / "index.md").read_text()
    assert f"Written by `python scripts/make_tables.py --runs {runs} --out {out}`" in index
    assert "- No runs yet for RRD (52 cells published), WCoRD (26 cells published), ReviewKD (13 cells published)" \
        in index
    assert "- CRD: [cifar100_crd.md](cifar100_crd.md), [cifar100_crd.csv](cifar100_crd.csv): 5 of 202 cells have " \
        "runs; last-epoch top-1." in index
    variants = (out / "cifar100_variants.md").read_text()
    assert "| ckd_resnet32x4_8x4 | `default` |" in variants and "no paper printed this cell" in variants
    assert "`optim.lr=0.1`" in variants
    assert "experiment=dkd_resnet32x4_8x4 seed=2,3,4" in capsys.readouterr().out


def test_without_matplotlib_the_tables_are_written_and_no_plot(runs, tmp_path, monkeypatch, capsys):
    sys.path.insert(0, str(ROOT / "scripts"))
    from make_tables import main

    monkeypatch.setitem(sys.modules, "matplotlib", None)  # as if not installed
    out = tmp_path / "tables"
    assert main(["--runs", str(runs), "--out", str(out)]) == 0
    assert (out / "cifar100_crd.md").exists() and not (out / "cifar100_vs_published.png").exists()
    assert "matplotlib is not installed: no plot" in capsys.readouterr().out
    assert "vs_published.png" not in (out / "index.md").read_text()


def no_wandb_key(monkeypatch, home) -> None:
    for name in ("WANDB_API_KEY", "WANDB_IDENTITY_TOKEN_FILE", "NETRC"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HOME", str(home))


def test_wandb_without_a_key_says_how_to_log_in(runs, tmp_path, monkeypatch, capsys):
    sys.path.insert(0, str(ROOT / "scripts"))
    from make_tables import main

    no_wandb_key(monkeypatch, tmp_path)
    monkeypatch.setitem(sys.modules, "wandb", None)  # refused before wandb is even imported: no network
    out = tmp_path / "tables"
    assert main(["--wandb", "me/distillbench", "--runs", str(runs), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "(--wandb me/distillbench) needs a W&B API key, and none is configured" in err
    assert "`wandb login`" in err and "WANDB_API_KEY" in err
    assert "python scripts/make_tables.py --runs runs/" in err
    assert len(err.strip().splitlines()) == 1 and not out.exists()


def test_wandb_without_a_key_from_the_command_line_has_no_traceback(tmp_path, monkeypatch):
    no_wandb_key(monkeypatch, tmp_path)
    result = subprocess.run([sys.executable, str(ROOT / "scripts" / "make_tables.py"), "--wandb", "me/p", "--runs",
                             str(tmp_path / "none")], capture_output=True, text=True, timeout=120)
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr and "`wandb login`" in result.stderr
