"""Where nvcc is and which -gencode a GPU gets: shared by the serving kernels' extension
(kernels/_backend.py) and the scene's frame library (scene/native.py), which may not
import each other."""

from __future__ import annotations

import shutil
from pathlib import Path


def nvcc_path() -> str | None:
    """torch's CUDA_HOME/bin/nvcc when it is there, else nvcc on PATH, else None."""
    from torch.utils.cpp_extension import CUDA_HOME

    if CUDA_HOME and (Path(CUDA_HOME) / "bin" / "nvcc").exists():
        return str(Path(CUDA_HOME) / "bin" / "nvcc")
    return shutil.which("nvcc")


def arch_flag(capability: tuple[int, int]) -> str:
    """-gencode for a compute capability; Hopper gets its arch-specific sm_90a target."""
    major, minor = capability
    suffix = "a" if (major, minor) == (9, 0) else ""
    return f"-gencode=arch=compute_{major}{minor}{suffix},code=sm_{major}{minor}{suffix}"
