"""Top-k accuracy and epoch meters that stay on the device until the epoch ends."""

from __future__ import annotations

import torch
from torch import Tensor

from distillbench.runtime import distributed


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

    def _global(self) -> tuple[dict[str, Tensor], int]:
        """Sums and count over all ranks (collective on several ranks: every rank calls it)."""
        if not distributed.is_distributed() or not self.sums:
            return dict(self.sums), self.count
        stacked = torch.stack([*self.sums.values(), torch.tensor(float(self.count), device=self.device)])
        total = distributed.all_reduce_sum(stacked)
        return dict(zip(self.sums, total[:-1], strict=True)), int(total[-1])

    def state_dict(self) -> dict:
        """The sums of all ranks: restore them on one rank only (``load_state_dict``)."""
        sums, count = self._global()
        return {"sums": sums, "count": count}

    def load_state_dict(self, state: dict) -> None:
        self.sums = {name: value.to(self.device) for name, value in state["sums"].items()}
        self.count = state["count"]

    def averages(self) -> dict[str, float]:
        """Means over every sample of every rank."""
        sums, count = self._global()
        if count == 0:
            return {}
        stacked = torch.stack(list(sums.values())).cpu()
        return {name: float(v) / count for name, v in zip(sums, stacked, strict=True)}
