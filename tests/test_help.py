"""``python -m distillbench --help`` fits in two screens and names every experiment exactly once, grouped by the
paper that publishes its number."""

from __future__ import annotations

import os
import subprocess
import sys
from collections import Counter

import pytest

from distillbench.catalog import compact_names, expand, experiment_groups, experiment_names
from distillbench.helptext import wrap

WIDTH = 80


def named_in(section: list[str]) -> Counter:
    """The experiments a help section names: entries are indented two spaces, an entry broken after a comma
    goes on indented four; headings and the introduction start at the margin."""
    entries: list[str] = []
    for line in section:
        if line.startswith("    "):
            entries[-1] += line.strip()
        elif line.startswith("  "):
            entries.append(line.strip())
    return Counter(name for entry in entries for token in entry.split() for name in expand(token))


@pytest.fixture(scope="module")
def help_lines() -> list[str]:
    env = {**os.environ, "COLUMNS": str(WIDTH)}
    result = subprocess.run([sys.executable, "-m", "distillbench", "--help"], capture_output=True, text=True,
                            timeout=300, env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout.splitlines()


def test_the_help_fits_two_screens_of_an_80_column_terminal(help_lines):
    assert len(help_lines) <= 100
    assert max(len(line) for line in help_lines) <= WIDTH


def test_the_help_names_every_experiment_once_under_its_paper(help_lines):
    start, end = help_lines.index("== Experiments =="), help_lines.index("== Config groups (group=option) ==")
    section = help_lines[start + 1:end]
    assert named_in(section) == Counter(experiment_names())
    headings = [line for line in section if line and not line.startswith(" ")]
    assert any(h.startswith("CRD: Contrastive Representation Distillation (Tian et al., ICLR 2020)") for h in headings)
    assert "Start here (1)" in headings and "  quickstart" in section
    # The CIFAR-100 table of the CRD paper: 13 methods x 13 pairs, one brace expansion.
    assert any(line.startswith("  {ab,at,cc,crd,crd_kd,fitnet,ft,kd,nst,pkt,rkd,sp,vid}_{resnet110_20,")
               for line in section)
    groups = help_lines[end + 1:]
    assert any(line.startswith("  model, student, teacher:  MobileNetV2") for line in groups)


def test_experiments_are_grouped_by_the_paper_of_their_published_block():
    groups = {group.title.split(":")[0]: group.names for group in experiment_groups()}
    assert "kd_resnet32x4_8x4" in groups["CRD"] and "dkd_resnet56_20" in groups["DKD"]
    assert "transfer_crd_stl10" in groups["RRD"]
    assert "ckd_resnet56_20" in groups["CIFAR-100, no published number"]
    assert "at_imagenet_r50_mv1" in groups["ImageNet, no published number"]


def test_brace_expansions_stand_for_exactly_the_names_given():
    names = ["kd_resnet56_20", "kd_vgg13_vgg8", "crd_resnet56_20", "crd_vgg13_vgg8", "crd_imagenet_r34_r18",
             "transfer_kd_stl10", "transfer_kd_tiny_imagenet", "transfer_crd_kd_stl10", "transfer_crd_kd_tiny_imagenet",
             "quickstart", "teacher_resnet56"]
    blocks, others = compact_names(names)
    assert sorted(blocks) == ["transfer_{crd_kd,kd}_{stl10,tiny_imagenet}", "{crd,kd}_{resnet56_20,vgg13_vgg8}"]
    assert others == ["crd_imagenet_r34_r18", "quickstart", "teacher_resnet56"]
    assert sorted(n for item in blocks + others for n in expand(item)) == sorted(names)


def test_wrapping_breaks_a_long_expansion_after_a_comma():
    block = "kd_{" + ",".join(f"pair{i}" for i in range(20)) + "}"
    lines = wrap([block], 40)
    assert len(lines) > 1 and all(len(line) <= 40 for line in lines)
    assert lines[0].startswith("  kd_{pair0,") and all(line.startswith("    ") for line in lines[1:])
    assert all(line.endswith(",") for line in lines[:-1])
    assert "".join(line.strip() for line in lines) == block
