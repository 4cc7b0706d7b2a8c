"""`tinyserve info`: kernel backend, GPU, build status and the default model."""

from __future__ import annotations


def register(sub) -> None:
    i = sub.add_parser("info", help="kernel backend, GPU, build status, default model",
                       description="Print the kernel backend, GPU, build status and default model.")
    i.set_defaults(func=run)


def run(args) -> int:
    import torch

    from .. import __version__
    from ..kernels import backend_info
    from ..model.loader import default_model_dir

    info = backend_info()
    print(f"tinyserve       {__version__}")
    print(f"torch           {torch.__version__}")
    for k, v in info.items():
        print(f"{k:<15} {v}")
    print(f"default model   {default_model_dir()}")
    return 0
