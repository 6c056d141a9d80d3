"""Run identity: what counts, how a directory is named, and the command line's sweeps and resumes.

The acceptance case: a sweep over the lr gives two finished runs in two directories, each recording
its own lr and the precision that actually ran; resuming one of them with another lr exits with code 2
and one paragraph, leaving every file of its directory as it was.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from distillbench.identity import (
    DEFAULT_VARIANT,
    MAX_VARIANT_CHARS,
    differences,
    group_hash,
    identity_fields,
    identity_hash,
    variant_name,
    variant_overrides,
)
from tests.helpers import compose_config, tiny_run_overrides

RESOLVED = {"trainer.precision": "float32", "trainer.channels_last": False, "dataset.loader": "torch"}


def fields_of(*overrides: str, resolved: dict | None = None) -> dict:
    cfg = compose_config(["experiment=kd_resnet32x4_8x4", *overrides], run_dir=Path("unused"))
    return identity_fields(OmegaConf.to_container(cfg, resolve=True), resolved or RESOLVED)


def test_settings_that_cannot_change_the_result_leave_the_identity_alone():
    base = identity_hash(fields_of())
    for harmless in ("dataset.num_workers=0", "trainer.device=cpu", "trainer.progress=false",
                     "logger.wandb.mode=disabled", "paths.runs=/elsewhere", "dataset.root=/data",
                     "teacher.checkpoint=/t.pth", "trainer.check_finite_every=7", "resume=true", "overwrite=true"):
        assert identity_hash(fields_of(harmless)) == base, harmless


def test_settings_that_can_change_the_result_change_it():
    base = fields_of()
    for change in ("optim.lr=0.1", "dataset.batch_size=32", "trainer.epochs=10", "distiller.method.weight=0.5",
                   "seed=1", "dataset.verify_checksums=false", "student=resnet8"):
        assert identity_hash(fields_of(change)) != identity_hash(base), change
    # The resolved precision counts, not the word in the config: auto on a GPU is not auto on a CPU.
    bf16 = fields_of(resolved={**RESOLVED, "trainer.precision": "bf16"})
    assert identity_hash(bf16) != identity_hash(base)
    assert differences(base, bf16) == ["trainer.precision: float32 -> bf16"]


def test_a_switch_added_later_leaves_earlier_identities_alone_at_its_neutral_value():
    cfg = OmegaConf.to_container(compose_config(["experiment=kd_resnet32x4_8x4"], run_dir=Path("unused")),
                                 resolve=True)
    before = {**cfg, "trainer": {k: v for k, v in cfg["trainer"].items()
                                 if k not in ("compile_scope", "teacher_cache_dtype")}}
    assert identity_hash(identity_fields(cfg, RESOLVED)) == identity_hash(identity_fields(before, RESOLVED))
    whole_step = {**RESOLVED, "trainer.compile_scope": "step"}
    lossy_cache = {**RESOLVED, "trainer.teacher_cache_dtype": "bf16"}
    for changed in (whole_step, lossy_cache):
        assert identity_hash(identity_fields(cfg, changed)) != identity_hash(identity_fields(cfg, RESOLVED))


def test_the_group_is_the_identity_without_the_seed():
    assert group_hash(fields_of("seed=0")) == group_hash(fields_of("seed=4"))
    assert identity_hash(fields_of("seed=0")) != identity_hash(fields_of("seed=4"))
    assert group_hash(fields_of("optim.lr=0.1")) != group_hash(fields_of())


def test_variant_names_list_the_overrides_that_count_sorted_and_stable():
    assert variant_name([]) == DEFAULT_VARIANT
    assert variant_name(["experiment=kd_resnet32x4_8x4", "seed=3", "trainer.device=cpu",
                         "logger.wandb.mode=disabled", "hydra/launcher=joblib", "resume=true"]) == DEFAULT_VARIANT
    assert variant_name(["trainer.epochs=1", "optim.lr=0.1"]) == "optim.lr=0.1,trainer.epochs=1"
    assert variant_name(["+foo.bar=2", "trainer=fast"]) == "foo.bar=2,trainer=fast"
    assert variant_overrides(["dataset=digits", "dataset.root=/x"]) == ["dataset=digits"]
    long = [f"distiller.method.weight_{i}=0.{i}" for i in range(20)]
    name = variant_name(long)
    assert len(name) <= MAX_VARIANT_CHARS and name == variant_name(list(reversed(long)))
    assert name.endswith("-" + hashlib.sha256(",".join(variant_overrides(long)).encode()).hexdigest()[:8])
    assert "/" not in variant_name(["teacher.arch=timm/resnet18"])


# ----------------------------------------------------------------- the command line
def cli(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    result = subprocess.run([sys.executable, "-m", "distillbench", *args], capture_output=True, text=True,
                            timeout=600, cwd=cwd)
    result.output = result.stdout + result.stderr
    return result


def lr_sweep(root: Path, runs: Path) -> list[str]:
    return ["role=teacher", "teacher=resnet8", "trainer.epochs=1", *tiny_run_overrides(root, runs)]


def snapshot(folder: Path) -> dict[str, tuple[str, int]]:
    return {str(p.relative_to(folder)): (hashlib.md5(p.read_bytes()).hexdigest(), p.stat().st_mtime_ns)
            for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.mark.slow  # a whole command in its own process(es); CI runs it (pytest -m slow)
def test_sweeps_over_the_lr_give_one_directory_per_run_with_either_launcher_and_record_what_ran(fake_cifar_root,
                                                                                                 tmp_path):
    runs = tmp_path / "runs"
    basic = cli("-m", *lr_sweep(fake_cifar_root, runs), "optim.lr=0.05,0.1", cwd=tmp_path)
    assert basic.returncode == 0, basic.output[-3000:]
    joblib = cli("-m", *lr_sweep(fake_cifar_root, runs), "optim.lr=0.2,0.4", "hydra/launcher=joblib",
                 "hydra.launcher.n_jobs=2", cwd=tmp_path)
    assert joblib.returncode == 0, joblib.output[-3000:]

    records = sorted(runs.rglob("run.json"))
    assert len(records) == 4
    lrs = []
    for path in records:
        record, summary = json.loads(path.read_text()), json.loads((path.parent / "summary.json").read_text())
        config = OmegaConf.load(path.parent / "config.yaml")
        lr = config.optim.lr
        lrs.append(lr)
        assert f"optim.lr={lr}" in record["variant"] and path.parent.parent.name == record["variant"]
        assert record["identity_fields"]["optim.lr"] == lr and f"optim.lr={lr}" in record["command_overrides"]
        assert record["resolved"]["trainer.precision"] == "float32" == config.trainer.precision
        assert record["environment"]["torch"] and "git_commit" in record["environment"]
        assert summary["identity"] == record["identity"] and summary["finished"] is True
    assert sorted(lrs) == [0.05, 0.1, 0.2, 0.4]
    assert len({json.loads(p.read_text())["group"] for p in records}) == 4
    # Each sweep keeps its own multirun.yaml, with its own sweep.
    sweeps = sorted((runs / "sweeps").glob("*/multirun.yaml"))
    assert len(sweeps) == 2
    swept = {o for p in sweeps for o in OmegaConf.load(p).hydra.overrides.task if o.startswith("optim.lr=")}
    assert swept == {"optim.lr=0.05,0.1", "optim.lr=0.2,0.4"}


def test_resume_with_another_lr_refuses_in_one_paragraph_and_changes_nothing(fake_cifar_root, tmp_path):
    runs = tmp_path / "runs"
    first = cli(*lr_sweep(fake_cifar_root, runs), "optim.lr=0.1", cwd=tmp_path)
    assert first.returncode == 0, first.output[-3000:]
    (run_dir,) = [p.parent for p in runs.rglob("run.json")]
    (run_dir / "summary.json").unlink()  # as if it had been stopped before the end
    before = snapshot(run_dir)

    result = cli(*lr_sweep(fake_cifar_root, runs), "optim.lr=0.2", "resume=true", f"hydra.run.dir='{run_dir}'",
                 cwd=tmp_path)
    assert result.returncode == 2
    assert "Traceback" not in result.output
    errors = [line for line in result.output.splitlines() if "ERROR" in line]
    assert len(errors) == 1 and "optim.lr: 0.1 -> 0.2" in errors[0] and "Nothing was changed" in errors[0]
    assert snapshot(run_dir) == before

    # The same config resumes (a fresh start there is refused: tests/engine/test_run_dir.py).
    resumed = cli(*lr_sweep(fake_cifar_root, runs), "optim.lr=0.1", "resume=true", cwd=tmp_path)
    assert resumed.returncode == 0, resumed.output[-3000:]
    sessions = [json.loads(line) for line in (run_dir / "sessions.jsonl").read_text().splitlines()]
    assert [s["resume"] for s in sessions] == [False, True]
