"""`tinyserve workload`: write a workload as a replay file (JSONL) and describe it."""

from __future__ import annotations

import argparse
import dataclasses
import json
from pathlib import Path
from typing import Any

from ._parser import optional, with_default


def register(sub) -> None:
    optional(lambda: _add_parser(sub))


def _add_parser(sub) -> None:
    from ..engine.config import HELP
    from ..engine.workloads import WorkloadSpec

    p = sub.add_parser("workload", help="generate a workload and write it as a JSONL replay file",
                       description=__doc__)
    p.add_argument("--config", default=None, help="JSON file of `simulate` settings; the workload keys are read")
    p.add_argument("--model", default=None,
                   help="model folder whose tokenizer measures lengths (None: the shipped model, "
                        "else lengths count words)")
    p.add_argument("--out", required=True, help="JSONL file to write")
    spec = WorkloadSpec()
    for f in dataclasses.fields(WorkloadSpec):
        p.add_argument("--" + f.name.replace("_", "-"), dest=f.name, default=argparse.SUPPRESS,
                       metavar=f.name.upper(), help=with_default(HELP.get(f.name, f.name.replace("_", " ")),
                                                                 getattr(spec, f.name)))
    p.set_defaults(func=run)


def _parse_flag(text: str) -> Any:
    """A flag's text as the JSON value it spells (numbers, null, true), else a string."""
    if text.lower() in ("none", "null"):
        return None
    try:
        return json.loads(text)
    except ValueError:   # JSONDecodeError, and ints too long to convert
        return text


def run(args: Any) -> int:
    import numpy as np

    from ..engine.config import EngineConfig, read_settings
    from ..engine.workloads import WorkloadSpec, from_engine_config, save_replay
    from ..model.loader import default_model_dir
    from ..writers import check_writable

    values: dict[str, Any] = {}
    if args.config:
        # a `simulate` session file: checked whole (its errors name the file), then
        # only the keys it sets are taken, so flags still decide the rest
        data = read_settings(args.config)
        cfg = EngineConfig.from_file_dict(data, args.config)
        names = {f.name for f in dataclasses.fields(WorkloadSpec)}
        # the validated, converted values (dashed keys and 64.0 for 64 as simulate takes them)
        keys = {k.replace("-", "_") for k in data} & names
        values.update({k: cfg.get(k) for k in keys})
    for f in dataclasses.fields(WorkloadSpec):
        if hasattr(args, f.name):
            values[f.name] = _parse_flag(getattr(args, f.name))
    if "duration" in values and "requests" not in values:
        values["requests"] = None     # a duration alone replaces the default request count
    spec = WorkloadSpec.from_dict(values)
    check_writable(args.out, "out")     # before the generation, which can take a while

    tokenizer = None
    model_dir = Path(args.model) if args.model else default_model_dir()
    if args.model or (model_dir / "tokenizer.json").is_file():
        from ..model.tokenizer import Tokenizer
        tokenizer = Tokenizer.from_dir(model_dir)
    requests = from_engine_config(spec, tokenizer, progress=True)
    save_replay(requests, args.out)

    unit = "tokens" if tokenizer is not None else "words"
    plens = np.array([r.prompt_len for r in requests])
    olens = np.array([r.max_tokens for r in requests])
    span = requests[-1].arrival_s - requests[0].arrival_s if requests else 0.0
    grouped = sum(r.group is not None for r in requests)
    print(f"{len(requests)} requests over {span:.2f} s"
          + (f" ({(len(requests) - 1) / span:.2f} req/s)" if span > 0 else ""))
    if requests:
        print(f"prompt {unit}: mean {plens.mean():.0f}, p50 {np.median(plens):.0f}, max {plens.max()}")
        print(f"max_tokens: mean {olens.mean():.0f}, p50 {np.median(olens):.0f}, max {olens.max()}")
        print(f"shared-prefix requests: {grouped} ({grouped / len(requests):.0%}), n = {spec.n}")
    print(f"wrote {args.out}")
    return 0
