"""The teacher-output cache in bf16/fp16: rounded as stored, its own file, half the size, part of the run's
identity; its size is logged before it is built, and a disk without room stops the run before any work."""

from __future__ import annotations

import importlib.util
import logging
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

from distillbench.distillers import KD
from distillbench.engine import teacher_cache as cache_module
from distillbench.engine.teacher_cache import (
    TeacherCacheDoesNotFit,
    cache_dtype,
    compute_teacher_cache,
    disk_free_bytes,
    load_or_compute_teacher_cache,
    teacher_cache_for,
)
from distillbench.errors import ConfigError
from distillbench.identity import counts_for_identity, identity_fields, identity_hash
from tests.engine.test_teacher_cache import loader, teacher
from tests.helpers import compose_config

N = 2  # images: 2 x 162 views


@pytest.fixture(scope="module")
def exact_cache():
    return compute_teacher_cache(teacher(), loader(n=N), batch_size=97)


@pytest.mark.parametrize(("name", "unit_roundoff"), [("bf16", 2.0**-8), ("fp16", 2.0**-11)])
def test_a_lossy_cache_holds_the_live_outputs_rounded_to_its_dtype(exact_cache, name: str,
                                                                   unit_roundoff: float) -> None:
    exact = exact_cache
    lossy = compute_teacher_cache(teacher(), loader(n=N), batch_size=97, dtype=cache_dtype(name))
    assert lossy.logits.dtype == cache_dtype(name) and lossy.nbytes * 2 == exact.nbytes
    index, view = torch.tensor([0, 1, 1]), torch.tensor([5, 0, 161])
    read, want = lossy.lookup(index, view), exact.lookup(index, view)
    assert read.logits.dtype == torch.float32  # the distillers see float32 either way
    torch.testing.assert_close(read.logits, want.logits.to(cache_dtype(name)).float(), rtol=0, atol=0)
    error = ((read.pooled - want.pooled).abs() / want.pooled.abs().clamp_min(1e-3)).max()
    assert 0 < error <= unit_roundoff


def test_each_dtype_has_its_own_file(tmp_path) -> None:
    train, net = loader(n=N), teacher()
    load_or_compute_teacher_cache(net, train, tmp_path)
    load_or_compute_teacher_cache(net, train, tmp_path, dtype=torch.bfloat16)
    files = sorted(tmp_path.glob("teacher_outputs_*.pt"))
    assert len(files) == 2 and files[0].stat().st_size != files[1].stat().st_size


def test_the_size_is_logged_before_the_cache_is_built(tmp_path, caplog) -> None:
    with caplog.at_level(logging.INFO, logger="distillbench"):
        load_or_compute_teacher_cache(teacher(), loader(n=N), tmp_path, dtype=torch.bfloat16)
    sizes = [r.getMessage() for r in caplog.records if r.getMessage().startswith("teacher-output cache:")]
    saved = [i for i, r in enumerate(caplog.records) if r.getMessage().startswith("teacher outputs saved")]
    # 2 images x 162 views x (3 logits + 64 pooled) x 2 bytes = 43,416 bytes.
    assert sizes == [f"teacher-output cache: 2 images x 162 views in bfloat16 = 0.00 GB, to be computed and saved to "
                     f"{next(tmp_path.glob('teacher_outputs_*.pt'))}"]
    assert caplog.records.index(next(r for r in caplog.records if r.getMessage() == sizes[0])) < saved[0]
    assert cache_module.cache_nbytes(teacher(), loader(n=N), torch.bfloat16) == 43_416


def test_a_disk_without_room_stops_before_any_teacher_forward(tmp_path, monkeypatch, caplog) -> None:
    monkeypatch.setattr(cache_module, "disk_free_bytes", lambda folder: 10_000)

    def must_not_compute(*args, **kwargs):
        raise AssertionError("the cache was computed although the disk has no room for it")

    monkeypatch.setattr(cache_module, "compute_teacher_cache", must_not_compute)
    kd, folder = KD(weight=1.0, temperature=4.0), tmp_path / "cache"
    with pytest.raises(TeacherCacheDoesNotFit) as err:
        teacher_cache_for(teacher(), kd, loader(), folder)
    message = str(err.value)
    for what in ("needs 0.00 GB on disk in", str(folder), "0.00 GB is free", "paths.cache=",
                 "trainer.teacher_cache_dtype=bf16", "trainer.teacher_cache=false"):
        assert what in message, what
    assert "\n" not in message and not folder.exists()
    # bf16 already: the advice is another disk or the live teacher.
    with pytest.raises(TeacherCacheDoesNotFit) as err:
        teacher_cache_for(teacher(), kd, loader(), folder, dtype="bf16")
    assert "teacher_cache_dtype" not in str(err.value)
    # trainer.teacher_cache=auto: the live teacher, with a warning.
    with caplog.at_level(logging.WARNING, logger="distillbench"):
        assert teacher_cache_for(teacher(), kd, loader(), folder, optional=True) is None
    assert "The teacher runs live instead" in caplog.text


def test_the_free_space_is_that_of_the_disk_the_folder_will_be_on(tmp_path) -> None:
    import shutil

    assert disk_free_bytes(tmp_path / "not" / "yet") == pytest.approx(shutil.disk_usage(tmp_path).free, rel=0.01)


def test_an_unknown_dtype_names_the_key_and_the_choices() -> None:
    with pytest.raises(ConfigError, match="trainer.teacher_cache_dtype must be one of float32, bf16, fp16, got "
                                          "'float64'"):
        cache_dtype("float64")
    assert cache_dtype("float32") is torch.float32 and cache_dtype(torch.float16) is torch.float16


def test_a_lossy_cache_dtype_changes_the_run_identity() -> None:
    def fields(*overrides: str) -> dict:
        cfg = compose_config(["experiment=crd_resnet32x4_8x4", "trainer=fast", *overrides], run_dir=Path("unused"))
        return identity_fields(OmegaConf.to_container(cfg, resolve=True), {})

    assert compose_config([]).trainer.teacher_cache_dtype == "float32"  # the default stays exact
    assert counts_for_identity("trainer.teacher_cache_dtype") and not counts_for_identity("trainer.teacher_cache")
    exact, lossy = fields(), fields("trainer.teacher_cache_dtype=bf16")
    assert lossy["trainer.teacher_cache_dtype"] == "bf16" and identity_hash(lossy) != identity_hash(exact)
    # The exact cache itself stays out of it: it returns what the live teacher computes.
    assert identity_hash(fields("trainer.teacher_cache=false")) == identity_hash(exact)


def test_the_precision_script_measures_the_rounding_on_a_real_forward(tmp_path) -> None:
    script_file = Path(__file__).resolve().parents[2] / "scripts" / "teacher_cache_precision.py"
    spec = importlib.util.spec_from_file_location("precision", script_file)
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    result = script.main(["--teacher", "resnet8", "--student", "resnet8", "--images", "64",
                          "--json", str(tmp_path / "precision.json")])
    rows = result["dtypes"]
    assert rows["float32"]["logits"]["max_abs"] == 0 and rows["float32"]["kd_loss_abs_diff"] == 0
    for name, roundoff in (("bf16", 2.0**-8), ("fp16", 2.0**-11)):
        assert 0 < rows[name]["logits"]["max_rel"] <= roundoff and 0 < rows[name]["pooled"]["max_rel"] <= roundoff
        assert rows[name]["kd_loss_rel_diff"] < roundoff and 0.9 <= rows[name]["top1_agreement"] <= 1
    assert rows["fp16"]["logits"]["max_abs"] < rows["bf16"]["logits"]["max_abs"]
    assert (tmp_path / "precision.json").is_file()
