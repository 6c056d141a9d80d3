"""What a benchmark ran on: CPU model, accelerator, library versions and the code's git revision."""

from __future__ import annotations

import os
import platform
from pathlib import Path

import torch

from distillbench.rundir import environment

# environment()'s keys worth keeping next to benchmark figures (the host name is left out of committed files).
KEPT = ("python", "torch", "cuda", "cudnn", "torchvision", "git_commit", "git_dirty", "platform")


def cpu_model() -> str:
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def machine_info(device: torch.device) -> dict:
    env = environment()
    gpu = torch.cuda.get_device_name(device) if device.type == "cuda" else None
    return {"device": gpu or "cpu", "cpu": cpu_model(), "cpu_cores": os.cpu_count(),
            **{key: env.get(key) for key in KEPT}}


def describe(info: dict) -> str:
    """One line: device, CPU, torch, revision."""
    revision = (info["git_commit"] or "no git")[:10] + (" (uncommitted changes)" if info["git_dirty"] else "")
    return (f"{info['device']}; CPU {info['cpu']} ({info['cpu_cores']} cores); torch {info['torch']}; "
            f"python {info['python']}; distillbench {revision}")
