"""The text of ``python -m distillbench --help`` that is generated from configs/ when it is printed: the
experiments grouped by paper (``distillbench.catalog``) and the other config groups, wrapped to the terminal.
Hydra puts them into configs/hydra/help/distillbench.yaml, whose ``${distillbench.help:...}`` calls
``help_text``. At 80 columns the whole help takes under 100 lines (tests/test_help.py).
"""

from __future__ import annotations

import re
import shutil
import textwrap
from collections import defaultdict

from distillbench.catalog import CONFIG_DIR, Group, compact_names, experiment_groups, options

# Config groups not worth listing: the experiments (listed apart), Hydra's, the machine's own paths.
UNLISTED_GROUPS = ("experiment", "hydra", "local")


def wrap(items: list[str], width: int, indent: str = "  ", hang: str = "    ") -> list[str]:
    """``items`` two spaces apart in lines of at most ``width`` characters, the first line indented by
    ``indent``, the others by ``hang``; an item longer than a line breaks after a comma."""
    lines, line = [], indent
    for item in items:
        pieces = [piece + "," for piece in item.split(",")]
        pieces[-1] = pieces[-1][:-1]
        if line.strip() and len(line) + 2 + len(item) > width:  # start the item on a fresh line
            lines.append(line)
            line = hang
        sep = "  " if line.strip() else ""
        for piece in pieces:
            if line.strip() and len(line) + len(sep) + len(piece) > width:
                lines.append(line)
                line, sep = hang, ""
            line += sep + piece
            sep = ""
    if line.strip():
        lines.append(line)
    return lines


def terminal_width() -> int:
    return min(max(shutil.get_terminal_size((100, 40)).columns, 60), 160)


def experiments_help(width: int | None = None) -> str:
    width = width or terminal_width()
    groups = experiment_groups()
    intro = (f"{sum(len(g.names) for g in groups)} experiments (configs/experiment/), by the paper that publishes "
             "their number; run one with experiment=NAME. Braces expand as in a shell: kd_{resnet56_20,vgg13_vgg8} "
             "is kd_resnet56_20 and kd_vgg13_vgg8.")
    lines = textwrap.wrap(intro, width)
    for group in groups:
        lines += textwrap.wrap(group_heading(group, width), width, subsequent_indent="    ")
        blocks, others = compact_names(group.names)
        for block in blocks:
            lines += wrap([block], width)
        lines += wrap(others, width, hang="  ")
    return "\n".join(lines)


def group_heading(group: Group, width: int) -> str:
    """``Title (count)``; a paper's title too long for the line keeps its name and citation only."""
    heading = f"{group.title} ({len(group.names)})"
    short = re.fullmatch(r"(\S+): .* (\([^()]*\))", group.title)
    if len(heading) > width and short:
        heading = f"{short[1]} {short[2]} ({len(group.names)})"
    return heading


def groups_help(width: int | None = None) -> str:
    """The other config groups and their options (groups with the same options share a line)."""
    width = width or terminal_width()
    folders = sorted(p.name for p in CONFIG_DIR.iterdir() if p.is_dir() and p.name not in UNLISTED_GROUPS)
    by_options: dict[tuple[str, ...], list[str]] = defaultdict(list)
    for folder in folders:
        if options(folder):
            by_options[tuple(options(folder))].append(folder)
    lines = []
    for choices, names in sorted(by_options.items(), key=lambda entry: entry[1]):
        lines += wrap([f"{', '.join(names)}:", *choices], width)
    return "\n".join(lines)


def help_text(part: str) -> str:
    """The generated parts of ``--help`` (configs/hydra/help/distillbench.yaml): ``experiments`` or ``groups``."""
    if part == "experiments":
        return experiments_help()
    if part == "groups":
        return groups_help()
    raise ValueError(f"help_text: no part '{part}'")
