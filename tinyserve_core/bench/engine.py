"""Our paged engine (`tinyserve bench engine`) vs Hugging Face `generate()` on the same
weights and the same greedy prompts (outputs must match), on a static batch and on a
Poisson stream.

Both sides generate exactly `max_tokens` tokens per request (EOS ignored), so the
useful work is identical. HF's static batch is one left-padded `generate()` call
running to the longest request; on the Poisson stream HF serves requests one at a time
in arrival order (it has no continuous batching), we serve the same stream with ours.
Throughput = useful generated tokens / wall time of the whole workload."""

from __future__ import annotations

import dataclasses
import time
from dataclasses import asdict, dataclass

import numpy as np
import torch
from torch.nn.attention import sdpa_kernel

from ..model.llama import SDPA_BACKENDS


@dataclass
class BenchRow:
    scenario: str
    system: str
    requests: int
    gen_tokens: int
    seconds: float
    tokens_per_s: float
    outputs_match: bool | None = None


def _workload(tokenizer, n: int, length: int, max_tokens: int, seed: int, mixed: bool):
    """Real-text prompts from the shipped prompt corpus: exactly `length` tokens and
    `max_tokens` outputs each, or (mixed) lognormal lengths around them, as a real batch
    of requests has. Returns (prompts, max_tokens per request)."""
    from ..engine import workloads
    from ..engine.config import EngineConfig
    dist = "lognormal" if mixed else "fixed"
    cfg = EngineConfig.from_dict(dict(
        workload="static", requests=n, seed=seed,
        prompt_dist=dist, prompt_len=length if not mixed else max(1, length // 2),
        prompt_len_max=length * (4 if mixed else 1),
        output_dist=dist, output_len=max_tokens if not mixed else max(1, max_tokens // 2),
        output_len_max=max_tokens * (4 if mixed else 1)))
    reqs = workloads.from_engine_config(cfg, tokenizer)
    return [list(w.prompt_token_ids) for w in reqs], [int(w.max_tokens) for w in reqs]


def _hf_model(model_dir: str, device: torch.device, dtype: torch.dtype):
    from transformers import AutoModelForCausalLM
    m = AutoModelForCausalLM.from_pretrained(model_dir, torch_dtype=dtype)
    return m.to(device).eval()


def _hf_generate(model, prompts: list[list[int]], max_tokens: int, pad_id: int,
                 device: torch.device) -> list[list[int]]:
    width = max(len(p) for p in prompts)
    ids = torch.full((len(prompts), width), pad_id, dtype=torch.long)
    mask = torch.zeros_like(ids)
    for i, p in enumerate(prompts):  # left padding, as HF wants for decoder-only batches
        ids[i, width - len(p):] = torch.tensor(p)
        mask[i, width - len(p):] = 1
    # The peer gets the same SDPA backends as the engine: with cuDNN, every decode step's
    # new KV length builds a new cuDNN graph on the host (see model.llama.SDPA_BACKENDS).
    with torch.inference_mode(), sdpa_kernel(SDPA_BACKENDS):
        out = model.generate(input_ids=ids.to(device), attention_mask=mask.to(device),
                             max_new_tokens=max_tokens, min_new_tokens=max_tokens,
                             do_sample=False, pad_token_id=pad_id)
    return [row[width:].tolist() for row in out.cpu()]


@dataclass
class EngineBench:
    machine: str
    device: str
    dtype: str
    model: str
    rows: list[BenchRow]

    def to_json(self) -> dict:
        return {"machine": self.machine, "device": self.device, "dtype": self.dtype,
                "model": self.model, "rows": [asdict(r) for r in self.rows]}


def compare_with_hf(model: str | None = None, device: str = "auto", requests: int = 16, prompt_len: int = 128,
                    max_tokens: int = 64, rate: float = 8.0, seed: int = 0) -> EngineBench:
    """Both systems on a static uniform batch, a static mixed batch and a Poisson stream;
    two rows per scenario (ours, then HF)."""
    from ..engine.config import EngineConfig
    from ..engine.engine import Engine, resolve_device, resolve_dtype
    from ..engine.sampling import SamplingParams
    from ..model.loader import default_model_dir
    from .machine import describe

    device = resolve_device(device)
    dtype = resolve_dtype("auto", device)
    model_dir = model or str(default_model_dir())
    rows: list[BenchRow] = []

    def ours(prompts, max_toks, stream):
        # a pool that holds the whole workload: this measures compute, not preemption
        need = sum(-(-(len(p) + m) // cfg.cache.block_size) for p, m in zip(prompts, max_toks))
        eng = Engine(cfg.replace(num_blocks=need + 8), model=engine.model, tokenizer=tok)
        order = {}
        pending = list(range(len(prompts)))
        outs: dict[int, list[int]] = {}
        t0 = time.perf_counter()
        while eng.has_unfinished() or pending:
            now = time.perf_counter() - t0
            while pending and (stream is None or stream[pending[0]] <= now):
                i = pending.pop(0)
                sp = SamplingParams(temperature=0.0, max_tokens=max_toks[i], ignore_eos=True)
                order[eng.add_request(prompts[i], sp)] = i
            if not eng.has_unfinished():
                time.sleep(max(0.0, stream[pending[0]] - now))
                continue
            for t in eng.step().finished:
                outs[order[t.request_id]] = list(t.output_token_ids)
        return time.perf_counter() - t0, [outs[i] for i in range(len(prompts))]

    def hf_run(prompts, max_toks, stream):
        t0 = time.perf_counter()
        if stream is None:  # one padded batch, run to the longest request
            outs = _hf_generate(hf, prompts, max(max_toks), pad, device)
            outs = [o[:m] for o, m in zip(outs, max_toks)]
        else:               # no continuous batching: serve in arrival order
            outs = []
            for i, p in enumerate(prompts):
                wait = stream[i] - (time.perf_counter() - t0)
                if wait > 0:
                    time.sleep(wait)
                outs += _hf_generate(hf, [p], max_toks[i], pad, device)
        return time.perf_counter() - t0, outs

    cfg = EngineConfig.from_dict(dict(
        model=model_dir, device=device.type, block_size=16, num_blocks=8192,
        max_num_seqs=max(requests, 1), max_num_batched_tokens=1 << 16,
        enable_prefix_caching=False))
    engine = Engine(cfg)
    tok = engine.tokenizer
    hf = _hf_model(model_dir, device, dtype)
    pad = tok.eos_token_id if tok.eos_token_id is not None else 0
    uniform = _workload(tok, requests, prompt_len, max_tokens, seed, False)
    mixed = _workload(tok, requests, prompt_len, max_tokens, seed, True)
    rng = np.random.default_rng(seed)
    arrivals = np.cumsum(rng.exponential(1.0 / rate, size=requests)).tolist()
    cases = [("static, uniform", uniform, None), ("static, mixed", mixed, None),
             (f"poisson {rate:g}/s, mixed", mixed, arrivals)]
    ours(uniform[0][:2], [4, 4], None)  # warm-up: first-call allocations and any kernel build
    hf_run(uniform[0][:2], [4, 4], None)
    for scenario, (prompts, max_toks), stream in cases:
        total = sum(max_toks)
        t_ours, out_ours = ours(prompts, max_toks, stream)
        t_hf, out_hf = hf_run(prompts, max_toks, stream)
        match = out_ours == out_hf
        rows.append(BenchRow(scenario, "tinyserve", len(prompts), total, t_ours, total / t_ours, match))
        rows.append(BenchRow(scenario, "hf generate", len(prompts), total, t_hf, total / t_hf, match))

    return EngineBench(describe(device), device.type, str(dtype), model_dir, rows)
