"""Time several training loops in turn, a few steps of each per round (A B C A B C ...).

Timed one after another, loops would each meet a different machine: clocks that boost and then
throttle, caches and allocators warming up, other processes coming and going. Taking a chunk of
steps of every loop in each round spreads such drifts over all of them, and the spread of the
rounds (min, median) shows how steady the machine was.

A loop is a generator that yields after every training step. The first step of each epoch after
the first also pays for the end of the previous one (evaluation, checkpoint, new loader workers),
so timed chunks never contain one: the steps up to it are taken untimed.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field


@dataclass
class Contestant:
    """One training loop under measurement."""

    name: str
    steps: Iterator[None]
    steps_per_epoch: int
    taken: int = 0
    setup_s: float = 0.0
    step_s: list[float] = field(default_factory=list)

    def step(self) -> None:
        try:
            next(self.steps)
        except StopIteration:
            raise RuntimeError(f"The '{self.name}' loop ended after {self.taken} steps: it was given too few "
                               "epochs for the steps asked of it.") from None
        self.taken += 1

    def clear_epoch_end(self, k: int) -> None:
        """Take untimed steps until the next ``k`` steps lie inside one epoch (``k < steps_per_epoch``)."""
        spe = self.steps_per_epoch
        while True:
            next_end = -(-self.taken // spe) * spe  # the first epoch end at or after the steps taken
            if self.taken == 0 or next_end > self.taken + k - 1:
                return
            while self.taken <= next_end:
                self.step()

    def close(self) -> None:
        close = getattr(self.steps, "close", None)
        if close is not None:
            close()

    @property
    def min_s(self) -> float:
        return min(self.step_s)

    @property
    def median_s(self) -> float:
        return statistics.median(self.step_s)


def warm_up(contestant: Contestant, steps: int, sync: Callable[[], None]) -> None:
    """The first steps, untimed for the figures; the first one's time (setup included) is kept as ``setup_s``."""
    start = time.perf_counter()
    contestant.step()
    sync()
    contestant.setup_s = time.perf_counter() - start
    for _ in range(steps - 1):
        contestant.step()
    sync()


def time_chunk(contestant: Contestant, k: int, sync: Callable[[], None]) -> float:
    """Seconds per step over ``k`` steps inside one epoch, the device drained before and after."""
    contestant.clear_epoch_end(k)
    sync()
    start = time.perf_counter()
    for _ in range(k):
        contestant.step()
    sync()
    seconds = (time.perf_counter() - start) / k
    contestant.step_s.append(seconds)
    return seconds


def run_rounds(contestants: list[Contestant], rounds: int, k: int, sync: Callable[[], None]) -> list[str]:
    """``rounds`` rounds of ``k`` timed steps of every contestant in turn; returns the order they were timed in."""
    order = []
    for _ in range(rounds):
        for contestant in contestants:
            time_chunk(contestant, k, sync)
            order.append(contestant.name)
    return order
