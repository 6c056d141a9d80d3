"""Checkpoint files: atomic replacement, fallback from a corrupt file, teacher formats, mismatches."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from distillbench.engine.checkpoint import (
    CheckpointError,
    load_model_weights,
    load_training_checkpoint,
    save_training_checkpoint,
)
from distillbench.models import create_model

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
    with pytest.raises(CheckpointError, match="cannot be read"):
        load_model_weights(create_model("resnet8"), tmp_path / "evil.pth", "resnet8")
