"""The experiments in configs/experiment, grouped the way a reader looks for them: by the paper whose
table publishes their number, otherwise by kind (teachers, ImageNet, ...).

A table is methods × teacher-student pairs, so its experiments are listed as shell brace expansions of
their names: ``{kd,crd}_{resnet56_20,vgg13_vgg8}`` stands for kd_resnet56_20, kd_vgg13_vgg8,
crd_resnet56_20 and crd_vgg13_vgg8. Every experiment is named exactly once (tests/test_help.py).
"""

from __future__ import annotations

import functools
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import yaml

# The configs ship inside the package (the repository's configs/ is a link to them), so an installed copy
# runs from any directory; the published numbers are the repository's (absent from an installed copy).
CONFIG_DIR = Path(__file__).resolve().parent / "configs"
PUBLISHED = Path(__file__).resolve().parents[1] / "results" / "paper" / "published.yaml"

# Groups of experiments without a published number, by name: the first rule that matches.
KINDS = (
    ("Start here", lambda name: name == "quickstart"),
    ("Teachers", lambda name: name.startswith("teacher_")),
    ("Students trained alone", lambda name: name.startswith("vanilla_")),
    ("Transfer (linear probes)", lambda name: name.startswith("transfer_")),
    ("Tiny-ImageNet", lambda name: "tinyimagenet" in name),
    ("ImageNet", lambda name: "imagenet_" in name),
    ("CIFAR-100", lambda name: True),
)


def experiment_names() -> list[str]:
    return sorted(path.stem for path in (CONFIG_DIR / "experiment").glob("*.yaml"))


def options(group: str) -> list[str]:
    """The options of a config group: the YAML files directly in its folder."""
    return sorted(path.stem for path in (CONFIG_DIR / group).glob("*.yaml"))


@dataclass
class Group:
    title: str
    names: list[str]


def _loader():
    return getattr(yaml, "CSafeLoader", yaml.SafeLoader)


@functools.lru_cache(maxsize=1)
def paper_titles() -> dict[str, str]:
    """``crd`` -> ``CRD: Contrastive Representation Distillation (Tian et al., ICLR 2020)``."""
    from distillbench.reporting.papers import paper_name

    try:
        papers = yaml.load(PUBLISHED.read_text(), Loader=_loader()).get("papers", {})
    except OSError:  # an installed copy without results/
        papers = {}
    titles = {}
    for key, entry in papers.items():
        title, name = entry.get("title", ""), paper_name(key)
        titles[key] = title if title.startswith(name) else f"{name}: {title}" if title else name
    return titles


def experiment_groups() -> list[Group]:
    """Experiments with a published number by paper (the ``paper`` of their ``published:`` block), in the order
    of results/paper/published.yaml; the others by kind (``KINDS``), each marked as having no published number."""
    by_paper: dict[str, list[str]] = defaultdict(list)
    by_kind: dict[str, list[str]] = defaultdict(list)
    for name in experiment_names():
        config = yaml.load((CONFIG_DIR / "experiment" / f"{name}.yaml").read_text(), Loader=_loader()) or {}
        paper = (config.get("published") or {}).get("paper")
        if paper:
            by_paper[paper].append(name)
        else:
            by_kind[next(kind for kind, matches in KINDS if matches(name))].append(name)
    titles = paper_titles()
    order = list(titles) + sorted(set(by_paper) - set(titles))
    groups = [Group(kind, by_kind[kind]) for kind, _ in KINDS[:1] if by_kind[kind]]
    groups += [Group(titles.get(paper) or paper.upper(), by_paper[paper]) for paper in order if by_paper[paper]]
    groups += [Group(f"{kind}, no published number", by_kind[kind]) for kind, _ in KINDS[1:] if by_kind[kind]]
    return groups


# ------------------------------------------------------------------------------------- brace expansions
def name_tails() -> list[str]:
    """What experiment names end in: a teacher-student pair, a network, a dataset; longest first."""
    tails = {*options("pair"), *options("model"), *options("dataset")}
    return sorted(tails, key=len, reverse=True)


def _split(name: str, tails: list[str]) -> tuple[str, str] | None:
    for tail in tails:
        if name.endswith("_" + tail) and len(name) > len(tail) + 1:
            return name[: -len(tail) - 1], tail
    return None


def _braces(parts: list[str]) -> str:
    return parts[0] if len(parts) == 1 else "{" + ",".join(parts) + "}"


def compact_names(names: list[str]) -> tuple[list[str], list[str]]:
    """``names`` as brace expansions, and the names left over. Methods that share a set of pairs (or networks,
    or datasets) become one ``{methods}_{pairs}``, a common prefix of the methods kept outside the braces. A
    method with a few pairs more than a block joins it, and its extra names are listed apart."""
    tails = name_tails()
    stems: dict[str, set[str]] = defaultdict(set)
    leftover = []
    for name in names:
        split = _split(name, tails)
        if split is None:
            leftover.append(name)
        else:
            stems[split[0]].add(split[1])
    blocks: dict[frozenset[str], list[str]] = defaultdict(list)
    for stem, stem_tails in stems.items():
        blocks[frozenset(stem_tails)].append(stem)
    placed: list[tuple[frozenset[str], list[str]]] = []
    extra: list[str] = []
    for block_tails, block_stems in sorted(blocks.items(), key=lambda b: (-len(b[1]), len(b[0]), sorted(b[1]))):
        hosts = [p for p in placed if p[0] < block_tails and len(p[0]) > len(block_tails - p[0])]
        if not hosts:
            placed.append((block_tails, sorted(block_stems)))
            continue
        host_tails, host_stems = max(hosts, key=lambda p: len(p[0]))
        host_stems.extend(block_stems)
        extra += [f"{stem}_{tail}" for stem in block_stems for tail in sorted(block_tails - host_tails)]
    items = []
    for block_tails, block_stems in placed:
        if len(block_tails) == 1 and len(block_stems) == 1:
            leftover.append(f"{block_stems[0]}_{next(iter(block_tails))}")
            continue
        block_stems = sorted(block_stems)
        prefix = _common_prefix(block_stems) if len(block_stems) > 1 else ""
        items.append(f"{prefix}{_braces([stem[len(prefix):] for stem in block_stems])}_{_braces(sorted(block_tails))}")
    if extra:
        more, rest = compact_names(extra)
        items, leftover = items + more, leftover + rest
    return sorted(items, key=lambda item: (-len(expand(item)), item)), sorted(leftover)


def _common_prefix(stems: list[str]) -> str:
    """The longest common prefix of ``stems`` that ends at an underscore and leaves each stem non-empty."""
    prefix = stems[0]
    for stem in stems[1:]:
        while not stem.startswith(prefix):
            prefix = prefix[:-1]
    prefix = prefix[: prefix.rfind("_") + 1]
    return prefix if all(len(stem) > len(prefix) for stem in stems) else ""


def expand(item: str) -> list[str]:
    """The names one brace expansion stands for (the inverse of ``compact_names``; what a shell does)."""
    start = item.find("{")
    if start < 0:
        return [item]
    end = item.index("}", start)
    head, choices, rest = item[:start], item[start + 1:end].split(","), item[end + 1:]
    return [name for choice in choices for name in expand(head + choice + rest)]
