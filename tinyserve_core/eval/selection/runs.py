"""The runs of `tinyserve eval selection`: per block size, every task is prefilled once
and each (policy, budget) run decodes through the paged engine path from a restored KV
snapshot; a run's selections can be replayed through two-tier page caches."""

from __future__ import annotations

import math
import time

import numpy as np
import torch
from tqdm import tqdm

from ...errors import ConfigError
from ...selection import PageSelector, summarize_history
from ...selection.registry import fp8_cache_conflict
from .spec import TIER_POLICIES_EVALUATED, TOP_P_POLICIES, EvalSpec, RunResult, Task, build_tasks


class _Prefilled:
    """One block size: a runner whose pages hold every task's prefill, and a snapshot
    of the caches to restore before each policy run."""

    def __init__(self, model, tasks: list[Task], block_size: int, device, dtype=torch.float32,
                 kv_cache_dtype: torch.dtype | None = None):
        from ...engine.model_runner import ModelRunner, PrefillItem
        need = [-(-(len(t.prefill) + len(t.feed)) // block_size) for t in tasks]
        self.tables, at = [], 0
        for n in need:
            self.tables.append(list(range(at, at + n)))
            at += n
        self.runner = ModelRunner(model, at, block_size, device, dtype, kv_cache_dtype=kv_cache_dtype)
        for i, t in enumerate(tasks):
            self.runner.prefill([PrefillItem(i, t.prefill, 0, self.tables[i])])
        self.snapshot = [x.clone() for x in self._cache_tensors()]
        self.tasks = tasks

    def run(self, selector: PageSelector | None, bar=None, keep_details: bool = False):
        """(nll, argmax, details): `details` the columnar records of every step
        (selection/detail.py) when `keep_details`, for the tier replay."""
        from ...engine.model_runner import DecodeItem
        kv = self.runner.kv
        for dst, src in zip(self._cache_tensors(), self.snapshot):
            dst.copy_(src)
        if kv.qkeys is not None:  # the restore bypassed the quantised key copy
            kv.ensure_quant_keys(kv.qkey_bits, refresh=True)
        self.runner.selector = selector
        nll = [[] for _ in self.tasks]
        argmax = [[] for _ in self.tasks]
        details = []
        steps = max(len(t.feed) for t in self.tasks)
        for s in range(steps):
            active = [i for i, t in enumerate(self.tasks) if s < len(t.feed)]
            items = [DecodeItem(i, self.tasks[i].feed[s], len(self.tasks[i].prefill) + s, self.tables[i])
                     for i in active]
            logp = torch.log_softmax(self.runner.decode(items).logits, dim=-1).cpu()
            tgt = torch.tensor([self.tasks[i].targets[s] for i in active])
            step_nll = -logp.gather(1, tgt[:, None]).squeeze(1)
            top = logp.argmax(-1)
            for r, i in enumerate(active):
                nll[i].append(float(step_nll[r]))
                argmax[i].append(int(top[r]))
            if selector is not None:
                summary = selector.take_summary()
                if keep_details and summary is not None and summary.detail is not None:
                    details.append(summary.detail)
            if bar is not None:
                bar.update(1)
        return nll, argmax, details

    def _cache_tensors(self) -> list[torch.Tensor]:
        """What a run may change: K, V and the page bounds, or an FP8 cache's scales."""
        kv = self.runner.kv
        return [*kv.k_caches, *kv.v_caches, *(kv.metas or ()), *(kv.kv_scales or ())]

    @property
    def page_bytes(self) -> int:
        k = self.runner.kv.k_caches[0]
        return 2 * k[0].numel() * k.element_size()


def wilson_interval(correct: int, n: int) -> list[float]:
    """95% Wilson score interval of a binomial proportion (sound at 0 and n correct)."""
    from scipy.stats import binomtest
    ci = binomtest(correct, n).proportion_ci(confidence_level=0.95, method="wilson")
    return [float(ci.low), float(ci.high)]


def _score(tasks, nll, argmax, dense_argmax) -> dict:
    text = [x for t, n in zip(tasks, nll) if t.kind == "text" for x in n]
    keys = [a == t.targets for t, a in zip(tasks, argmax) if t.kind == "passkey"]
    agree = [x == y for a, d in zip(argmax, dense_argmax) for x, y in zip(a, d)]
    per_len: dict[str, dict] = {}
    for t, a in zip(tasks, argmax):
        if t.kind == "passkey":
            row = per_len.setdefault(str(t.length), {"n": 0, "correct": 0})
            row["n"] += 1
            row["correct"] += int(a == t.targets)
    for row in per_len.values():
        row["accuracy"] = row["correct"] / row["n"]
        row["ci95"] = wilson_interval(row["correct"], row["n"])
    return {"perplexity": math.exp(sum(text) / len(text)) if text else None,
            "passkey_accuracy": sum(keys) / len(keys) if keys else None,
            "agreement": sum(agree) / len(agree), "passkey": per_len}


def _selection_stats(selector: PageSelector | None) -> dict:
    """Record-weighted means over the layers the policy selected on."""
    hist = [] if selector is None or selector.stats is None else list(selector.stats.history)
    per_layer = summarize_history(hist)
    if not per_layer:  # dense, or every layer exempt
        return {"mass_recall": 1.0, "oracle_mass": 1.0, "selection_recall": 1.0, "pages_frac": 1.0,
                "mean_pages": None,
                "bound_violations": 0, "entropy": None}
    rec = sum(r["records"] for r in per_layer.values())
    w = lambda m: sum(r[m] * r["records"] for r in per_layer.values()) / rec  # noqa: E731
    ent = [(r["entropy"], r["records"]) for r in per_layer.values() if not math.isnan(r["entropy"])]
    return {"mass_recall": w("mass_recall"), "oracle_mass": w("oracle_mass"),
            "selection_recall": w("selection_recall"),
            "pages_frac": w("pages_selected") / w("context_pages"), "mean_pages": w("pages_selected"),
            "bound_violations": sum(r["bound_violations"] for r in per_layer.values()),
            "entropy": sum(e * n for e, n in ent) / sum(n for _, n in ent) if ent else None,
            "per_layer_mass_recall": {str(k): r["mass_recall"] for k, r in sorted(per_layer.items())}}


def _make_selector(policy: str, budget: str | None, top_p: float | None, spec: EvalSpec) -> PageSelector:
    if policy == "dense":
        return PageSelector("dense")
    params = {"budget": budget, "dense_layers": spec.dense_layers}
    if spec.sink_pages is not None:
        params["sink_pages"] = spec.sink_pages
    if budget is None:
        del params["budget"]      # oracle_p: no cap
    if policy in ("adaptive", "oracle_p"):
        params["top_p_mass"] = top_p  # the budget is its cap
    elif policy == "twostage":
        params["estimate_top_p"] = top_p or 0.0  # None: the fixed-budget form
        params["candidates"] = spec.twostage_candidates
        params["candidate_top_p"] = spec.twostage_candidate_top_p
        params["quant_bits"] = spec.twostage_bits
        params["bound_copy"] = spec.twostage_bound_copy
    return PageSelector(policy, stats=True, **params)


def replay_tiers(details, mean_pages: float, page_bytes: int, factors) -> list[dict]:
    """Replays a run's selections through two-tier caches of `factor x` the mean
    selected pages per (sequence, layer), LRU and LFU side by side. Residency is
    accounting only, so one decode run serves every tier configuration."""
    from ...kv.tiers import TIER_POLICIES, TieredPageCache
    steps = []
    for d in details:   # per (sequence, layer): its context and the union over kv-heads
        union = d.selected.any(2)                                        # [L, B, P]
        ctx = d.channel("context_pages")[:, :, 0].astype(np.int64)      # [L, B]
        steps.append({(int(seq), int(layer)): (int(ctx[li, b]), np.flatnonzero(union[li, b]))
                      for li, layer in enumerate(d.layers) for b, seq in enumerate(d.seq_ids)})
    rows = []
    seqs = {k[0] for st in steps for k in st} or {0}
    for f in factors:
        cap = max(1, math.ceil(f * mean_pages))
        for pol in TIER_POLICIES:
            t = TieredPageCache(cap, pol)
            for st in steps:
                for (seq, layer), (n, pages) in st.items():
                    t.access(seq, layer, n, pages, page_bytes)
            c = t.totals
            rows.append({"factor": f, "tier_pages": cap, "tier_policy": pol, "hit_rate": c.hit_rate,
                         "misses_per_step": c.misses / max(len(steps), 1),
                         "mb_moved_per_seq_step": c.bytes_moved / 2**20 / max(len(steps), 1) / len(seqs)})
    return rows


def run_configs(spec: EvalSpec) -> list[tuple[str, str | None, float | None]]:
    """(policy, budget, top_p) of every run of a block size: dense once, oracle_p once per
    top_p with no cap, adaptive per budget and top_p, twostage per budget in its fixed
    form (top_p None) and per top_p, the others per budget."""
    configs = []
    for p in spec.policies:
        budgets = [None] if p in ("dense", "oracle_p") else list(spec.budgets)
        tops = [None] if p not in TOP_P_POLICIES else (
            [None, *spec.top_ps] if p == "twostage" else list(spec.top_ps))
        configs += [(p, b, tp) for b in budgets for tp in tops]
    return configs


def evaluate(model, tok, tokens: np.ndarray, spec: EvalSpec, device="cpu", progress: bool = True,
             dtype: torch.dtype = torch.float32, kv_cache_dtype: torch.dtype | None = None) -> list[RunResult]:
    """`kv_cache_dtype` float8_e4m3fn: every run reads an FP8 cache (the policies it serves:
    registry.fp8_cache_conflict)."""
    spec.validate()
    if kv_cache_dtype is not None and kv_cache_dtype != dtype:
        for name in spec.policies:
            why = fp8_cache_conflict(name)
            if why is not None:
                raise ConfigError("--kv-cache-dtype", f"{why} (--kv-cache-dtype fp8): leave {name} out of "
                                                      "--policies")
    max_pos = getattr(model.config, "max_position_embeddings", None)
    if max_pos is not None and spec.context > max_pos:
        raise ConfigError("--context", f"{spec.context} exceeds the model's max_position_embeddings {max_pos}")
    if max_pos is not None and max(spec.passkey_lengths) > max_pos:
        raise ConfigError("--passkey-lengths", f"{max(spec.passkey_lengths)} exceeds the model's "
                                               f"max_position_embeddings {max_pos}")
    tasks = build_tasks(tok, tokens, spec)
    configs = run_configs(spec)
    steps = max(len(t.feed) for t in tasks)
    results: list[RunResult] = []
    bar = tqdm(total=len(spec.block_sizes) * len(configs) * steps, desc="eval selection", unit="step",
               disable=not progress)
    for bs in spec.block_sizes:
        bar.set_postfix_str(f"block {bs}: prefill")
        pre = _Prefilled(model, tasks, bs, device, dtype, kv_cache_dtype)
        dense_argmax = None
        dense = None
        for policy, budget, top_p in configs:
            bar.set_postfix_str(f"block {bs}: {policy} {budget or ''}".strip())
            sel = _make_selector(policy, budget, top_p, spec)
            t0 = time.perf_counter()
            keep = policy in TIER_POLICIES_EVALUATED and bool(spec.tier_factors)   # for the tier replay
            nll, argmax, events = pre.run(None if policy == "dense" else sel, bar, keep)
            secs = time.perf_counter() - t0
            if policy == "dense":
                dense_argmax = argmax
            sc = _score(tasks, nll, argmax, dense_argmax)
            st = _selection_stats(sel)
            per_layer = st.pop("per_layer_mass_recall", None)
            extra = {"per_layer_mass_recall": per_layer} if per_layer else {}
            extra["min_context_pages"] = min(-(-(len(t.prefill) + 1) // bs) for t in tasks)
            if events and st["mean_pages"]:
                extra["tiers"] = replay_tiers(events, st["mean_pages"], pre.page_bytes, spec.tier_factors)
            r = RunResult(policy=policy, budget=budget, block_size=bs, seconds=secs, top_p=top_p, **sc, **st,
                          extra=extra)
            if policy == "dense":
                dense = r
            if dense is not None and r.perplexity is not None:
                r.ppl_vs_dense = r.perplexity / dense.perplexity - 1.0
            if dense is not None and r.passkey_accuracy is not None:
                r.passkey_vs_dense = r.passkey_accuracy - dense.passkey_accuracy
            results.append(r)
    bar.close()
    return results
