"""`tinyserve generate`: text from the paged engine, printed after its prompt."""

from __future__ import annotations

import sys

from ._parser import nonneg_float, positive_int

EPILOG = """\
A prompt the engine can never run (empty, too long for the model's context, or more
KV blocks than the pool holds) prints one line on stderr saying why, and the others
still run. Exit status 2 when any prompt was rejected, 0 when all ran."""


def register(sub) -> None:
    g = sub.add_parser("generate", help="generate text with the paged engine",
                       description="Generate text with the paged engine; prints each prompt with its continuation.",
                       epilog=EPILOG)
    g.add_argument("prompt", nargs="+", help="prompt text (several = a batch)")
    g.add_argument("--model", default=None, help="HF checkpoint folder (None: the shipped model)")
    g.add_argument("--max-tokens", type=positive_int("--max-tokens"), default=64, help="tokens to generate")
    g.add_argument("--temperature", type=nonneg_float("--temperature"), default=0.0,
                   help="sampling temperature (0 = greedy)")
    g.add_argument("--top-p", type=float, default=1.0, help="nucleus sampling: keep this probability mass")
    g.add_argument("--top-k", type=int, default=0, help="keep the k most likely tokens (0 = all)")
    g.add_argument("--seed", type=int, default=None, help="sampling seed (None: unseeded)")
    g.add_argument("--n", type=positive_int("--n"), default=1, help="samples per prompt")
    g.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"), help="where the model runs")
    g.set_defaults(func=run)


def run(args) -> int:
    from ..engine.llm import LLM
    from ..engine.sampling import SamplingParams

    params = SamplingParams(temperature=args.temperature, top_p=args.top_p, top_k=args.top_k,
                            seed=args.seed, max_tokens=args.max_tokens, n=args.n)
    llm = LLM(model=args.model, device=args.device)
    prompts = list(args.prompt)
    outs = llm.generate(prompts, params)
    rejected = 0
    for i, (prompt, out) in enumerate(zip(prompts, outs), start=1):
        if out.rejected is not None:
            rejected += 1
            print(f"tinyserve generate: prompt {i} rejected: {out.rejected}", file=sys.stderr)
            continue
        for c in out.outputs:
            print(prompt + c.text)
            if len(outs) > 1 or len(out.outputs) > 1:
                print("-" * 40)
    return 2 if rejected else 0
