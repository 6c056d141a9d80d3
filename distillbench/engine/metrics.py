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
        self._sums: dict[str, Tensor] = {}
        # Sums added as one vector per step (``add_block``): one device op per step, however many terms.
        self._block_names: tuple[str, ...] | None = None
        self._block: Tensor | None = None
        self.count = 0

    @property
    def sums(self) -> dict[str, Tensor]:
        block = dict(zip(self._block_names, self._block.unbind(), strict=True)) if self._block is not None else {}
        return {**self._sums, **block}

    def add_block(self, names: tuple[str, ...], sums: Tensor, n: int) -> None:
        """Add a step's contributions ``sums`` (one entry per name, already multiplied by the batch's ``n``
        samples, or raw counts) for a batch of ``n`` samples."""
        self.count += n
        if self._block is None:
            self._block_names = names
            self._block = sums.detach().float().clone()
            for i, name in enumerate(names):  # sums restored from a checkpoint continue in the block
                if name in self._sums:
                    self._block[i] += self._sums.pop(name)
        elif names == self._block_names:
            self._block += sums.detach().float()
        else:
            raise ValueError(f"add_block: the names {names} differ from this epoch's {self._block_names}.")

    def add(self, values: dict[str, Tensor], n: int) -> None:
        """Add per-sample means ``values`` of a batch of ``n`` samples."""
        self.count += n
        for name, value in values.items():
            weighted = value.detach().float() * n
            if name in self._sums:
                self._sums[name] += weighted
            else:
                self._sums[name] = weighted.clone()

    def add_counts(self, counts: dict[str, Tensor]) -> None:
        """Add raw counts (e.g. correct predictions) that are averaged over samples later."""
        for name, value in counts.items():
            value = value.detach().float()
            self._sums[name] = self._sums[name] + value if name in self._sums else value.clone()

    def _global(self) -> tuple[dict[str, Tensor], int]:
        """Sums and count over all ranks (collective on several ranks: every rank calls it)."""
        sums = self.sums
        if not distributed.is_distributed() or not sums:
            return sums, self.count
        stacked = torch.stack([*sums.values(), torch.tensor(float(self.count), device=self.device)])
        total = distributed.all_reduce_sum(stacked)
        return dict(zip(sums, total[:-1], strict=True)), int(total[-1])

    def state_dict(self) -> dict:
        """The sums of all ranks: restore them on one rank only (``load_state_dict``)."""
        sums, count = self._global()
        return {"sums": sums, "count": count}

    def load_state_dict(self, state: dict) -> None:
        self._sums = {name: value.to(self.device) for name, value in state["sums"].items()}
        self._block_names, self._block = None, None
        self.count = state["count"]

    def averages(self) -> dict[str, float]:
        """Means over every sample of every rank."""
        sums, count = self._global()
        if count == 0:
            return {}
        stacked = torch.stack(list(sums.values())).cpu()
        return {name: float(v) / count for name, v in zip(sums, stacked, strict=True)}
