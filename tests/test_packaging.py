"""A non-editable install carries its configs and runs from any directory."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from distillbench.catalog import CONFIG_DIR

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_a_non_editable_install_runs_the_quickstart_from_another_directory(tmp_path):
    target, elsewhere = tmp_path / "site", tmp_path / "elsewhere"
    elsewhere.mkdir()
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation",
                    "--target", str(target), str(ROOT)], check=True, capture_output=True)
    shipped = sorted(p.relative_to(target / "distillbench" / "configs").as_posix()
                     for p in (target / "distillbench" / "configs").rglob("*.yaml"))
    assert shipped == sorted(p.relative_to(CONFIG_DIR).as_posix() for p in CONFIG_DIR.rglob("*.yaml")
                             if p.parent.name != "local")
    env = {**os.environ, "PYTHONPATH": str(target), "WANDB_MODE": "disabled"}
    done = subprocess.run([sys.executable, "-m", "distillbench", "experiment=quickstart", "debug=fast",
                           "trainer.progress=false"], cwd=elsewhere, env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "| kd | resnet8 | kd |" in done.stdout
    assert (elsewhere / "runs" / "quickstart").is_dir()
    imported = subprocess.run([sys.executable, "-c", "import distillbench; print(distillbench.__file__)"],
                              cwd=elsewhere, env=env, capture_output=True, text=True, check=True).stdout
    assert imported.startswith(str(target))  # the installed copy ran, not the repository


def test_the_repository_configs_folder_is_the_package_configs():
    assert (ROOT / "configs").resolve() == CONFIG_DIR
    assert (CONFIG_DIR / "config.yaml").is_file()
