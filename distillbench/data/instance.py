"""An in-memory image dataset that also returns each sample's index."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset

Transform = Callable[[Image.Image], Any]


class InstanceDataset(Dataset):
    """Images held as one uint8 array, served as ``(image, label, index)``.

    The index is the sample's position in this dataset. Distillers that keep a memory bank
    of per-sample embeddings (CRD and its successors) key on it, so every dataset in the
    benchmark returns it, whether or not the distiller uses it.
    """

    def __init__(
        self,
        data: np.ndarray,
        targets: Sequence[int] | np.ndarray,
        transform: Transform | None = None,
        classes: Sequence[str] | None = None,
        num_classes: int | None = None,
    ) -> None:
        if data.dtype != np.uint8 or data.ndim != 4 or data.shape[-1] != 3:
            raise ValueError(
                f"data must be a uint8 array of shape (N, H, W, 3), got {data.dtype} {data.shape}"
            )
        targets = np.asarray(targets, dtype=np.int64)
        if targets.shape != (len(data),):
            raise ValueError(f"expected {len(data)} targets, got an array of shape {targets.shape}")
        if num_classes is None:
            num_classes = len(classes) if classes is not None else int(targets.max(initial=-1)) + 1
        if len(targets) and (targets.min() < 0 or targets.max() >= num_classes):
            raise ValueError(
                f"targets must lie in [0, {num_classes}), got [{targets.min()}, {targets.max()}]"
            )
        self.data = data
        self.targets = targets
        self.transform = transform
        self.classes = list(classes) if classes is not None else None
        self.num_classes = num_classes

    def __len__(self) -> int:
        return len(self.data)

    def __getitem__(self, index: int) -> tuple[Any, int, int]:
        image: Any = Image.fromarray(self.data[index])
        if self.transform is not None:
            image = self.transform(image)
        return image, int(self.targets[index]), index

    def labels_tensor(self) -> torch.Tensor:
        """All labels as one LongTensor, e.g. for samplers that draw negatives by class."""
        return torch.from_numpy(self.targets.copy())
