"""`LLM(model).generate(prompts, params)`: plain offline use of the engine."""

from __future__ import annotations

from dataclasses import dataclass

from .config import EngineConfig
from .engine import Engine
from .sampling import SamplingParams


@dataclass
class CompletionOutput:
    index: int
    token_ids: list[int]
    text: str
    finish_reason: str | None


@dataclass
class RequestOutput:
    request_id: str
    prompt_token_ids: list[int]
    outputs: list[CompletionOutput]


class LLM:
    def __init__(self, model: str | None = None, engine: Engine | None = None, **config):
        self.engine = engine or Engine(EngineConfig.from_dict({"model": model, **config}))

    def generate(self, prompts: list[str | list[int]] | str,
                 params: SamplingParams | list[SamplingParams] | None = None,
                 progress=None) -> list[RequestOutput]:
        if isinstance(prompts, str):
            prompts = [prompts]
        if not isinstance(params, list):
            params = [params or SamplingParams()] * len(prompts)
        eng = self.engine
        ids = [eng.add_request(p, sp) for p, sp in zip(prompts, params)]
        pending = set(ids)
        results: dict[str, list] = {}
        while eng.has_unfinished():
            rec = eng.step()
            for t in rec.finished:
                results.setdefault(t.request_id, []).append(t)
            if progress is not None:
                progress(rec)
        tok = eng.tokenizer
        out = []
        for rid, prompt in zip(ids, prompts):
            timings = sorted(results.get(rid, []), key=lambda t: t.seq_id)
            comps = [CompletionOutput(i, list(t.output_token_ids),
                                      tok.decode(list(t.output_token_ids)) if tok else "",
                                      t.finish_reason) for i, t in enumerate(timings)]
            ptoks = prompt if isinstance(prompt, list) else (tok.encode(prompt) if tok else [])
            out.append(RequestOutput(rid, list(ptoks), comps))
        return out
