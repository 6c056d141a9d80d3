"""Names shared by every layer (data, models, distillers, engine); this module imports nothing of distillbench."""

from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor


@dataclass
class Batch:
    """One training batch: images, labels and each sample's index in the training set.

    ``view`` numbers each sample's crop-and-flip view when the loader knows it (the device
    loader); the teacher-output cache is indexed by (index, view).
    """

    images: Tensor
    labels: Tensor
    index: Tensor
    view: Tensor | None = None

    @classmethod
    def from_loader(cls, item, device, prepare_images=None) -> Batch:
        """A loader's ``(images, labels, index[, view])`` on ``device``; ``prepare_images`` sets the memory format."""
        images, labels, index, *view = item
        images = _on(images, device)
        return cls(
            prepare_images(images) if prepare_images is not None else images,
            _on(labels, device),
            _on(index, device),
            _on(view[0], device) if view else None,
        )


def _on(tensor: Tensor, device) -> Tensor:
    """``tensor`` on ``device``; no call at all when it is there already (a device loader's batches)."""
    return tensor if tensor.device == device else tensor.to(device, non_blocking=True)
