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

from ..kernels.prefill_reference import SDPA_BACKENDS


@dataclass
class BenchRow:
    scenario: str
    system: str
    requests: int
    gen_tokens: int
    seconds: float
    tokens_per_s: float
    outputs_match: bool | None = None
    # greedy outputs against the peer's: share of requests identical token for token, and
    # the mean position of the first differing token over the requests that differ
    identical_share: float | None = None
    first_diff_mean: float | None = None
    # our engine's rows (None for the peer): SERVING_FIGURES -> value (latencies on the
    # engine clock, host ms per step, device busy %)
    serving: dict[str, float | None] | None = None


SERVING_FIGURES = ("ttft_p50_ms", "ttft_p99_ms", "tpot_p50_ms", "tpot_p99_ms", "host_ms_per_step",
                   "device_busy_pct")


def compare_outputs(ours: list[list[int]], peer: list[list[int]]) -> tuple[float, float | None]:
    """(share of requests whose tokens are identical, mean index of the first differing
    token over the requests that differ; None when none does). fp16 kernels of two
    systems part at near-ties, so this says how far they agree, not just whether."""
    firsts = []
    for a, b in zip(ours, peer):
        if a != b:
            firsts.append(next((i for i, (x, y) in enumerate(zip(a, b)) if x != y), min(len(a), len(b))))
    share = 1.0 - len(firsts) / max(len(ours), 1)
    return share, (float(np.mean(firsts)) if firsts else None)


def _with_serving(row: BenchRow, records) -> BenchRow:
    from ..observe.summary import summarize
    s = summarize(records)
    figures = {k: getattr(s, k, None) for k in SERVING_FIGURES}
    figures["device_busy_pct"] = None if s.device_busy_frac is None else 100.0 * s.device_busy_frac
    return dataclasses.replace(row, serving=figures)


def run_ours(cfg, model, tok, prompts, max_toks, stream, profile: dict | None = None):
    """Our engine on a workload: (seconds, outputs per request, step records). `stream`:
    arrival times in seconds (None = all at once); the pool holds the whole workload,
    so this measures compute, not preemption. `profile`: filled with what profiling was
    charged (ModelRunner.profile_account)."""
    from ..engine.engine import Engine
    from ..engine.sampling import SamplingParams
    need = sum(-(-(len(p) + m) // cfg.cache.block_size) for p, m in zip(prompts, max_toks))
    eng = Engine(cfg.replace(num_blocks=need + 8), model=model, tokenizer=tok)
    order = {}
    pending = list(range(len(prompts)))
    outs: dict[int, list[int]] = {}
    records = []
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
        rec = eng.step()
        records.append(rec)
        for t in rec.finished:
            outs[order[t.request_id]] = list(t.output_token_ids)
    if profile is not None:
        profile.update(eng.runner.profile_account())
    return time.perf_counter() - t0, [outs[i] for i in range(len(prompts))], records


# The GUI's engine configuration (quest with statistics and profiling) and its peers,
# each on the static mixed batch (throughput-bound: what statistics and profiling cost)
# and on the Poisson stream (latency), and a stream the engine cannot keep up with: our
# engine alone, one row each. Each configuration's peer is the quest row of its workload.
SERVING_CASES = (("quest", dict(policy="quest", budget=0.25, dense_layers=2)),
                 ("quest + stats", dict(policy="quest", budget=0.25, dense_layers=2, stats=True)),
                 ("GUI: quest + stats + profile", dict(policy="quest", budget=0.25, dense_layers=2, stats=True,
                                                       profile=True)))


def serving_rows(cfg, model, tok, mixed, arrivals, overload: tuple[int, float] | None, seed: int,
                 repeats: int = 3) -> list[BenchRow]:
    """The selection configurations on the static mixed batch and on the Poisson stream,
    then `overload` = (requests, rate) of dense serving on a stream that outruns the
    engine (None: left out). The static batch lasts ~0.1 s on a GPU, where one stray host
    stall moves a figure by a third: its configurations run `repeats` times, in turn, and
    each keeps its median run (the spread of its runs is kept in `serving`); the stream
    (seconds of arrivals) runs once."""
    rows = []
    prompts, max_toks = mixed
    total = sum(max_toks)
    for workload, stream in (("static", None), ("poisson", arrivals)):
        runs: dict[str, list[tuple]] = {name: [] for name, _ in SERVING_CASES}
        for _ in range(max(1, repeats) if stream is None else 1):
            for name, keys in SERVING_CASES:
                account: dict = {}
                secs, _, recs = run_ours(cfg.replace(**keys), model, tok, prompts, max_toks, stream, account)
                runs[name].append((secs, recs, account))
        for name, keys in SERVING_CASES:
            secs, recs, account = _median_run(runs[name])
            row = _with_serving(BenchRow(f"{workload}, {name}", "tinyserve", len(prompts), total, secs,
                                         total / secs), recs)
            if len(runs[name]) > 1:
                row.serving["runs_tok_per_s"] = sorted(total / r[0] for r in runs[name])
            if keys.get("profile"):   # what the breakdown sampler charged, as a share of the run
                row.serving.update(profile_charged_pct=100.0 * account["profile_spent_s"] / secs,
                                   breakdowns=account["breakdowns"])
            rows.append(row)
    if overload is None:
        return rows
    n, rate = overload
    prompts, max_toks = _workload(tok, n, max(8, int(np.median([len(p) for p in prompts]))),
                                  max(4, int(np.median(max_toks))), seed, True)
    stream = np.cumsum(np.random.default_rng(seed + 1).exponential(1.0 / rate, size=n)).tolist()
    secs, _, recs = run_ours(cfg.replace(max_num_seqs=max(n, 1)), model, tok, prompts, max_toks, stream)
    total = sum(max_toks)
    rows.append(_with_serving(BenchRow(f"overload: {n} at {rate:g}/s", "tinyserve", n, total, secs,
                                       total / secs), recs))
    return rows


def cost_vs_quest(rows: list[BenchRow]) -> dict[str, float]:
    """scenario -> how many times longer a serving configuration took than plain quest on
    the same workload (1.15 = 15% slower), for the rows that have that peer."""
    by_name = {r.scenario: r for r in rows if r.system == "tinyserve"}
    out = {}
    for r in by_name.values():
        workload, _, name = r.scenario.partition(", ")
        peer = by_name.get(f"{workload}, quest")
        if peer is not None and name in dict(SERVING_CASES):
            out[r.scenario] = r.seconds / peer.seconds
    return out


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
    # new KV length builds a new cuDNN graph on the host (see kernels.prefill_reference.SDPA_BACKENDS).
    with torch.inference_mode(), sdpa_kernel(SDPA_BACKENDS):
        out = model.generate(input_ids=ids.to(device), attention_mask=mask.to(device),
                             max_new_tokens=max_tokens, min_new_tokens=max_tokens,
                             do_sample=False, pad_token_id=pad_id)
    return [row[width:].tolist() for row in out.cpu()]


def _median_run(runs: list[tuple]) -> tuple:
    """The run (seconds first) of median time; the upper median of an even count."""
    return sorted(runs, key=lambda r: r[0])[len(runs) // 2]


@dataclass
class EngineBench:
    machine: str
    device: str
    dtype: str
    model: str
    rows: list[BenchRow]

    def to_json(self) -> dict:
        return {"machine": self.machine, "device": self.device, "dtype": self.dtype,
                "model": self.model, "rows": [asdict(r) for r in self.rows],
                "cost_vs_quest": cost_vs_quest(self.rows)}


def compare_with_hf(model: str | None = None, device: str = "auto", requests: int = 16, prompt_len: int = 128,
                    max_tokens: int = 64, rate: float = 8.0, seed: int = 0,
                    overload: tuple[int, float] | None = (256, 1000.0), peer: bool = True,
                    repeats: int = 3) -> EngineBench:
    """Both systems on a static uniform batch, a static mixed batch (each the median of
    `repeats` runs) and a Poisson stream; two rows per scenario (ours, then HF). Then our engine alone (serving_rows): the GUI
    configuration and its peers on the static mixed batch and on the stream, and
    `overload` = (requests, rate) (None: left out). `peer` False: our engine's rows only
    (no HF model is loaded)."""
    from ..engine.config import EngineConfig
    from ..engine.engine import Engine, resolve_device, resolve_dtype
    from ..model.loader import default_model_dir
    from .machine import describe

    device = resolve_device(device)
    dtype = resolve_dtype("auto", device)
    model_dir = model or str(default_model_dir())
    rows: list[BenchRow] = []

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
    hf = _hf_model(model_dir, device, dtype) if peer else None
    pad = tok.eos_token_id if tok.eos_token_id is not None else 0
    uniform = _workload(tok, requests, prompt_len, max_tokens, seed, False)
    mixed = _workload(tok, requests, prompt_len, max_tokens, seed, True)
    rng = np.random.default_rng(seed)
    arrivals = np.cumsum(rng.exponential(1.0 / rate, size=requests)).tolist()
    cases = [("static, uniform", uniform, None), ("static, mixed", mixed, None),
             (f"poisson {rate:g}/s, mixed", mixed, arrivals)]
    model_ = engine.model
    run_ours(cfg, model_, tok, uniform[0][:2], [4, 4], None)  # warm-up: first-call allocations, kernel build
    if peer:
        hf_run(uniform[0][:2], [4, 4], None)
    for scenario, (prompts, max_toks), stream in cases if peer else ():
        total = sum(max_toks)
        # A static batch lasts ~0.1 s on a GPU, where one stray host stall moves the figure
        # by a third: both systems run it `repeats` times, alternately, and each keeps its
        # median run. The stream (seconds of arrivals) runs once.
        runs_ours, runs_hf = [], []
        for _ in range(repeats if stream is None else 1):
            runs_ours.append(run_ours(cfg, model_, tok, prompts, max_toks, stream))
            runs_hf.append(hf_run(prompts, max_toks, stream))
        t_ours, out_ours, recs = _median_run(runs_ours)
        t_hf, out_hf = _median_run(runs_hf)
        match = out_ours == out_hf
        share, first = compare_outputs(out_ours, out_hf)
        rows.append(_with_serving(BenchRow(scenario, "tinyserve", len(prompts), total, t_ours, total / t_ours,
                                           match, share, first), recs))
        rows.append(BenchRow(scenario, "hf generate", len(prompts), total, t_hf, total / t_hf, match, share, first))
    rows += serving_rows(cfg, model_, tok, mixed, arrivals, overload, seed, repeats)

    return EngineBench(describe(device), device.type, str(dtype), model_dir, rows)
