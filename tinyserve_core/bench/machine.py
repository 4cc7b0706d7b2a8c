"""The machine a figure was measured on, as benchmarks and evaluations print it."""

from __future__ import annotations

import os
import platform

import torch


def cpu_model() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return cpu


def describe(device: str | torch.device = "cpu") -> str:
    """GPU name for a CUDA device, else the CPU model with logical CPUs and torch threads."""
    dev = torch.device(device)
    if dev.type == "cuda":
        return torch.cuda.get_device_name(dev)
    return f"{cpu_model()} ({os.cpu_count()} logical CPUs, {torch.get_num_threads()} torch threads)"
