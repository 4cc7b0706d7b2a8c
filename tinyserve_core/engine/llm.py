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
    request_id: str | None              # None: rejected, never added to the engine
    prompt_token_ids: list[int]
    outputs: list[CompletionOutput]
    rejected: str | None = None         # why the engine could never run it (no outputs then)


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
        tok = eng.tokenizer
        # Tokenised once here, so a prompt the engine could never run is reported with
        # its reason instead of silently coming back without outputs.
        ptoks = [list(p) if isinstance(p, list) else (tok.encode(p) if tok else []) for p in prompts]
        reasons = [eng.rejection_reason(t, sp) for t, sp in zip(ptoks, params)]
        ids = [None if why else eng.add_request(t, sp) for t, sp, why in zip(ptoks, params, reasons)]
        results: dict[str, list] = {}
        while eng.has_unfinished():
            rec = eng.step()
            for t in rec.finished:
                results.setdefault(t.request_id, []).append(t)
            if progress is not None:
                progress(rec)
        out = []
        for rid, toks, why in zip(ids, ptoks, reasons):
            timings = sorted(results.get(rid, []), key=lambda t: t.seq_id)
            comps = [CompletionOutput(i, list(t.output_token_ids),
                                      tok.decode(list(t.output_token_ids)) if tok else "",
                                      t.finish_reason) for i, t in enumerate(timings)]
            out.append(RequestOutput(rid, toks, comps, why))
        return out
