"""Write configs/pair/ and configs/experiment/: one experiment file per cell of the CIFAR-100 tables.

Each experiment composes a pair config (teacher and student) with a distiller config, adds the
recipe of the paper whose number it should reach, and names that number. The set of cells is
every (method, pair) with a published number in results/paper/published.yaml, plus the methods
whose papers released per-pair recipes without CIFAR numbers we could source (CRCD, CKD). The rows of the
linear-probe transfer tables (CIFAR-100 -> STL-10 / Tiny-ImageNet) get transfer_<method>_<dataset> files.

    python scripts/make_experiments.py          # (re)write the files
    python scripts/make_experiments.py --check  # fail if a file differs from what would be written
"""

from __future__ import annotations

import argparse
import functools
import sys
from pathlib import Path

import yaml

from distillbench.naming import arch_token

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = ROOT / "configs"
PUBLISHED = ROOT / "results" / "paper" / "published.yaml"
MARK = "Written by scripts/make_experiments.py: edit the script, not this file."

# Short pair names: <teacher>_<student> with the shared family prefix dropped from the student.
PAIRS = {
    "wrn40_2_16_2": ("wrn_40_2", "wrn_16_2"),
    "wrn40_2_40_1": ("wrn_40_2", "wrn_40_1"),
    "resnet56_20": ("resnet56", "resnet20"),
    "resnet110_20": ("resnet110", "resnet20"),
    "resnet110_32": ("resnet110", "resnet32"),
    "resnet32x4_8x4": ("resnet32x4", "resnet8x4"),
    "vgg13_vgg8": ("vgg13", "vgg8"),
    "vgg13_mobilenetv2": ("vgg13", "MobileNetV2"),
    "resnet50_mobilenetv2": ("ResNet50", "MobileNetV2"),
    "resnet50_vgg8": ("ResNet50", "vgg8"),
    "resnet32x4_shufflev1": ("resnet32x4", "ShuffleV1"),
    "resnet32x4_shufflev2": ("resnet32x4", "ShuffleV2"),
    "wrn40_2_shufflev1": ("wrn_40_2", "ShuffleV1"),
}
PAIR_OF = {pair: name for name, pair in PAIRS.items()}

# Published method name -> distiller config. Superseded quotes (rrd_*_v2024jul) and the second,
# unattributed WCoRD row (wcord_alt) have no experiment of their own.
DISTILLERS = ["kd", "fitnet", "at", "sp", "cc", "vid", "rkd", "pkt", "ab", "ft", "fsp", "nst", "crd", "crd_kd",
              "crcd", "wcord", "wcord_kd", "rrd", "rrd_kd", "ckd", "dkd", "kd_dot",
              "reviewkd"]
TITLES = {"kd": "KD", "fitnet": "FitNet", "at": "AT", "sp": "SP", "cc": "CC", "vid": "VID", "rkd": "RKD",
          "pkt": "PKT", "ab": "AB", "ft": "FT", "fsp": "FSP", "nst": "NST", "crd": "CRD", "crd_kd": "CRD+KD",
          "crcd": "CRCD", "wcord": "WCoRD", "wcord_kd": "WCoRD+KD", "rrd": "RRD", "rrd_kd": "RRD+KD", "ckd": "CKD",
          "dkd": "DKD", "kd_dot": "KD+DOT", "ofd": "OFD", "reviewkd": "ReviewKD"}
# Methods that are an optimiser as much as a loss: their experiments also select configs/optim/<value>.yaml.
OPTIMIZERS = {"kd_dot": "dot"}

# mdistiller's per-pair DKD beta (configs/cifar100/dkd/*.yaml); 8.0 elsewhere.
DKD_BETA = {"resnet56_20": 2.0, "resnet110_32": 2.0, "vgg13_vgg8": 6.0, "vgg13_mobilenetv2": 6.0,
            "wrn40_2_16_2": 6.0, "wrn40_2_40_1": 6.0}
# CKD's released per-pair recipes (configs/cifar100/ckd/*.yaml): batch, CKD weight, temperature.
# 480 epochs, cosine schedule to 0; the lr follows the student (0.01 for MobileNetV2/ShuffleV1/V2).
CKD_RECIPE = {
    "resnet56_20": (64, 10.0, 1.0), "resnet110_32": (64, 10.0, 1.0), "resnet32x4_8x4": (64, 100.0, 1.0),
    "wrn40_2_16_2": (64, 100.0, 1.0), "wrn40_2_40_1": (32, 50.0, 2.0), "vgg13_vgg8": (64, 100.0, 1.0),
    "vgg13_mobilenetv2": (32, 50.0, 2.0), "resnet50_mobilenetv2": (32, 100.0, 1.0),
    "resnet32x4_shufflev1": (32, 100.0, 1.0), "resnet32x4_shufflev2": (64, 100.0, 1.0),
    "wrn40_2_shufflev1": (32, 100.0, 1.0),
}
# Methods run although no CIFAR-100 number of theirs could be sourced: CKD on the pairs of its released
# configs; CRCD on the pairs whose pooled features have equal widths, which its gradient term compares
# (on the others it needs a choice the paper does not document: grad_type=crcd or none).
CRCD_PAIRS = ["wrn40_2_16_2", "resnet56_20", "resnet110_20", "resnet110_32", "resnet32x4_8x4", "vgg13_vgg8"]
# OFD on the one CIFAR-100 pair mdistiller ships a config for (configs/cifar100/ofd.yaml @ a08d46f: RepDistiller's
# recipe, cfg.py's OFD weights); the authors' CIFAR-100 table uses WRN-28-4 teachers, which are not in the zoo.
OFD_PAIRS = ["resnet32x4_8x4"]
UNPUBLISHED_PAIRS = {"crcd": CRCD_PAIRS, "ckd": list(CKD_RECIPE), "ofd": OFD_PAIRS}
# ReviewKD's weight where it is not 5.0 (mdistiller configs/cifar100/reviewkd.yaml:10, its only CIFAR pair):
# the authors' CIFAR-100/script/reviewKD.sh (dvlab-research/ReviewKD @ cede6ea) for the pairs it lists.
REVIEWKD_WEIGHT = {"resnet32x4_shufflev2": 8.0, "resnet56_20": 0.6, "resnet110_32": 1.0}
# Students whose pre-activation taps are not relu-able into the post-activation maps mdistiller reads
# (configs/distiller/reviewkd.yaml, student_relu): tapped as they are.
REVIEWKD_TAPPED_AS_IS = {"MobileNetV2", "wrn_16_2", "wrn_40_1"}


# Said in the header of every experiment of the method.
NOTES = {
    "wcord": "Re-implementation from the paper; no public code exists. configs/distiller/wcord.yaml says which "
             "knobs are assumptions. Compared with the row quoted as 'WCoRD' (ITRD, Papers-with-Code), not the "
             "unattributed second row.",
    "crcd": "The CRCD code is an incomplete re-implementation by its authors; see configs/distiller/crcd.yaml.",
    "rrd": "FIFO-queue variant with the 2024 ordering and temperatures, the code behind the published table.",
    "rrd_kd": "FIFO-queue variant with the 2024 ordering and temperatures, the code behind the published table.",
    "reviewkd": "mdistiller's ReviewKD and recipe (megvii-research/mdistiller @ a08d46f "
                "configs/cifar100/reviewkd.yaml: 240 epochs, batch 64, lr 0.05, x0.1 at 150/180/210, wd 5e-4, "
                "weight warm-up over 20 epochs; lr 0.01 for MobileNetV2/ShuffleV1/V2 as in its other CIFAR configs); "
                "weight 5.0, or the authors' CIFAR-100/script/reviewKD.sh (dvlab-research/ReviewKD @ cede6ea) value "
                "for the pair.",
    "ofd": "mdistiller's configs/cifar100/ofd.yaml (a08d46f); the teacher runs in train mode, as there.",
}


# ImageNet cells (mdistiller's recipes): pair -> (teacher, student) as published.yaml names them.
IMAGENET_PAIRS = {"imagenet_r34_r18": ("resnet34", "resnet18"), "imagenet_r50_mv1": ("resnet50", "mobilenetv1")}
IMAGENET_TITLES = {"imagenet_r34_r18": ("ResNet-34", "ResNet-18"), "imagenet_r50_mv1": ("ResNet-50", "MobileNetV1")}
IMAGENET_METHODS = ["kd", "at", "crd", "crcd", "dkd", "ckd", "kd_dot", "reviewkd"]
# CRCD's default gradient term compares equal-width pooled features: ResNet-50 (2048) vs MobileNetV1 (1024) is N/A.
IMAGENET_NA = {("crcd", "imagenet_r50_mv1")}


def imagenet_recipe(method: str, pair: str) -> dict:
    """mdistiller's ImageNet configs (KD, AT, CRD, DKD); CKD's released ImageNet recipe; CRCD as CRD."""
    if method == "kd":
        return {"distiller": {"ce_weight": 0.5, "method": {"weight": 0.5, "temperature": 1.0}}}
    if method == "kd_dot":
        # mdistiller @ a08d46f configs/imagenet/{r34_r18,r50_mv1}/dot.yaml: KD's ImageNet terms (CE 0.5, KD 0.5, T 1),
        # SOLVER.DOT.DELTA 0.09, and the pair's recipe (batch 512, lr 0.2, 100 epochs, x0.1 at 30/60/90, wd 1e-4).
        return {"distiller": {"ce_weight": 0.5, "method": {"weight": 0.5, "temperature": 1.0}},
                "optim": {"delta": 0.09}}
    if method == "reviewkd":
        # mdistiller configs/imagenet/{r34_r18,r50_mv1}/reviewkd.yaml:15-34: batch 256, lr 0.1, weight 1.0 / 8.0,
        # warm-up 1 epoch. No pre-activation taps on these networks: post-activation maps on both sides.
        weight = 1.0 if pair == "imagenet_r34_r18" else 8.0
        return {"dataset": {"batch_size": 256}, "optim": {"lr": 0.1},
                "distiller": {"method": {"weight": weight, "warmup_epochs": 1, "preact": False,
                                         "student_relu": False}}}
    if method in ("crd", "crcd"):
        return {"dataset": {"batch_size": 256}, "optim": {"lr": 0.1}}
    if method == "dkd":
        beta = 0.5 if pair == "imagenet_r34_r18" else 2.0
        return {"distiller": {"method": {"beta": beta, "temperature": 1.0, "warmup": 1}}}
    if method == "ckd":
        # ZhouXinzzzzz/CKD @ f16a145 configs/imagenet/{r34_r18,r50_mv1}/ckd.yaml:15-20: batch 512, 200 epochs, lr 0.2,
        # cosine to 0 (mdistiller/engine/trainer.py:48-49, T_max = epochs, stepped per epoch), wd 1e-4. The cosine
        # scheduler is the experiment's `override /sched: cosine`; the pair's step schedule is its own sched config
        # (configs/sched/imagenet_multistep.yaml), so none of its keys reach CosineAnnealingLR.
        return {"trainer": {"epochs": 200}, "distiller": {"method": {"weight": 10.0, "temperature": 1.0}}}
    return {}


def recipe(method: str, pair: str) -> dict:
    """Overrides of the RepDistiller recipe that the method's own paper used."""
    if method == "crcd":
        return {"trainer": {"epochs": 250}}
    if method == "ckd":
        batch, weight, temperature = CKD_RECIPE[pair]
        return {"trainer": {"epochs": 480}, "dataset": {"batch_size": batch},
                "distiller": {"method": {"weight": weight, "temperature": temperature}}}
    if method == "dkd" and pair in DKD_BETA:
        return {"distiller": {"method": {"beta": DKD_BETA[pair]}}}
    if method == "reviewkd":
        overrides = {"weight": REVIEWKD_WEIGHT[pair]} if pair in REVIEWKD_WEIGHT else {}
        if PAIRS[pair][1] in REVIEWKD_TAPPED_AS_IS:
            overrides["student_relu"] = False
        return {"distiller": {"method": overrides}} if overrides else {}
    if method in ("rrd", "rrd_kd"):
        # giakoumoglou/rrd @ 45e1cf8 datasets/cifar100.py:47 (83cefda cifar/datasets/cifar100.py:47): the training
        # DataLoader of the FIFO-queue variant has drop_last=True.
        return {"dataset": {"drop_last": True}}
    # kd_dot: mdistiller @ a08d46f configs/cifar100/dot/{res32x4_res8x4,vgg13_vgg8,res32x4_shuv2}.yaml are
    # RepDistiller's recipe (240 epochs, batch 64, lr 0.05 / 0.01 for ShuffleV2, x0.1 at 150/180/210, wd 5e-4,
    # momentum 0.9) with mdistiller's default KD terms (CE 0.1, KD 0.9, T 4) and DOT.DELTA 0.075: all defaults
    # here (optim/dot.yaml).
    return {}


def published_cells() -> dict[tuple[str, str], dict]:
    """(method, pair) -> the published entry an experiment names: the method's own paper first,
    then the CRD paper (which ran every baseline), then the most direct provenance."""
    data = published_data()
    rank = {"official_readme": 0, "official_readme_history": 1, "second_hand": 2, "pwc_archive": 3}
    cells: dict[tuple[str, str], tuple] = {}
    for e in data["entries"]:
        pair = PAIR_OF.get((e["teacher"], e["student"]))
        if e["dataset"] != "cifar100" or pair is None or e["method"] not in DISTILLERS or e["top1"] is None:
            continue
        own = 0 if e["method"].startswith(e["paper"]) else 1 if e["paper"] == "crd" else 2
        key = (own, rank.get(e["provenance"], 9))
        entry = published_entry(e)
        if (e["method"], pair) not in cells or key < cells[(e["method"], pair)][0]:
            cells[(e["method"], pair)] = (key, entry)
    return {cell: entry for cell, (_, entry) in cells.items()}


@functools.lru_cache(maxsize=1)
def published_data() -> dict:
    """results/paper/published.yaml, read once (every experiment file consults it)."""
    return yaml.safe_load(PUBLISHED.read_text())


def published_entry(entry: dict) -> dict:
    """The ``published:`` block of an experiment file for one entry of published.yaml."""
    return {"acc1": entry["top1"], "paper": entry["paper"],
            "metric": published_data()["papers"][entry["paper"]]["metric"], "provenance": entry["provenance"],
            "source": entry["source"]}


def protocol(published: dict | None, dataset: str) -> dict | None:
    """How the paper behind ``published`` reports a cell: how many seeds it averaged (null: not stated) and
    which epoch's accuracy (last_epoch, best_epoch or unknown), from the papers block of published.yaml.
    scripts/make_tables.py reports the cell by this rule and marks it while it has fewer seeds."""
    if published is None:
        return None
    paper = published_data()["papers"][published["paper"]]
    runs = paper.get("runs")
    seeds = runs.get(dataset) if isinstance(runs, dict) else runs
    return {"seeds": seeds, "report": paper["metric"], "paper": published["paper"]}


def optimizer_default(method: str) -> list[str]:
    """The defaults-list line that selects the method's own optimiser, if it has one."""
    return [f"  - override /optim: {OPTIMIZERS[method]}"] if method in OPTIMIZERS else []


def dump(data: dict) -> str:
    return yaml.safe_dump(data, sort_keys=False, default_flow_style=False, width=120)


def pair_file(pair: str) -> str:
    teacher, student = PAIRS[pair]
    return (f"# @package _global_\n# {teacher} -> {student}. {MARK}\n"
            f"defaults:\n  - override /teacher: {teacher}\n  - override /student: {student}\n")


def experiment_file(method: str, pair: str, published: dict | None) -> str:
    teacher, student = PAIRS[pair]
    lines = ["# @package _global_", f"# {TITLES[method]}, {teacher} -> {student}. {MARK}"]
    if method in NOTES:
        lines.append(f"# {NOTES[method]}")
    if published is None:
        lines.append("# No published CIFAR-100 number for this cell could be sourced; the recipe is the paper's.")
    lines += [f"defaults:\n  - /pair: {pair}\n  - override /distiller: {method}"]
    if method == "ckd":
        lines.append("  - override /sched: cosine")
    lines += optimizer_default(method)
    body = {"name": f"{method}_{pair}", **recipe(method, pair), "published": published,
            "protocol": protocol(published, "cifar100")}
    return "\n".join(lines) + "\n\n" + dump(body)


def vanilla_file(student: str, published: dict | None) -> str:
    return (f"# @package _global_\n# {student} trained alone (cross-entropy only), the vanilla-student row. {MARK}\n"
            f"defaults:\n  - override /student: {student}\n  - override /distiller: none\n\n"
            + dump({"name": f"vanilla_{arch_token(student)}", "published": published,
                    "protocol": protocol(published, "cifar100")}))


def vanilla_published() -> dict[str, dict]:
    data = published_data()
    found = {}
    for e in data["entries"]:
        if e["dataset"] == "cifar100" and e["method"] == "vanilla_student" and e["paper"] == "crd":
            found.setdefault(e["student"], {"acc1": e["top1"], "paper": "crd", "metric": "last_epoch",
                                            "provenance": e["provenance"], "source": e["source"]})
    return found


def imagenet_published() -> dict[tuple[str, str], dict]:
    data = published_data()
    pairs = {names: pair for pair, names in IMAGENET_PAIRS.items()}
    found: dict[tuple[str, str], dict] = {}
    for e in data["entries"]:
        pair = pairs.get((e["teacher"], e["student"]))
        if e["dataset"] != "imagenet" or pair is None or e["top1"] is None:
            continue
        own = e["method"].startswith(e["paper"])
        if (e["method"], pair) not in found or own:
            found[(e["method"], pair)] = published_entry(e)
    return found


def imagenet_experiment_file(method: str, pair: str, published: dict | None) -> str:
    teacher, student = IMAGENET_TITLES[pair]
    lines = ["# @package _global_", f"# {TITLES[method]}, ImageNet {teacher} -> {student}. {MARK}"]
    if method == "crcd":
        lines.append("# CRCD's ImageNet recipe is not public; this uses CRD's (batch 256, lr 0.1).")
    if method == "reviewkd":
        lines.append("# mdistiller's ReviewKD recipe, but on post-activation maps: mdistiller's ImageNet networks give "
                     "pre-activation ones (STU_PREACT: True), torchvision's and timm's have no such taps.")
    if published is None:
        lines.append("# No published number for this cell could be sourced.")
    lines += [f"defaults:\n  - /pair: {pair}\n  - override /distiller: {method}"]
    if method == "ckd":
        lines.append("  - override /sched: cosine")
    lines += optimizer_default(method)
    body = {"name": f"{method}_{pair}", **imagenet_recipe(method, pair), "published": published,
            "protocol": protocol(published, "imagenet")}
    return "\n".join(lines) + "\n\n" + dump(body)


def imagenet_baseline_file(pair: str, row: str, published: dict) -> str:
    """A network of the pair alone: the student trained with the pair's recipe (mdistiller's ImageNet solver:
    batch 512, lr 0.2), or the teacher as the papers use it, torchvision's released weights evaluated
    (role: eval), not trained."""
    teacher, student = IMAGENET_TITLES[pair]
    if row == "vanilla_student":
        what = (f"ImageNet {student} trained alone (cross-entropy only), the vanilla-student row, with mdistiller's "
                "ImageNet recipe.")
        body = {"name": f"vanilla_imagenet_{IMAGENET_PAIRS[pair][1]}"}
    else:
        what = (f"ImageNet {teacher}, the vanilla-teacher row: torchvision's released weights evaluated on the "
                "validation set (role: eval; offline, teacher.checkpoint=<its state dict>).")
        body = {"name": f"teacher_imagenet_{IMAGENET_PAIRS[pair][0]}", "role": "eval"}
    lines = ["# @package _global_", f"# {what} {MARK}", f"defaults:\n  - /pair: {pair}\n  - override /distiller: none"]
    body.update(published=published, protocol=protocol(published, "imagenet"))
    return "\n".join(lines) + "\n\n" + dump(body)


# Tiny-ImageNet cells (DOT's table; mdistiller's recipe in configs/pair/tinyimagenet_*.yaml, 64x64 images): pair ->
# (teacher, student) as published.yaml names them; the pair config picks the architectures (models/tiny_imagenet/).
TINY_PAIRS = {"tinyimagenet_r18_mv2": ("resnet18", "mobilenetv2"),
              "tinyimagenet_r18_shuv2": ("resnet18", "shufflenetv2")}
TINY_TITLES = {"tinyimagenet_r18_mv2": ("ResNet18", "MobileNetV2"), "tinyimagenet_r18_shuv2": ("ResNet18", "ShuffleV2")}
TINY_METHODS = ["kd", "kd_dot"]


def tiny_imagenet_published() -> dict[tuple[str, str], dict]:
    """(method, pair) -> the published Tiny-ImageNet number (DOT's table is the only source)."""
    data = published_data()
    pairs = {names: pair for pair, names in TINY_PAIRS.items()}
    found = {}
    for e in data["entries"]:
        pair = pairs.get((e["teacher"], e["student"]))
        if e["dataset"] == "tinyimagenet" and pair is not None and e["top1"] is not None:
            found[(e["method"], pair)] = published_entry(e)
    return found


def tiny_imagenet_experiment_file(method: str, pair: str, published: dict | None) -> str:
    teacher, student = TINY_TITLES[pair]
    lines = ["# @package _global_", f"# {TITLES[method]}, Tiny-ImageNet {teacher} -> {student}. {MARK}"]
    if method == "kd":
        lines.append("# mdistiller ships no Tiny-ImageNet KD config: its DOT recipe with SGD and KD's defaults.")
    if published is None:
        lines.append("# No published number for this cell could be sourced.")
    lines += [f"defaults:\n  - /pair: {pair}\n  - override /distiller: {method}", *optimizer_default(method)]
    body = {"name": f"{method}_{pair}", "published": published, "protocol": protocol(published, "tinyimagenet")}
    return "\n".join(lines) + "\n\n" + dump(body)


# Transfer tables (linear probe of a frozen CIFAR-100 network, configs/probe/linear.yaml): the published dataset
# key -> the dataset config; every row is wrn_40_2 -> wrn_16_2, frozen after the CIFAR-100 run named here.
TRANSFER_DATASETS = {"cifar100_to_stl10": "stl10", "cifar100_to_tinyimagenet": "tiny_imagenet"}
TRANSFER_PAIR = "wrn40_2_16_2"


def transfer_source(method: str) -> str:
    """The CIFAR-100 experiment whose model.pth the probe freezes."""
    teacher, student = PAIRS[TRANSFER_PAIR]
    if method == "vanilla_teacher":
        return f"teacher_{arch_token(teacher)}"
    if method == "vanilla_student":
        return f"vanilla_{arch_token(student)}"
    return f"{method}_{TRANSFER_PAIR}"


def transfer_published() -> dict[tuple[str, str], dict]:
    """(method, dataset key) -> the published linear-probe number."""
    data = published_data()
    found = {}
    for e in data["entries"]:
        if e["dataset"] in TRANSFER_DATASETS and (e["teacher"], e["student"]) == PAIRS[TRANSFER_PAIR]:
            found[(e["method"], e["dataset"])] = published_entry(e)
    return found


def transfer_file(method: str, table: str, published: dict) -> str:
    teacher, student = PAIRS[TRANSFER_PAIR]
    dataset, source = TRANSFER_DATASETS[table], transfer_source(method)
    frozen = (f"the CIFAR-100 teacher {teacher}" if method == "vanilla_teacher" else
              f"the CIFAR-100 {student} trained alone" if method == "vanilla_student" else
              f"the CIFAR-100 {student} distilled by {TITLES[method]} from {teacher}")
    freezes = (f"teacher.checkpoint, the teacher the students were distilled from (or the model.pth of {source})"
               if method == "vanilla_teacher" else f"the model.pth of experiment {source}: run that first")
    lines = ["# @package _global_", f"# Linear probe on {dataset} of {frozen}. {MARK}",
             f"# Freezes {freezes}. The recipe is in configs/probe/linear.yaml.",
             f"defaults:\n  - /pair: {TRANSFER_PAIR}\n  - /probe: linear\n  - override /distiller: none"
             f"\n  - override /dataset: {dataset}"]
    probe = {"source_experiment": source, "method": method, "table": table}
    body: dict = {"name": f"transfer_{method}_{dataset}", "probe": probe}
    if method == "vanilla_teacher":  # the teacher the students were distilled from, with its own lr
        probe.update(arch="${teacher.arch}", checkpoint="${teacher.checkpoint}")
        body["optim"] = {"lr": "${teacher.lr}"}
    body["published"] = published
    body["protocol"] = protocol(published, table)
    return "\n".join(lines) + "\n\n" + dump(body)


def wanted_files() -> dict[Path, str]:
    files = {CONFIGS / "pair" / f"{pair}.yaml": pair_file(pair) for pair in PAIRS}
    cells = published_cells()
    for method, pairs in UNPUBLISHED_PAIRS.items():
        for pair in pairs:
            cells.setdefault((method, pair), None)
    for (method, pair), published in sorted(cells.items()):
        files[CONFIGS / "experiment" / f"{method}_{pair}.yaml"] = experiment_file(method, pair, published)
    imagenet = imagenet_published()
    for pair in IMAGENET_PAIRS:
        for method in IMAGENET_METHODS:
            if (method, pair) not in IMAGENET_NA:
                files[CONFIGS / "experiment" / f"{method}_{pair}.yaml"] = imagenet_experiment_file(
                    method, pair, imagenet.get((method, pair)))
        baselines = {"vanilla_student": f"vanilla_imagenet_{IMAGENET_PAIRS[pair][1]}",
                     "vanilla_teacher": f"teacher_imagenet_{IMAGENET_PAIRS[pair][0]}"}
        for row, name in baselines.items():
            if (row, pair) in imagenet:
                path = CONFIGS / "experiment" / f"{name}.yaml"
                files[path] = imagenet_baseline_file(pair, row, imagenet[(row, pair)])
    tiny = tiny_imagenet_published()
    for pair in TINY_PAIRS:
        for method in TINY_METHODS:
            files[CONFIGS / "experiment" / f"{method}_{pair}.yaml"] = tiny_imagenet_experiment_file(
                method, pair, tiny.get((method, pair)))
    vanilla = vanilla_published()
    for student in sorted({s for _, s in PAIRS.values()}):
        name = f"vanilla_{arch_token(student)}"
        files[CONFIGS / "experiment" / f"{name}.yaml"] = vanilla_file(student, vanilla.get(student))
    for (method, table), published in sorted(transfer_published().items()):
        source = CONFIGS / "experiment" / f"{transfer_source(method)}.yaml"
        if source not in files and not source.exists():
            raise SystemExit(f"transfer_{method}: its CIFAR-100 experiment {source.name} does not exist")
        path = CONFIGS / "experiment" / f"transfer_{method}_{TRANSFER_DATASETS[table]}.yaml"
        files[path] = transfer_file(method, table, published)
    return files


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--check", action="store_true", help="only compare; exit 1 if anything is out of date")
    args = parser.parse_args()
    wanted = wanted_files()
    generated = [p for p in (CONFIGS / "experiment").glob("*.yaml") if MARK in p.read_text()]
    stale = [p for p in generated if p not in wanted]
    differing = [p for p, text in wanted.items() if not p.exists() or p.read_text() != text]
    if args.check:
        for p in differing + stale:
            print(f"out of date: {p.relative_to(ROOT)}")
        sys.exit(1 if differing or stale else 0)
    for p in stale:
        p.unlink()
    for p in differing:
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(wanted[p])
    print(f"{len(wanted)} files: {len(differing)} written, {len(stale)} removed")


if __name__ == "__main__":
    main()
