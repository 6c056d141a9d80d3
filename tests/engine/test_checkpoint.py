"""Checkpoint files: atomic replacement, fallback from a corrupt file, teacher formats (RepDistiller's
pickled argparse options included), mismatches, pickled objects refused."""

from __future__ import annotations

import argparse
import json
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from torch.torch_version import TorchVersion

from distillbench.engine.checkpoint import load_training_checkpoint, save_training_checkpoint
from distillbench.models import create_model
from distillbench.weights import CheckpointError, load_file, load_model_weights

LAYOUTS = json.loads((Path(__file__).parents[1] / "models" / "data" / "repdistiller_b84f547_layouts.json").read_text())


def test_previous_checkpoint_is_kept_and_used_when_the_last_is_corrupt(tmp_path, caplog):
    save_training_checkpoint({"epoch": 1, "x": torch.ones(2)}, tmp_path)
    save_training_checkpoint({"epoch": 2, "x": torch.zeros(2)}, tmp_path)
    assert load_training_checkpoint(tmp_path)["epoch"] == 2
    last = tmp_path / "last.pt"
    last.write_bytes(last.read_bytes()[:100])  # truncated, as by a kill mid-write on a bad filesystem
    state = load_training_checkpoint(tmp_path)
    assert state["epoch"] == 1
    assert "last.pt" in caplog.text and "cannot be read" in caplog.text


def test_no_usable_checkpoint_is_a_clear_error(tmp_path):
    (tmp_path / "last.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="No usable checkpoint"):
        load_training_checkpoint(tmp_path)
    assert load_training_checkpoint(tmp_path / "empty") is None


@pytest.mark.parametrize("arch", ["resnet32x4", "wrn_40_2", "vgg13", "ResNet50", "resnet56", "resnet110"])
def test_a_repdistiller_layout_teacher_checkpoint_loads_unchanged(arch, tmp_path):
    """A file shaped as RepDistiller saves teachers: {'model': state_dict, ...}, keys of the reference."""
    reference_keys = [key for key, _ in LAYOUTS[arch]["state_dict"]]
    source = create_model(arch)
    state = source.state_dict()
    assert list(state) == reference_keys
    state = {k: torch.randn_like(v.float()).to(v.dtype) if v.is_floating_point() else v for k, v in state.items()}
    torch.save({"model": state, "epoch": 240, "accuracy": 79.42}, tmp_path / "ckpt_epoch_240.pth")
    teacher = create_model(arch)
    load_model_weights(teacher, tmp_path / "ckpt_epoch_240.pth", arch)
    for key, value in teacher.state_dict().items():
        assert torch.equal(value, state[key])


def test_dataparallel_prefix_and_bare_state_dicts_load(tmp_path):
    torch.manual_seed(1)
    state = create_model("resnet8").state_dict()
    torch.save({"module." + k: v for k, v in state.items()}, tmp_path / "dp.pth")
    torch.save(state, tmp_path / "bare.pth")
    for name in ("dp.pth", "bare.pth"):
        torch.manual_seed(2)
        model = create_model("resnet8")
        load_model_weights(model, tmp_path / name, "resnet8")
        assert all(torch.equal(v, state[k]) for k, v in model.state_dict().items()), name


def test_wrong_architecture_or_class_count_names_the_differences(tmp_path):
    torch.save({"model": create_model("resnet8", num_classes=10).state_dict()}, tmp_path / "c10.pth")
    with pytest.raises(CheckpointError) as err:
        load_model_weights(create_model("resnet8", num_classes=100), tmp_path / "c10.pth", "resnet8")
    assert "fc.weight: checkpoint (10, 64) vs model (100, 64)" in str(err.value)

    torch.save({"model": create_model("resnet20").state_dict()}, tmp_path / "r20.pth")
    with pytest.raises(CheckpointError) as err:
        load_model_weights(create_model("resnet8"), tmp_path / "r20.pth", "resnet8")
    assert "unexpected key" in str(err.value) and "layer1.1.conv1.weight" in str(err.value)


def test_checkpoints_holding_code_are_refused(tmp_path):
    torch.save({"model": create_model("resnet8").state_dict(), "callback": print}, tmp_path / "evil.pth")
    with pytest.raises(CheckpointError, match=r"pickles a Python object \(print\) besides its tensors"):
        load_model_weights(create_model("resnet8"), tmp_path / "evil.pth", "resnet8")


def repdistiller_file(path: Path, layout: str, seed: int = 3) -> dict:
    """A teacher file as RepDistiller's train_teacher.py writes <model>_last.pth: its argparse options pickled
    as 'opt', here with a numpy accuracy too. ``layout``: torch's zip format, the pre-1.6 format RepDistiller's
    own files use, or that format written under numpy 1 (numpy.core rather than numpy._core)."""
    torch.manual_seed(seed)
    model = create_model("resnet8x4")
    opt = argparse.Namespace(model="resnet8x4", dataset="cifar100", learning_rate=0.05,
                             lr_decay_epochs=[150, 180, 210], save_folder="./save/models/resnet8x4_vanilla")
    state = {"opt": opt, "model": model.state_dict(), "best_acc": np.float64(72.5),
             "optimizer": torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9).state_dict()}
    torch.save(state, path, _use_new_zipfile_serialization=layout == "zip")
    if layout == "legacy_numpy1":
        data = path.read_bytes()
        assert b"numpy._core.multiarray" in data
        path.write_bytes(data.replace(b"numpy._core.multiarray", b"numpy.core.multiarray"))
    return state


@pytest.mark.parametrize("layout", ["zip", "legacy", "legacy_numpy1"])
def test_repdistiller_last_pth_with_its_argparse_options_loads_weights_only(layout, tmp_path):
    path = tmp_path / "resnet8x4_last.pth"
    state = repdistiller_file(path, layout)
    with pytest.raises(pickle.UnpicklingError, match="argparse.Namespace"):  # what plain weights_only refuses
        torch.load(path, weights_only=True)
    loaded = load_file(path)
    assert loaded["opt"] == state["opt"] and loaded["best_acc"] == 72.5
    teacher = create_model("resnet8x4")
    load_model_weights(teacher, path, "resnet8x4")
    assert all(torch.equal(v, state["model"][k]) for k, v in teacher.state_dict().items())


class Opaque:
    """An object of a class of its own, as some training scripts pickle into their checkpoints."""


def test_any_other_pickled_object_is_refused_with_what_it_is_and_what_to_do(tmp_path):
    marker = tmp_path / "code-ran"
    torch.save({"model": create_model("resnet8").state_dict(), "opt": argparse.Namespace(lr=0.1),
                "run": ExecOnLoad(f"open({str(marker)!r}, 'w').close()")}, tmp_path / "runs_code.pth")
    torch.save({"model": create_model("resnet8").state_dict(), "extra": Opaque()}, tmp_path / "opaque.pth")
    for name, what in (("runs_code.pth", "(exec)"), ("opaque.pth", f"({__name__}.Opaque)")):
        with pytest.raises(CheckpointError) as err:
            load_model_weights(create_model("resnet8"), tmp_path / name, "resnet8")
        message = str(err.value)
        assert f"'{tmp_path / name}' is a PyTorch file that pickles a Python object {what} besides" in message
        assert "corrupt" not in message and "weights_only=False" in message and f"{name[:-4]}_weights.pth" in message
    assert not marker.exists()


class ExecOnLoad:
    """Unpickling it runs ``code``: what a weights-only load exists to refuse."""

    def __init__(self, code: str):
        self.code = code

    def __reduce__(self):
        return exec, (self.code,)


def test_with_a_torch_that_cannot_allow_plain_data_the_error_says_what_to_do(tmp_path, monkeypatch):
    path = tmp_path / "resnet8x4_last.pth"
    repdistiller_file(path, "zip")
    monkeypatch.delattr(torch.serialization, "safe_globals")
    with pytest.raises(CheckpointError, match=r"holds argparse.Namespace besides its weights .*\(torch>=2.5 can\). "
                                              r"Upgrade torch, or keep only the weights: python -c"):
        load_file(path)


def test_a_torch_without_named_aliases_explains_numpy_scalars_of_the_other_numpy(tmp_path, monkeypatch):
    path = tmp_path / "resnet8x4_last.pth"
    repdistiller_file(path, "legacy_numpy1")
    monkeypatch.setattr(torch, "__version__", TorchVersion("2.5.1"))
    with pytest.raises(CheckpointError, match=r"pickles a Python object \(numpy.core.multiarray.scalar\) .* "
                                              r"torch>=2.6 reads those written under the other numpy major version"):
        load_file(path)
