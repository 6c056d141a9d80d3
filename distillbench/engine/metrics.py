"""Top-k accuracy and epoch meters that stay on the device until the epoch ends."""

from __future__ import annotations

import torch
from torch import Tensor


def correct_topk(logits: Tensor, labels: Tensor, ks: tuple[int, ...] = (1, 5)) -> list[Tensor]:
    """Number of samples whose label is among the top-k predictions, for each k (as tensors)."""
    k_max = min(max(ks), logits.shape[1])
    top = logits.topk(k_max, dim=1).indices
    hits = top.eq(labels.unsqueeze(1))
    return [hits[:, : min(k, k_max)].any(dim=1).sum() for k in ks]


class EpochMeter:
    """Sums of named quantities over samples, kept as device tensors.

    Reading them (``averages``) is the only host synchronisation, once per epoch, so a GPU
    epoch is never stalled by logging.
    """

    def __init__(self, device: torch.device | str):
        self.device = torch.device(device)
        self.sums: dict[str, Tensor] = {}
        self.count = 0

    def add(self, values: dict[str, Tensor], n: int) -> None:
        """Add per-sample means ``values`` of a batch of ``n`` samples."""
        self.count += n
        for name, value in values.items():
            weighted = value.detach().float() * n
            if name in self.sums:
                self.sums[name] += weighted
            else:
                self.sums[name] = weighted.clone()

    def add_counts(self, counts: dict[str, Tensor]) -> None:
        """Add raw counts (e.g. correct predictions) that are averaged over samples later."""
        for name, value in counts.items():
            value = value.detach().float()
            self.sums[name] = self.sums[name] + value if name in self.sums else value.clone()

    def state_dict(self) -> dict:
        return {"sums": dict(self.sums), "count": self.count}

    def load_state_dict(self, state: dict) -> None:
        self.sums = {name: value.to(self.device) for name, value in state["sums"].items()}
        self.count = state["count"]

    def averages(self) -> dict[str, float]:
        if self.count == 0:
            return {}
        stacked = torch.stack(list(self.sums.values())).cpu()
        return {name: float(v) / self.count for name, v in zip(self.sums, stacked, strict=True)}
