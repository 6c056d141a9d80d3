"""The benchmark's baseline: a plain training loop in the style of the papers' code (RepDistiller's ``train_distill``).

A DataLoader with PIL transforms in worker processes, float32, NCHW, the teacher's forward under
``no_grad`` every step, the loss terms summed, torch's default SGD, and the loss read back to the
host every step for the meters (``loss.item()``), as such loops do. It runs distillbench's
networks and distiller, so what differs from the trainer's paths is the loop around them.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch
import torch.nn.functional as F
from hydra.utils import instantiate
from omegaconf import DictConfig
from torch.utils.data import DataLoader

from distillbench.build import build_teacher
from distillbench.distillers.base import Batch
from distillbench.models import create_model
from distillbench.models.outputs import forward_features, probe_shapes


def reference_loop(cfg: DictConfig, device: torch.device) -> tuple[Iterator[None], int]:
    """The loop for ``cfg``'s student, teacher, distiller and dataset, as a generator yielding after every step,
    and its steps per epoch."""
    torch.manual_seed(cfg.seed)
    num_classes = cfg.dataset.num_classes
    student = create_model(cfg.student.arch, num_classes=num_classes).to(device)
    teacher = build_teacher(cfg, num_classes).to(device).eval()
    distiller = instantiate(cfg.distiller.method)
    train_set, _ = instantiate(cfg.dataset.build)
    shape = (2, *train_set[0][0].shape)
    labels = torch.as_tensor(train_set.targets, dtype=torch.long)
    distiller.setup(probe_shapes(student, shape, preact=distiller.preact),
                    probe_shapes(teacher, shape, preact=distiller.preact), labels)
    distiller.to(device)
    params = [p for p in [*student.parameters(), *distiller.parameters()] if p.requires_grad]
    optimizer = instantiate(cfg.optim)(params)
    loader = DataLoader(train_set, batch_size=cfg.dataset.batch_size, shuffle=True,
                        num_workers=cfg.dataset.num_workers)
    return _steps(student, teacher, distiller, optimizer, loader, float(cfg.distiller.ce_weight), device), len(loader)


def _steps(student, teacher, distiller, optimizer, loader, ce_weight: float, device: torch.device) -> Iterator[None]:
    student.train()
    distiller.train()
    loss_sum, correct, seen = 0.0, torch.zeros((), device=device), 0
    epoch = 0
    while True:
        epoch += 1
        for images, labels, index in loader:
            images, labels, index = images.to(device), labels.to(device), index.to(device)
            out_s = forward_features(student, images, preact=distiller.preact)
            with torch.no_grad():
                out_t = forward_features(teacher, images, preact=distiller.preact)
            terms = distiller(out_s, out_t, Batch(images, labels, index), epoch)
            loss = ce_weight * F.cross_entropy(out_s.logits, labels) + sum(terms.values())
            loss_sum += loss.item() * len(labels)
            correct += (out_s.logits.argmax(1) == labels).sum()
            seen += len(labels)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            yield
