"""The speed switches: how config values resolve, and that each one trains to the same result."""

from __future__ import annotations

import pytest
import torch
from hydra.utils import instantiate

from distillbench.build import teacher_cache_dir
from distillbench.distillers import KD
from distillbench.engine.speed import SpeedOptions, use_fused_optimizer
from distillbench.errors import ConfigError
from distillbench.models import create_model
from tests.engine.test_trainer import make_trainer
from tests.helpers import compose_config

CPU, GPU = torch.device("cpu"), torch.device("cuda")


def test_auto_is_the_fast_setting_on_a_gpu_and_the_reference_one_on_the_cpu() -> None:
    assert SpeedOptions.resolve(GPU, "auto", "auto") == SpeedOptions("bf16", True)
    assert SpeedOptions.resolve(CPU, "auto", "auto") == SpeedOptions("float32", False)
    assert use_fused_optimizer("auto", GPU) is True and use_fused_optimizer("auto", CPU) is None
    assert use_fused_optimizer(False, GPU) is False


@pytest.mark.parametrize(("compile_setting", "mode"), [(False, None), ("none", None), (True, "default"),
                                                        ("reduce-overhead", "reduce-overhead")])
def test_compile_settings(compile_setting, mode) -> None:
    assert SpeedOptions.resolve(CPU, compile=compile_setting).compile_mode == mode


@pytest.mark.parametrize("kwargs", [{"precision": "fp16"}, {"channels_last": "yes"}, {"compile": "fastest"}])
def test_bad_values_are_config_errors(kwargs) -> None:
    with pytest.raises(ConfigError, match="trainer"):
        SpeedOptions.resolve(CPU, **kwargs)
    with pytest.raises(ConfigError, match="fused_optimizer"):
        use_fused_optimizer("sometimes", CPU)


def run_losses(tmp_path, speed: SpeedOptions) -> tuple[list[float], torch.nn.Module]:
    losses: list[torch.Tensor] = []
    torch.manual_seed(0)
    teacher = create_model("resnet8", num_classes=4)
    trainer = make_trainer(tmp_path, teacher=teacher, distiller=KD(weight=0.9, temperature=4.0), epochs=1,
                           speed=speed, on_step=lambda step, terms: losses.append(terms["kd"]))
    trainer.fit()
    return [float(x) for x in losses], trainer


def test_compiled_networks_train_like_eager_ones(tmp_path) -> None:
    eager, _ = run_losses(tmp_path / "eager", SpeedOptions())
    compiled, trainer = run_losses(tmp_path / "compiled",
                                   SpeedOptions(compile_mode="default", compile_backend="eager"))
    assert trainer.student_fn is not trainer.model  # it really went through torch.compile
    assert len(compiled) == len(eager) == 3
    torch.testing.assert_close(torch.tensor(compiled), torch.tensor(eager), rtol=1e-5, atol=1e-6)
    # Checkpoints keep the plain module's keys.
    saved = torch.load(tmp_path / "compiled" / "model.pth", weights_only=True)["model"]
    assert not any(key.startswith("_orig_mod") for key in saved)


def test_bf16_autocast_keeps_weights_and_loss_terms_float32(tmp_path) -> None:
    losses, trainer = run_losses(tmp_path, SpeedOptions(precision="bf16", channels_last=True))
    assert all(p.dtype == torch.float32 for p in trainer.model.parameters())
    assert trainer.model.conv1.weight.is_contiguous(memory_format=torch.channels_last)
    assert all(torch.isfinite(torch.tensor(losses)))


def test_teacher_cache_settings(tmp_path) -> None:
    assert compose_config([]).trainer.teacher_cache is False  # the reference: the live teacher
    cfg = compose_config([f"paths.cache={tmp_path}", "trainer.teacher_cache=auto"])
    device_loader = type("DeviceLike", (), {"num_views": 162})()
    data_loader = object()
    kd, fitnet = KD(weight=1.0, temperature=4.0), compose_config(["distiller=fitnet"])
    assert teacher_cache_dir(cfg, kd, device_loader, GPU) == tmp_path
    assert teacher_cache_dir(cfg, kd, device_loader, CPU) is None
    assert teacher_cache_dir(cfg, kd, data_loader, GPU) is None
    cfg.trainer.teacher_cache = True
    assert teacher_cache_dir(cfg, kd, device_loader, CPU) == tmp_path
    with pytest.raises(ConfigError, match="dataset.loader=device"):
        teacher_cache_dir(cfg, kd, data_loader, CPU)
    with pytest.raises(ConfigError, match="logits and pooled embedding"):
        teacher_cache_dir(cfg, instantiate(fitnet.distiller.method), device_loader, CPU)
    cfg.trainer.teacher_cache = False
    assert teacher_cache_dir(cfg, kd, device_loader, GPU) is None
