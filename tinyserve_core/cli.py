"""`tinyserve`: generate, simulate, info, train-lm, train-scene, bench …, eval ….

Bad flags or config values print one line naming the field and exit 2; no traceback.
Subcommands import their modules lazily so `tinyserve info` stays fast and one
subsystem's missing optional piece never breaks the others."""

from __future__ import annotations

import argparse
import dataclasses
import importlib
import sys

from .errors import TinyServeError


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # one line, exit 2
        self.exit(2, f"{self.prog}: error: {message}\n")


# (subcommand path, module, help) for commands that live in their own modules and
# expose add_parser(subparsers) + run(args).
_PLUGINS = {
    "train-lm": ("tinyserve_core.model.train.train_lm", "train the shipped default model"),
    "train-scene": ("tinyserve_core.scene.cli", "train the semantic NeRF of a scene"),
    "workload": ("tinyserve_core.engine.workloads", "write a workload as a JSONL replay file"),
    "check-trace": ("tinyserve_core.observe.trace", "validate a Chrome Trace JSON file"),
}
_BENCH = {
    "engine": ("tinyserve_core.bench.engine", "our engine vs Hugging Face generate()"),
    "kernels": ("tinyserve_core.bench.kernels", "CUDA kernels vs their floor and peers"),
    "gui": ("tinyserve_core.bench.gui", "GUI frame times and event-loop stalls"),
    "decode": ("tinyserve_core.bench.decode", "decode step time at long context: quest vs dense"),
    "kv": ("tinyserve_core.kv.bench", "block manager op costs, snapshot, memory waste"),
    "scene-gui": ("tinyserve_core.bench.scene_gui", "Scene tab: orbit fps, refine, query and plan latency"),
}
_EVAL = {
    "lm": ("tinyserve_core.model.train.evaluate", "held-out perplexity, pass-key retrieval, samples"),
    "selection": ("tinyserve_core.eval.selection", "accuracy of page-selection policies"),
    "scene": ("tinyserve_core.eval.scene", "scene lab quality and latency"),
}


def _add_plugin(sub, module):
    try:
        mod = importlib.import_module(module)
    except ModuleNotFoundError as e:
        # A third-party dependency this machine lacks (the GPU hosts have no PySide6 or
        # OMPL) leaves that one subcommand out; a missing module of ours is a bug.
        if e.name and not e.name.startswith(("tinyserve_core", "app")):
            return
        raise
    p = mod.add_parser(sub)
    if p is not None and p.get_default("func") is None:
        p.set_defaults(func=mod.run)


def _add_group(sub, name, help_text, table):
    p = sub.add_parser(name, help=help_text)
    gsub = p.add_subparsers(dest=f"{name}_what", metavar="WHAT", parser_class=_Parser)
    gsub.required = True
    for module, _help in table.values():
        _add_plugin(gsub, module)
    return p


def build_parser() -> argparse.ArgumentParser:
    from . import __version__
    parser = _Parser(prog="tinyserve", description="TinyServe: watch and measure LLM serving memory.")
    parser.add_argument("--version", action="version", version=f"tinyserve {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    sub.required = True

    g = sub.add_parser("generate", help="generate text with the paged engine")
    g.add_argument("prompt", nargs="+", help="prompt text (several = a batch)")
    g.add_argument("--model", default=None, help="HF checkpoint folder (default: the shipped model)")
    g.add_argument("--max-tokens", type=_positive_int("--max-tokens"), default=64)
    g.add_argument("--temperature", type=_nonneg_float("--temperature"), default=0.0)
    g.add_argument("--top-p", type=float, default=1.0)
    g.add_argument("--top-k", type=int, default=0)
    g.add_argument("--seed", type=int, default=None)
    g.add_argument("--n", type=_positive_int("--n"), default=1)
    g.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    g.set_defaults(func=_run_generate)

    s = sub.add_parser("simulate", help="run the engine on a workload and summarise")
    from .engine.simulate import add_simulate_args
    add_simulate_args(s)

    i = sub.add_parser("info", help="kernel backend, GPU, build status, default model")
    i.set_defaults(func=_run_info)

    for module, _help in _PLUGINS.values():
        _add_plugin(sub, module)
    _add_group(sub, "bench", "benchmarks (print a table, write JSON)", _BENCH)
    _add_group(sub, "eval", "quality evaluations", _EVAL)
    return parser


def _positive_int(flag):
    def parse(v):
        try:
            x = int(v)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{flag} must be a positive integer, got {v!r}")
        if x < 1:
            raise argparse.ArgumentTypeError(f"{flag} must be a positive integer, got {v!r}")
        return x
    return parse


def _nonneg_float(flag):
    def parse(v):
        try:
            x = float(v)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{flag} must be a number >= 0, got {v!r}")
        if not x >= 0:
            raise argparse.ArgumentTypeError(f"{flag} must be a number >= 0, got {v!r}")
        return x
    return parse


def _run_generate(args) -> int:
    from .engine.llm import LLM
    from .engine.sampling import SamplingParams

    params = SamplingParams(temperature=args.temperature, top_p=args.top_p, top_k=args.top_k,
                            seed=args.seed, max_tokens=args.max_tokens, n=args.n)
    llm = LLM(model=args.model, device=args.device)
    prompts = list(args.prompt)
    outs = llm.generate(prompts, params)
    for prompt, out in zip(prompts, outs):
        for c in out.outputs:
            print(prompt + c.text)
            if len(outs) > 1 or len(out.outputs) > 1:
                print("-" * 40)
    return 0


def _run_info(args) -> int:
    import torch

    from .kernels import backend_info
    from .model.loader import default_model_dir

    info = backend_info()
    print(f"tinyserve       {__import__('tinyserve_core').__version__}")
    print(f"torch           {torch.__version__}")
    for k, v in info.items():
        print(f"{k:<15} {v}")
    print(f"default model   {default_model_dir()}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except TinyServeError as e:
        print(f"tinyserve {args.command}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
