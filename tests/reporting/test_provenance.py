"""Every published number names where it comes from; doubtful ones say why."""

from __future__ import annotations

import re

import yaml

from tests.reporting.conftest import PUBLISHED

COMMIT = re.compile(r"@ [0-9a-f]{40}\b")
PAPER_TABLE = re.compile(r"\bTable \d+")
URL = re.compile(r"https?://\S+")


def data() -> dict:
    return yaml.safe_load(PUBLISHED.read_text())


def test_every_entry_names_its_source():
    """A repository file at a commit, a paper table, or (Papers-with-Code archive) the archived page."""
    papers = data()["papers"]
    missing = []
    for i, e in enumerate(data()["entries"]):
        source = (e.get("source") or "").strip()
        named = COMMIT.search(source) or PAPER_TABLE.search(source) or (
            e.get("provenance") == "pwc_archive" and URL.search(source))
        if not named or e["paper"] not in papers:
            missing.append(f"entry {i}: {e['paper']} {e['dataset']} {e['method']} {e['teacher']}->{e['student']}")
    assert not missing, "entries without a source (repository file @ commit, paper Table N, or archive URL):\n" + \
        "\n".join(missing)


def test_doubtful_entries_say_why_and_papers_state_their_protocol():
    for e in data()["entries"]:
        if "doubtful" in e:
            assert isinstance(e["doubtful"], str) and len(e["doubtful"]) > 20, e
    for name, paper in data()["papers"].items():
        assert paper["metric"] in ("last_epoch", "best_epoch", "unknown"), name
        runs = paper.get("runs")
        assert runs is None or isinstance(runs, int) or all(isinstance(v, int) for v in runs.values()), name


def test_the_imagenet_at_number_is_the_at_papers_and_marked():
    entries = data()["entries"]
    (at,) = [e for e in entries if (e["dataset"], e["method"], e["student"]) == ("imagenet", "at", "resnet18")]
    assert at["top1"] == 70.7 and at["paper"] == "at" and "doubtful" in at
