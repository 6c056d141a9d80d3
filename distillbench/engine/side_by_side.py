"""Several runs in one process, their steps taken in turn: the seeds of one cell side by side on one GPU.

At CIFAR's batch of 64 a step is bound by kernel launches and latency, not arithmetic
(``performance.md`` §4), so one run leaves most of a large GPU idle. Interleaving N runs' steps,
each run on its own CUDA stream, lets their kernels overlap, and the runs share one copy of the
teacher-output cache instead of holding N. Each run keeps its own data order, RNG streams,
optimiser, memory banks, checkpoints and logs, so its results are those of the same run trained
alone (tested on the CPU). Two-stage methods run their init stages one run after another.

A failing run (a NaN, a bad checkpoint) does not stop the others; the first failure is raised once
every other run has finished. A stop signal stops every run at its next step, each with a checkpoint.
"""

from __future__ import annotations

import contextlib
import logging

import torch

from distillbench.engine.preemption import StopRequests
from distillbench.engine.teacher_cache import shared_teacher_caches
from distillbench.engine.trainer import Trainer

log = logging.getLogger("distillbench")


def fit_side_by_side(trainers: list[Trainer]) -> list[dict]:
    """Train every run to its end, one step of each in turn; returns their summaries in order."""
    stop = StopRequests()
    for trainer in trainers:
        trainer.stop = stop
    streams = [torch.cuda.Stream(t.device) if t.device.type == "cuda" else None for t in trainers]
    results: dict[int, dict | Exception] = {}
    with stop, shared_teacher_caches():
        pending = {i: trainer.steps() for i, trainer in enumerate(trainers)}
        first_round = True
        while pending:
            for i, steps in list(pending.items()):
                # The first round (setup, the cache, the first step) runs on the default stream, which
                # the side streams wait for; later rounds on each run's own stream.
                stream = None if first_round else streams[i]
                try:
                    with torch.cuda.stream(stream) if stream is not None else contextlib.nullcontext():
                        next(steps)
                except StopIteration as done:
                    results[i] = done.value
                    del pending[i]
                except Exception as err:  # noqa: BLE001 - reported after the other runs finish
                    log.error("run %s stopped: %s", trainers[i].run_dir, err)
                    results[i] = err
                    del pending[i]
            first_round = False
    failures = [r for r in results.values() if isinstance(r, Exception)]
    if failures:
        raise failures[0]
    return [results[i] for i in range(len(trainers))]
