"""Host operations per training step, counted with torch.profiler.

At CIFAR's batch of 64 a step is bound by how many operations the host issues, not by arithmetic, so
the count says where a path's time goes. What is counted:

* eager code: every aten op the step dispatches, at the outermost level (an op that another op calls is
  part of it: ``aten::conv2d`` is one op, not four);
* compiled code (inside a compiled graph's call): each generated kernel (Triton on CUDA, C++ on the
  CPU) and each extern call (an aten op the graph calls, e.g. a convolution or a matmul); the graph's
  allocations and views are bookkeeping, not operations;
* each CUDA-graph replay as one operation;
* on CUDA also ``device_launches``: the kernel launches, copies and fills the host asked the driver for.

On the CPU, Inductor's C++ kernels are visible to the profiler only when compiled with
``torch._inductor.config.cpp.enable_kernel_profile`` (``mark_cpu_kernels`` sets it).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass

import torch
from torch.autograd import DeviceType
from torch.profiler import ProfilerActivity, profile

GRAPH_CALL = "## Call CompiledFxGraph"
# Aten ops a compiled graph calls to allocate or re-view buffers: bookkeeping, not operations.
BOOKKEEPING = frozenset({"aten::empty", "aten::empty_strided", "aten::as_strided", "aten::view", "aten::resize_",
                         "aten::_reshape_alias", "aten::alias", "aten::detach", "aten::lift_fresh"})
GRAPH_REPLAY = "cudaGraphLaunch"
DEVICE_LAUNCHES = frozenset({"cudaLaunchKernel", "cudaLaunchKernelExC", "cuLaunchKernel", "cuLaunchKernelEx",
                             "cudaGraphLaunch", "cudaMemcpyAsync", "cudaMemsetAsync"})


@dataclass
class OpCounts:
    """Per step, averaged over the profiled steps."""

    aten_ops: float = 0.0
    generated_kernels: float = 0.0
    extern_calls: float = 0.0
    graph_replays: float = 0.0
    device_launches: float | None = None

    @property
    def host_ops(self) -> float:
        return self.aten_ops + self.generated_kernels + self.extern_calls + self.graph_replays

    def as_dict(self) -> dict:
        return {**asdict(self), "host_ops": self.host_ops}


def mark_cpu_kernels() -> None:
    """Make Inductor's C++ kernels record themselves to the profiler (before anything is compiled)."""
    import torch._inductor.config as inductor_config

    inductor_config.cpp.enable_kernel_profile = True


def count_events(events) -> OpCounts:
    """Classify a profile's host events (``prof.events()``) as described in the module docstring."""
    counts = OpCounts()

    def visit(event, in_graph: bool) -> None:
        name = event.name
        if name.startswith(GRAPH_CALL):
            for child in event.cpu_children:
                visit(child, in_graph=True)
        elif in_graph:
            if name.startswith("aten::"):
                counts.extern_calls += name not in BOOKKEEPING
            elif not name.startswith("cu"):  # cudaLaunchKernel & co. are the driver calls of the kernels counted
                counts.generated_kernels += 1
        elif name.startswith("aten::"):
            counts.aten_ops += 1
        elif name == GRAPH_REPLAY:
            counts.graph_replays += 1
        else:  # record_function ranges: autograd nodes, optimizer steps, compiled regions
            for child in event.cpu_children:
                visit(child, in_graph=False)

    host = [e for e in events if e.device_type == DeviceType.CPU]
    for event in host:
        if event.cpu_parent is None:
            visit(event, in_graph=False)
    if any(e.name.startswith("cuda") for e in host):
        counts.device_launches = float(sum(e.name in DEVICE_LAUNCHES for e in host))
    return counts


def count_step_ops(step: Callable[[], None], steps: int, sync: Callable[[], None], cuda: bool) -> OpCounts:
    """Profile ``steps`` calls of ``step`` and return the counts per call."""
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])
    sync()
    with profile(activities=activities) as prof:
        for _ in range(steps):
            step()
        sync()
    total = count_events(prof.events())
    per_step = {k: (v / steps if v is not None else None) for k, v in asdict(total).items()}
    return OpCounts(**per_step)


def no_sync() -> None:
    """The CPU has nothing in flight."""


def cuda_sync() -> None:
    torch.cuda.synchronize()
