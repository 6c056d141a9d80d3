"""Gather what scripts/gpu_check.sh produced into one JSON file and print a short verdict.

    python scripts/gpu_check_report.py --work WORK_DIR --out results/bench/gpu_<date>.json

WORK_DIR holds ``parts.tsv`` (one line per part: name, exit status, seconds), ``cuda_tests.xml``
(pytest's JUnit report), ``bench.json`` (scripts/bench.py --json) and ``runs/`` (the training run).
A part that is missing or failed makes the check fail (exit status 1).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

PARTS = ("install", "device", "cuda_tests", "bench", "training")


def read_parts(path: Path) -> list[dict]:
    parts = []
    if path.is_file():
        for line in path.read_text().splitlines():
            name, rc, seconds = line.split("\t")
            parts.append({"name": name, "ok": rc == "0", "exit_status": int(rc), "seconds": float(seconds)})
    return parts


def read_tests(path: Path) -> dict | None:
    """Counts of pytest's JUnit report (its ``testsuite`` element)."""
    if not path.is_file():
        return None
    root = ET.parse(path).getroot()
    suite = root if root.tag == "testsuite" else root.find("testsuite")
    tests, failures, errors, skipped = (int(suite.get(key, 0)) for key in ("tests", "failures", "errors", "skipped"))
    return {"passed": tests - failures - errors - skipped, "failed": failures, "errors": errors, "skipped": skipped}


def read_training(runs: Path) -> dict | None:
    """The training run's per-epoch figures and summary (the one run directory under ``runs``)."""
    run_files = sorted(runs.rglob("run.json")) if runs.is_dir() else []
    if not run_files:
        return None  # also when distillbench could not be installed: nothing below is imported then
    from distillbench.loggers import read_metrics

    run_dir = run_files[0].parent
    epochs = [{key: row.get(key) for key in ("epoch", "time/epoch_s", "time/images_per_s", "train/loss",
                                             "train/acc1", "test/acc1")} for row in read_metrics(run_dir)]
    summary_file = run_dir / "summary.json"
    summary = json.loads(summary_file.read_text()) if summary_file.is_file() else None
    run = json.loads(run_files[0].read_text())
    return {"experiment": run.get("experiment"), "identity": run.get("identity"), "epochs": epochs,
            "finished": bool(summary and summary.get("finished")), "resolved": run.get("resolved")}


def gather(work: Path, device: str) -> dict:
    parts = read_parts(work / "parts.tsv")
    bench_file = work / "bench.json"
    bench = json.loads(bench_file.read_text()) if bench_file.is_file() else None
    training = read_training(work / "runs")
    done = {p["name"] for p in parts}
    problems = [f"part '{p['name']}' failed (exit status {p['exit_status']})" for p in parts if not p["ok"]]
    problems += [f"part '{name}' did not run" for name in PARTS if name not in done]
    if training is not None and not training["finished"]:
        problems.append("the training run did not finish")
    return {
        "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "device": device, "ok": not problems, "problems": problems,
        "seconds": sum(p["seconds"] for p in parts), "parts": parts,
        "machine": bench["machine"] if bench else None,
        "cuda_tests": read_tests(work / "cuda_tests.xml"), "bench": bench, "training": training,
    }


def verdict(result: dict) -> str:
    lines = [f"GPU check on {result['device']}: {'PASSED' if result['ok'] else 'FAILED'} in {result['seconds']:.0f} s"]
    lines += [f"  {p['name']:<11} {'ok' if p['ok'] else 'FAILED'} ({p['seconds']:.0f} s)" for p in result["parts"]]
    if result["cuda_tests"]:
        lines.append("  cuda tests: " + ", ".join(f"{v} {k}" for k, v in result["cuda_tests"].items()))
    if result["training"]:
        lines += [f"  training epoch {e['epoch']}: {e['time/epoch_s']:.1f} s, {e['time/images_per_s']:.0f} images/s"
                  for e in result["training"]["epochs"]]
    lines += [f"  problem: {problem}" for problem in result["problems"]]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--work", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--device", default="cuda")
    args = parser.parse_args(argv)
    result = gather(args.work, args.device)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(verdict(result) + f"\n  written to {args.out}")
    return 0 if result["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
