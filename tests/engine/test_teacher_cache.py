"""The teacher-output cache: a lookup equals a live teacher forward on the same augmented image, the file
is keyed by the teacher's weights, and every method that declares itself cacheable computes the same loss
from the cached outputs as from a full forward."""

from __future__ import annotations

import copy
import logging

import numpy as np
import pytest
import torch
from hydra.utils import instantiate

from distillbench.data.device_loader import DeviceLoader, EpochPlan, recipe_of
from distillbench.data.instance import InstanceDataset
from distillbench.data.transforms import train_transform
from distillbench.distillers.base import Batch
from distillbench.engine import teacher_cache as cache_module
from distillbench.engine.teacher_cache import (
    compute_teacher_cache,
    load_or_compute_teacher_cache,
    weights_checksum,
)
from distillbench.models import create_model
from distillbench.models.outputs import ModelOutput, forward_features, probe_shapes
from tests.distillers.test_every_method_runs import METHOD_OVERRIDES
from tests.helpers import CONFIG_DIR, compose_config


def loader(n: int = 6, batch_size: int = 4, seed: int = 0) -> DeviceLoader:
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, size=(n, 32, 32, 3), dtype=np.uint8)
    dataset = InstanceDataset(images, np.arange(n) % 3, transform=train_transform(), num_classes=3)
    return DeviceLoader(dataset, batch_size, "cpu", recipe_of(dataset.transform), shuffle=True, seed=seed)


def teacher(seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    model = create_model("resnet8", num_classes=3)
    # Non-trivial BN statistics, so eval mode differs from train mode.
    for module in model.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            module.running_mean.uniform_(-0.2, 0.2)
            module.running_var.uniform_(0.5, 1.5)
    return model.eval()


def test_lookup_equals_a_live_forward_on_the_served_batches() -> None:
    train, net = loader(), teacher()
    cache = compute_teacher_cache(net, train, batch_size=97)
    assert cache.logits.shape == (6, 162, 3) and cache.pooled.shape == (6, 162, 64)
    for epoch in (1, 2):
        train.set_epoch(epoch)
        for images, _, index, view in train:
            live = forward_features(net, images)
            cached = cache.lookup(index, view)
            torch.testing.assert_close(cached.logits, live.logits, rtol=1e-5, atol=1e-5)
            torch.testing.assert_close(cached.pooled, live.pooled, rtol=1e-5, atol=1e-5)


def test_every_view_of_an_image_is_cached_not_only_the_ones_drawn() -> None:
    train, net = loader(n=2), teacher()
    cache = compute_teacher_cache(net, train, batch_size=64)
    views = torch.arange(train.num_views)
    index = torch.ones_like(views)
    images = train.make_batch(EpochPlan.of_views(index, views, train.spans))[0]
    torch.testing.assert_close(cache.lookup(index, views).logits, net(images), rtol=1e-5, atol=1e-5)
    # The views really differ: a lookup that ignored the view would fail above.
    assert cache.logits[1].std(dim=0).mean() > 1e-3


def test_the_file_is_reused_for_the_same_weights_and_rebuilt_for_others(tmp_path, monkeypatch) -> None:
    train = loader()
    first = load_or_compute_teacher_cache(teacher(0), train, tmp_path)
    files = list(tmp_path.glob("teacher_outputs_*.pt"))
    assert len(files) == 1

    def must_not_compute(*args, **kwargs):
        raise AssertionError("the cache was recomputed although its file exists")

    monkeypatch.setattr(cache_module, "compute_teacher_cache", must_not_compute)
    again = load_or_compute_teacher_cache(teacher(0), train, tmp_path)
    assert torch.equal(again.logits, first.logits)
    monkeypatch.undo()

    other = load_or_compute_teacher_cache(teacher(1), train, tmp_path)
    assert len(list(tmp_path.glob("teacher_outputs_*.pt"))) == 2
    assert not torch.allclose(other.logits, first.logits)
    assert weights_checksum(teacher(0)) != weights_checksum(teacher(1))
    # A different training set is a different file too.
    load_or_compute_teacher_cache(teacher(0), loader(seed=1), tmp_path)
    assert len(list(tmp_path.glob("teacher_outputs_*.pt"))) == 3


def test_a_corrupt_file_is_recomputed_with_a_warning(tmp_path, caplog) -> None:
    train = loader()
    good = load_or_compute_teacher_cache(teacher(), train, tmp_path)
    (path,) = tmp_path.glob("teacher_outputs_*.pt")
    path.write_bytes(path.read_bytes()[:100])
    with caplog.at_level(logging.WARNING, logger="distillbench"):
        rebuilt = load_or_compute_teacher_cache(teacher(), train, tmp_path)
    assert "could not be read" in caplog.text
    assert torch.equal(rebuilt.logits, good.logits)


CACHEABLE = sorted(
    name for name in (p.stem for p in (CONFIG_DIR / "distiller").glob("*.yaml") if p.stem != "none")
    if getattr(instantiate(compose_config([f"distiller={name}"]).distiller.method), "teacher_cacheable", False)
)


def test_the_methods_that_declare_themselves_cacheable() -> None:
    assert set(CACHEABLE) == {"cc", "ckd", "crd", "crd_kd", "dkd", "kd", "kd_dot", "pkt", "rkd", "rrd", "rrd_2025",
                              "rrd_kd", "rrd_momentum", "wcord", "wcord_kd"}


@pytest.mark.parametrize("method", CACHEABLE)
def test_cacheable_methods_read_only_logits_and_the_pooled_embedding(method: str) -> None:
    """The same loss and gradients from ``ModelOutput(logits, [pooled])`` as from the full feature list."""
    cfg = compose_config([f"distiller={method}", *METHOD_OVERRIDES.get(method, [])])
    torch.manual_seed(0)
    student, net = create_model("resnet8", num_classes=100), create_model("resnet20", num_classes=100).eval()
    distiller = instantiate(cfg.distiller.method)
    labels = torch.arange(256) % 100
    distiller.setup(probe_shapes(student, (2, 3, 32, 32)), probe_shapes(net, (2, 3, 32, 32)), labels)
    images = torch.sin(torch.arange(8 * 3 * 32 * 32, dtype=torch.float32)).reshape(8, 3, 32, 32)
    batch = Batch(images, labels[:8], torch.arange(8) * 7)
    with torch.no_grad():
        full = forward_features(net, images)
    reduced = ModelOutput(full.logits.clone(), [full.pooled.clone()])

    def loss_and_grad(teacher_out: ModelOutput) -> tuple[torch.Tensor, torch.Tensor]:
        torch.manual_seed(1)
        out = forward_features(student, images)
        logits = out.logits.detach().requires_grad_()
        pooled = out.pooled.detach().requires_grad_()
        out = ModelOutput(logits, [*out.feats[:-1], pooled])
        terms = copy.deepcopy(distiller)(out, teacher_out, batch, 1)
        total = sum(terms.values())
        grads = torch.autograd.grad(total, [logits, pooled], allow_unused=True)
        return total.detach(), torch.cat([(g if g is not None else torch.zeros_like(x)).flatten()
                                          for g, x in zip(grads, (logits, pooled), strict=True)])

    loss_full, grad_full = loss_and_grad(full)
    loss_cached, grad_cached = loss_and_grad(reduced)
    assert torch.isfinite(loss_full)
    torch.testing.assert_close(loss_cached, loss_full, rtol=0, atol=0)
    torch.testing.assert_close(grad_cached, grad_full, rtol=0, atol=0)


def test_a_cache_too_big_for_the_device_falls_back_to_the_live_teacher_or_says_so(tmp_path, monkeypatch) -> None:
    from distillbench.distillers import KD
    from distillbench.errors import ConfigError
    from tests.engine.test_trainer import make_trainer

    monkeypatch.setattr(cache_module, "device_free_bytes", lambda device: 1_000)
    train = loader(n=6)
    common = dict(teacher=teacher(), distiller=KD(weight=1.0, temperature=4.0), train_loader=train,
                  test_loader=train, epochs=1, teacher_cache_dir=tmp_path / "cache")
    net = create_model("resnet8", num_classes=3)
    trainer = make_trainer(tmp_path / "auto", model=net, teacher_cache_optional=True, **common)
    trainer.fit()
    assert trainer.teacher_cache is None and not (tmp_path / "cache").exists()
    strict = make_trainer(tmp_path / "true", model=create_model("resnet8", num_classes=3), **common)
    with pytest.raises(ConfigError, match="more than half"):
        strict.fit()
