"""Several methods at once (CRD+KD, RRD+KD): the sum of their terms under their own names."""

from __future__ import annotations

from torch import Tensor, nn

from distillbench.distillers.base import Batch, Distiller
from distillbench.models.outputs import ModelOutput


class Combined(Distiller):
    """Each keyword argument is a distiller; their loss terms are returned side by side."""

    def __init__(self, **parts: Distiller):
        super().__init__()
        if not parts:
            raise ValueError("Combined needs at least one distiller.")
        self.parts = nn.ModuleDict(parts)
        preacts = {part.preact for part in parts.values()}
        if len(preacts) > 1:
            raise ValueError("Combined distillers must agree on whether they read pre-activation features.")
        self.preact = preacts.pop()
        self.init_epochs = max(part.init_epochs for part in parts.values())
        self.teacher_cacheable = all(part.teacher_cacheable for part in parts.values())
        self.min_batch_size = max(part.min_batch_size for part in parts.values())

    def setup(self, student: ModelOutput, teacher: ModelOutput, train_labels: Tensor) -> None:
        for part in self.parts.values():
            part.setup(student, teacher, train_labels)

    def forward(self, student: ModelOutput, teacher: ModelOutput, batch: Batch, epoch: int) -> dict[str, Tensor]:
        terms: dict[str, Tensor] = {}
        for part in self.parts.values():
            for term, value in part(student, teacher, batch, epoch).items():
                if term in terms:
                    raise ValueError(f"Two combined distillers return a term named '{term}'.")
                terms[term] = value
        return terms
