"""scripts/gpu_check.sh runs every part end to end (CPU-sized here) and writes one JSON file; a failing part
fails the check, names itself, and the parts that need it are reported as not run."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPTS = Path(__file__).resolve().parents[1] / "scripts"
spec = importlib.util.spec_from_file_location("gpu_check_report", SCRIPTS / "gpu_check_report.py")
report = importlib.util.module_from_spec(spec)
spec.loader.exec_module(report)


def gpu_check(tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "GPU_CHECK_DEVICE": "cpu", "TMPDIR": str(tmp_path),
           "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    return subprocess.run(["bash", str(SCRIPTS / "gpu_check.sh"), *args], env=env, capture_output=True, text=True,
                          timeout=300)


@pytest.mark.slow
def test_every_part_runs_on_the_cpu_and_lands_in_one_json(tmp_path) -> None:
    out = tmp_path / "check.json"
    done = gpu_check(tmp_path, "--no-venv", "--tiny", "--out", str(out))
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    result = json.loads(out.read_text())
    assert result["ok"] and result["problems"] == [] and result["device"] == "cpu"
    assert [(p["name"], p["ok"]) for p in result["parts"]] == [
        ("install", True), ("device", True), ("cuda_tests", True), ("bench", True), ("training", True)]
    # Without a GPU the cuda tests are collected and skipped, none fails.
    assert result["cuda_tests"]["skipped"] >= 2 and result["cuda_tests"]["failed"] == 0
    bench = result["bench"]
    assert [row["path"] for row in bench["paths"]] == ["reference_loop", "reference", "fast"]
    assert bench["order"] == ["reference_loop", "reference", "fast"] * 2
    assert all(row["ops_per_step"]["aten_ops"] > 0 for row in bench["paths"])
    assert result["machine"]["device"] == "cpu"
    training = result["training"]
    assert training["experiment"] == "crd_resnet32x4_8x4" and training["finished"]
    assert [e["epoch"] for e in training["epochs"]] == [1, 2] and training["epochs"][1]["time/images_per_s"] > 0
    assert "GPU check on cpu: PASSED" in done.stdout
    assert not list(tmp_path.glob("distillbench-gpu-check.*"))  # the scratch folder is removed


def test_an_install_that_fails_fails_the_check_and_skips_what_needs_it(tmp_path) -> None:
    """Offline, from an empty wheels folder: pip cannot find the build backend."""
    (tmp_path / "wheels").mkdir()
    out = tmp_path / "check.json"
    done = gpu_check(tmp_path, "--wheels", str(tmp_path / "wheels"), "--tiny", "--out", str(out))
    assert done.returncode == 1
    result = json.loads(out.read_text())
    assert not result["ok"] and [p["name"] for p in result["parts"]] == ["install"]
    assert result["problems"][:2] == ["part 'install' failed (exit status 1)", "part 'device' did not run"]


@pytest.mark.parametrize(("args", "env", "says"), [
    (["--fast"], {}, "unknown option '--fast'"),
    ([], {"GPU_CHECK_DEVICE": "tpu"}, "GPU_CHECK_DEVICE must be cuda or cpu, got 'tpu'"),
    (["--wheels", "/no/such/folder"], {}, "--wheels /no/such/folder is not a folder"),
])
def test_wrong_options_are_refused_before_any_work(tmp_path, args, env, says) -> None:
    done = subprocess.run(["bash", str(SCRIPTS / "gpu_check.sh"), *args], capture_output=True, text=True,
                          env={**os.environ, "TMPDIR": str(tmp_path), **env})
    assert done.returncode == 2 and says in done.stderr
    assert not list(tmp_path.iterdir())


def test_the_report_names_failed_and_missing_parts(tmp_path) -> None:
    (tmp_path / "parts.tsv").write_text("install\t0\t40\ndevice\t0\t2\ncuda_tests\t0\t30\nbench\t3\t200\n")
    (tmp_path / "cuda_tests.xml").write_text(
        '<testsuites><testsuite name="pytest" errors="0" failures="1" skipped="0" tests="5"/></testsuites>')
    code = report.main(["--work", str(tmp_path), "--out", str(tmp_path / "out.json")])
    result = json.loads((tmp_path / "out.json").read_text())
    assert code == 1 and not result["ok"] and result["seconds"] == 272
    assert result["problems"] == ["part 'bench' failed (exit status 3)", "part 'training' did not run"]
    assert result["cuda_tests"] == {"passed": 4, "failed": 1, "errors": 0, "skipped": 0}
    assert result["bench"] is None and result["training"] is None
