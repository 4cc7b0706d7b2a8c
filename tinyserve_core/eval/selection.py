"""`tinyserve eval selection`: how much accuracy each page-selection policy keeps.

For every block size, held-out text windows and pass-key samples are prefilled once
(densely, as a server does) and the KV snapshot is restored before each
(policy, budget) run. Each run then decodes through the paged engine path
(`ModelRunner` + `PageSelector`), so selection acts exactly where it acts in serving:
on decode queries.

* perplexity: the last `decode_tokens` tokens of each text window are teacher-forced
  one decode step at a time; NLL of each next token.
* pass-key accuracy: the prompt minus its last token is prefilled, the last token and
  the key's first digits are fed as decode steps; correct iff all 5 digits are the
  argmax (the same verdict greedy decoding gives, see model/train/evaluate.py).
* greedy agreement: share of decode positions whose argmax equals the dense run's.
* attention-mass recall, selection recall, pages attended, bound violations: from
  the selector's statistics, over the layers the policy selects on (the first
  `dense_layers` are dense by rule and left out).

Results: a table on stdout, `--json`, `--md` and accuracy-vs-budget PNGs (`--plots`)."""

from __future__ import annotations

import argparse
import json
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from ..errors import ConfigError
from ..observe.events import EventSink
from ..selection import PageSelector, summarize_history
from ..selection.params import Budget

ALL_POLICIES = ("dense", "quest", "adaptive", "streaming", "h2o", "oracle")
TIER_POLICIES_EVALUATED = ("quest", "adaptive")
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
FULL_BUDGETS = ("64", "128", "256", "512", "1/8", "1/4")


@dataclass
class EvalSpec:
    policies: tuple[str, ...] = ALL_POLICIES
    budgets: tuple[str, ...] = FULL_BUDGETS
    block_sizes: tuple[int, ...] = (8, 16, 32)
    context: int = 2048
    decode_tokens: int = 64
    text_samples: int = 4
    passkey_samples: int = 16
    top_ps: tuple[float, ...] = (0.95, 0.99)   # adaptive runs once per value (its budget is the cap)
    dense_layers: int = 2
    sink_pages: int | None = None   # None: each policy's default (streaming 1, others 0)
    tier_factors: tuple[float, ...] = (2.0, 4.0)  # fast-tier pages / mean pages a head selects
    seed: int = 0

    @classmethod
    def quick(cls) -> "EvalSpec":
        return cls(budgets=("64", "1/8", "1/4"), block_sizes=(16,), context=1024, decode_tokens=32,
                   text_samples=2, passkey_samples=6, top_ps=(0.99,))

    def validate(self) -> "EvalSpec":
        for p in self.policies:
            if p not in ALL_POLICIES:
                raise ConfigError("--policies", f"unknown policy {p!r} (choose from {', '.join(ALL_POLICIES)})")
        if "dense" not in self.policies:
            self.policies = ("dense",) + tuple(self.policies)  # every figure is relative to dense
        for b in self.budgets:
            Budget.parse("--budgets", b)
        for bs in self.block_sizes:
            if bs not in (1, 2, 4, 8, 16, 32, 64, 128):
                raise ConfigError("--block-sizes", f"must be powers of two in 1..128, got {bs}")
        for name, v, lo in (("--context", self.context, 16), ("--decode-tokens", self.decode_tokens, 2),
                            ("--text-samples", self.text_samples, 0), ("--passkey-samples", self.passkey_samples, 0),
                            ("--dense-layers", self.dense_layers, 0),
                            ("--sink-pages", 0 if self.sink_pages is None else self.sink_pages, 0)):
            if not isinstance(v, int) or v < lo:
                raise ConfigError(name, f"must be an integer >= {lo}, got {v!r}")
        if self.decode_tokens >= self.context:
            raise ConfigError("--decode-tokens", f"must be below --context {self.context}")
        if self.text_samples + self.passkey_samples == 0:
            raise ConfigError("--text-samples", "text and pass-key samples cannot both be 0")
        if any(not (f > 0) for f in self.tier_factors):
            raise ConfigError("--tier-factors", f"must be > 0, got {self.tier_factors}")
        if not self.top_ps or any(not (0.0 < p <= 1.0) for p in self.top_ps):
            raise ConfigError("--top-p", f"each must be in (0, 1], got {self.top_ps}")
        return self


@dataclass
class _Task:
    kind: str            # "text" | "passkey"
    prefill: list[int]
    feed: list[int]      # tokens fed at the decode steps
    targets: list[int]   # the token each decode step should predict


@dataclass
class RunResult:
    policy: str
    budget: str | None
    block_size: int
    perplexity: float | None
    passkey_accuracy: float | None
    agreement: float
    mass_recall: float
    oracle_mass: float
    selection_recall: float
    pages_frac: float
    mean_pages: float | None
    bound_violations: int
    entropy: float | None
    seconds: float
    top_p: float | None = None
    ppl_vs_dense: float | None = None
    passkey_vs_dense: float | None = None
    extra: dict = field(default_factory=dict)


# ---- data ------------------------------------------------------------------------------

def build_tasks(tok, tokens: np.ndarray, spec: EvalSpec) -> list[_Task]:
    """Text windows at evenly spaced offsets of `tokens`, and pass-key samples whose
    filler comes from the same tokens; every task is exactly `spec.context` long."""
    tasks = []
    C, T = spec.context, spec.decode_tokens
    if spec.text_samples:
        if len(tokens) < C:
            raise ConfigError("--context", f"the held-out text has {len(tokens)} tokens, fewer than {C}")
        starts = np.linspace(0, len(tokens) - C, spec.text_samples).astype(np.int64)
        for s in starts:
            w = [int(t) for t in tokens[s:s + C]]
            tasks.append(_Task("text", w[:C - T], w[C - T:C - 1], w[C - T + 1:]))
    if spec.passkey_samples:
        from ..model.train.passkey import make_samples
        raw = getattr(tok, "tokenizer", tok)
        for smp in make_samples(raw, tokens, spec.passkey_samples, C, spec.seed):
            p, a = smp.prompt_ids, smp.answer_ids
            tasks.append(_Task("passkey", p[:-1], [p[-1]] + a[:-1], list(a)))
    return tasks


def heldout_tokens(tok, data_dir: str | None, heldout_frac: float) -> tuple[np.ndarray, str]:
    """The held-out token stream: a prepared corpus's held-out docs (`--data-dir`),
    else the held-out documentation files re-derived with the training split rule,
    else the shipped prompt corpus assets/text (which may overlap training: said so)."""
    from ..model.train import corpus
    if data_dir is not None:
        return corpus.load_split(data_dir, "heldout_docs"), f"{data_dir}/heldout_docs.npy"
    raw = getattr(tok, "tokenizer", tok)
    eos = getattr(tok, "eos_token_id", None)
    if corpus.DEFAULT_DOCS_ROOT.is_dir():
        docs = []
        for f in sorted(corpus.DEFAULT_DOCS_ROOT.rglob("*.txt")):
            name = "docs/" + f.relative_to(corpus.DEFAULT_DOCS_ROOT).as_posix()
            text = f.read_text(encoding="utf-8", errors="replace")
            if text.strip() and corpus.is_heldout(name, heldout_frac):
                docs.append(corpus.Document(name, "docs", text))
        if docs:
            return (corpus.tokenize_documents(raw, docs, eos if eos is not None else 0, desc="held-out docs"),
                    f"held-out docs ({len(docs)} files, heldout_frac {heldout_frac})")
    text_dir = Path(__file__).resolve().parents[2] / "assets" / "text"
    files = sorted(p for p in text_dir.glob("*.txt") if p.name.upper() not in ("README.TXT", "LICENSE.TXT"))
    if not files:
        raise ConfigError("--data-dir", "no held-out text found: give --data-dir (a train-lm corpus folder)")
    ids = [i for f in files for i in raw.encode(f.read_text(encoding="utf-8")).ids]
    return np.asarray(ids, dtype=np.int64), "assets/text (may overlap the training corpus)"


# ---- runs ------------------------------------------------------------------------------

class _Prefilled:
    """One block size: a runner whose pages hold every task's prefill, and a snapshot
    of the caches to restore before each policy run."""

    def __init__(self, model, tasks: list[_Task], block_size: int, device, dtype=torch.float32):
        from ..engine.model_runner import ModelRunner, PrefillItem
        need = [-(-(len(t.prefill) + len(t.feed)) // block_size) for t in tasks]
        self.tables, at = [], 0
        for n in need:
            self.tables.append(list(range(at, at + n)))
            at += n
        self.runner = ModelRunner(model, at, block_size, device, dtype)
        for i, t in enumerate(tasks):
            self.runner.prefill([PrefillItem(i, t.prefill, 0, self.tables[i])])
        kv = self.runner.kv
        self.snapshot = [x.clone() for x in (*kv.k_caches, *kv.v_caches, *kv.metas)]
        self.tasks = tasks

    def run(self, selector: PageSelector | None, bar=None):
        from ..engine.model_runner import DecodeItem
        kv = self.runner.kv
        for dst, src in zip((*kv.k_caches, *kv.v_caches, *kv.metas), self.snapshot):
            dst.copy_(src)
        self.runner.selector = selector
        nll = [[] for _ in self.tasks]
        argmax = [[] for _ in self.tasks]
        per_step_events = []
        sink = getattr(selector, "_sink", None)
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
                selector.take_summary()
            if sink is not None:
                per_step_events.append(sink.drain())
            if bar is not None:
                bar.update(1)
        return nll, argmax, per_step_events

    @property
    def page_bytes(self) -> int:
        k = self.runner.kv.k_caches[0]
        return 2 * k[0].numel() * k.element_size()


def _score(tasks, nll, argmax, dense_argmax) -> dict:
    text = [x for t, n in zip(tasks, nll) if t.kind == "text" for x in n]
    keys = [a == t.targets for t, a in zip(tasks, argmax) if t.kind == "passkey"]
    agree = [x == y for a, d in zip(argmax, dense_argmax) for x, y in zip(a, d)]
    return {"perplexity": math.exp(sum(text) / len(text)) if text else None,
            "passkey_accuracy": sum(keys) / len(keys) if keys else None,
            "agreement": sum(agree) / len(agree)}


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
    if policy == "adaptive":
        params["top_p"] = top_p  # the budget is its cap
    # query-aware policies keep their per-head events for the offline tier replay
    sink = EventSink() if policy in TIER_POLICIES_EVALUATED and spec.tier_factors else None
    return PageSelector(policy, stats=True, sink=sink, **params)


def replay_tiers(per_step_events, mean_pages: float, page_bytes: int, factors) -> list[dict]:
    """Replays a run's selections through two-tier caches of `factor x` the mean
    selected pages per (sequence, layer), LRU and LFU side by side. Residency is
    accounting only, so one decode run serves every tier configuration."""
    from ..kv.tiers import TIER_POLICIES, TieredPageCache
    steps = []
    for evs in per_step_events:
        union: dict[tuple[int, int], tuple[int, set]] = {}
        for e in evs:
            n, pages = union.setdefault((e.seq_id, e.layer), (len(e.scores), set()))
            pages.update(e.pages)
        steps.append(union)
    rows = []
    seqs = {k[0] for st in steps for k in st} or {0}
    for f in factors:
        cap = max(1, math.ceil(f * mean_pages))
        for pol in TIER_POLICIES:
            t = TieredPageCache(cap, pol)
            for st in steps:
                for (seq, layer), (n, pages) in st.items():
                    t.access(seq, layer, n, sorted(pages), page_bytes)
            c = t.totals
            rows.append({"factor": f, "tier_pages": cap, "tier_policy": pol, "hit_rate": c.hit_rate,
                         "misses_per_step": c.misses / max(len(steps), 1),
                         "mb_moved_per_seq_step": c.bytes_moved / 2**20 / max(len(steps), 1) / len(seqs)})
    return rows


def evaluate(model, tok, tokens: np.ndarray, spec: EvalSpec, device="cpu", progress: bool = True,
             dtype: torch.dtype = torch.float32) -> list[RunResult]:
    spec.validate()
    max_pos = getattr(model.config, "max_position_embeddings", None)
    if max_pos is not None and spec.context > max_pos:
        raise ConfigError("--context", f"{spec.context} exceeds the model's max_position_embeddings {max_pos}")
    tasks = build_tasks(tok, tokens, spec)
    configs = []
    for p in spec.policies:
        for b in ([None] if p == "dense" else spec.budgets):
            for tp in (spec.top_ps if p == "adaptive" else [None]):
                configs.append((p, b, tp))
    steps = max(len(t.feed) for t in tasks)
    results: list[RunResult] = []
    bar = tqdm(total=len(spec.block_sizes) * len(configs) * steps, desc="eval selection", unit="step",
               disable=not progress)
    for bs in spec.block_sizes:
        bar.set_postfix_str(f"block {bs}: prefill")
        pre = _Prefilled(model, tasks, bs, device, dtype)
        dense_argmax = None
        dense = None
        for policy, budget, top_p in configs:
            bar.set_postfix_str(f"block {bs}: {policy} {budget or ''}".strip())
            sel = _make_selector(policy, budget, top_p, spec)
            t0 = time.perf_counter()
            nll, argmax, events = pre.run(None if policy == "dense" else sel, bar)
            secs = time.perf_counter() - t0
            if policy == "dense":
                dense_argmax = argmax
            sc = _score(tasks, nll, argmax, dense_argmax)
            st = _selection_stats(sel)
            per_layer = st.pop("per_layer_mass_recall", None)
            extra = {"per_layer_mass_recall": per_layer} if per_layer else {}
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


# ---- verdicts, reports ---------------------------------------------------------------

def check_targets(results: list[RunResult], reference_block: int = 16) -> list[dict]:
    """The issue's targets, each with the figures it was judged on."""
    bs = reference_block if any(r.block_size == reference_block for r in results) else results[0].block_size
    at = {(r.policy, r.budget): r for r in results if r.block_size == bs}
    out = []
    q = at.get(("quest", "1/8"))
    if q is not None:
        out.append({"target": "quest @1/8: perplexity within 2% of dense", "block_size": bs,
                    "value": q.ppl_vs_dense, "met": q.ppl_vs_dense is not None and q.ppl_vs_dense <= 0.02})
        out.append({"target": "quest @1/8: pass-key accuracy within 2 points of dense", "block_size": bs,
                    "value": q.passkey_vs_dense,
                    "met": q.passkey_vs_dense is not None and q.passkey_vs_dense >= -0.02})
        out.append({"target": "quest @1/8: attention-mass recall >= 0.9", "block_size": bs,
                    "value": q.mass_recall, "met": q.mass_recall >= 0.9})
    q = at.get(("quest", "1/8"))
    ada = [r for r in results if r.block_size == bs and r.policy == "adaptive" and r.mean_pages]
    if q is not None and q.mean_pages and ada:
        # "the same accuracy": perplexity within 1 point and pass-key within 2 points of quest's
        same = [a for a in ada if _no_worse(a.ppl_vs_dense, q.ppl_vs_dense, 0.01, higher_is_better=False)
                and _no_worse(a.passkey_vs_dense, q.passkey_vs_dense, 0.02, higher_is_better=True)]
        best = min(same, key=lambda a: a.mean_pages, default=None)
        fewer = None if best is None else 1.0 - best.mean_pages / q.mean_pages
        out.append({"target": "adaptive: quest @1/8's accuracy with >= 20% fewer pages", "block_size": bs,
                    "value": {"fewer_pages": fewer,
                              "adaptive": None if best is None else f"cap {best.budget}, top_p {best.top_p}",
                              "quest_pages": q.mean_pages, "adaptive_pages": best and best.mean_pages},
                    "met": fewer is not None and fewer >= 0.2})
    for p in ("streaming", "h2o"):
        r = at.get((p, "1/8"))
        if r is not None and r.passkey_vs_dense is not None:
            out.append({"target": f"{p} @1/8: pass-key vs dense (report; Quest finds it fails)", "block_size": bs,
                        "value": r.passkey_vs_dense, "met": None})
    r = at.get(("oracle", "1/8"))
    if r is not None:  # what the best ranking reaches: separates quest's ranking error from the budget's cost
        out.append({"target": "oracle @1/8: the best page ranking at this budget (report)", "block_size": bs,
                    "value": {"ppl_vs_dense": r.ppl_vs_dense, "passkey_vs_dense": r.passkey_vs_dense,
                              "mass_recall": r.mass_recall}, "met": None})
    return out


def _no_worse(a, b, tol, higher_is_better: bool) -> bool:
    if a is None or b is None:
        return a is None and b is None
    return a >= b - tol if higher_is_better else a <= b + tol


def _fmt(v, pct=False, digits=3):
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "-"
    if pct:
        return f"{100 * v:+.1f}%"
    return f"{v:.{digits}f}" if isinstance(v, float) else str(v)


def _label(r: RunResult) -> str:
    return r.policy if r.top_p is None else f"{r.policy} p={r.top_p:g}"


def markdown_table(results: list[RunResult]) -> str:
    head = ("| block | policy | budget | perplexity | vs dense | pass-key | vs dense | agreement | "
            "mass recall | oracle mass | sel. recall | pages | violations |")
    lines = [head, "|" + "---|" * 13]
    for r in results:
        lines.append(
            f"| {r.block_size} | {_label(r)} | {r.budget or 'all'} | {_fmt(r.perplexity)} | "
            f"{_fmt(r.ppl_vs_dense, pct=True)} | {_fmt(r.passkey_accuracy, digits=2)} | "
            f"{_fmt(r.passkey_vs_dense, pct=True)} | {_fmt(r.agreement)} | {_fmt(r.mass_recall)} | "
            f"{_fmt(r.oracle_mass)} | "
            f"{_fmt(r.selection_recall)} | {100 * r.pages_frac:.1f}% | {r.bound_violations} |")
    return "\n".join(lines)


def tier_table(results: list[RunResult]) -> str:
    """LRU vs LFU on the same selections (replayed), per run that recorded them."""
    lines = ["| block | policy | budget | fast-tier pages | LRU hit rate | LFU hit rate | "
             "LRU MiB/seq/step | LFU MiB/seq/step |", "|" + "---|" * 8]
    for r in results:
        rows = r.extra.get("tiers") or []
        for f in dict.fromkeys(x["factor"] for x in rows):
            by = {x["tier_policy"]: x for x in rows if x["factor"] == f}
            lru, lfu = by["lru"], by["lfu"]
            lines.append(f"| {r.block_size} | {_label(r)} | {r.budget} | {lru['tier_pages']} ({f:g}x) | "
                         f"{lru['hit_rate']:.3f} | {lfu['hit_rate']:.3f} | {lru['mb_moved_per_seq_step']:.3f} | "
                         f"{lfu['mb_moved_per_seq_step']:.3f} |")
    return "\n".join(lines) if len(lines) > 2 else ""


def write_plots(results: list[RunResult], out_dir: str | Path) -> list[str]:
    """Per block size, four panels of accuracy against the share of pages attended."""
    import matplotlib
    import matplotlib.ticker
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    panels = (("ppl_vs_dense", "perplexity vs dense (+%)", 100.0), ("passkey_accuracy", "pass-key accuracy", 1.0),
              ("mass_recall", "attention-mass recall", 1.0), ("agreement", "greedy agreement with dense", 1.0))
    files = []
    for bs in sorted({r.block_size for r in results}):
        fig, axes = plt.subplots(2, 2, figsize=(10, 7.5))
        rows = [r for r in results if r.block_size == bs]
        dense = next((r for r in rows if r.policy == "dense"), None)
        for ax, (metric, title, scale) in zip(axes.flat, panels):
            for policy in dict.fromkeys(_label(r) for r in rows):
                if policy == "dense":
                    continue
                pts = sorted((100 * r.pages_frac, getattr(r, metric), r.budget) for r in rows
                             if _label(r) == policy and getattr(r, metric) is not None)
                if not pts:
                    continue
                ax.plot([p[0] for p in pts], [p[1] * scale for p in pts], marker="o", label=policy)
                labels: dict[tuple[float, float], list[str]] = {}
                for x, y, b in pts:  # budgets that land on one point (256 = 1/8 of 2048) share a label
                    labels.setdefault((x, y), []).append(b)
                for (x, y), bs_ in labels.items():
                    ax.annotate("=".join(bs_), (x, y * scale), fontsize=7, textcoords="offset points",
                                xytext=(3, 3))
            if dense is not None and getattr(dense, metric) is not None:
                ax.axhline(getattr(dense, metric) * scale, color="k", ls="--", lw=1, label="dense")
            ax.set_xscale("log")
            ax.xaxis.set_major_locator(matplotlib.ticker.LogLocator(subs=(1.0, 2.0, 5.0)))
            ax.xaxis.set_major_formatter(matplotlib.ticker.FuncFormatter(lambda v, _: f"{v:g}"))
            ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
            ax.set_xlabel("pages attended (% of context, sparse layers)")
            ax.set_title(title)
            ax.grid(alpha=0.3)
        axes.flat[0].legend(fontsize=8)
        fig.suptitle(f"Page selection accuracy vs budget (block size {bs})")
        fig.tight_layout()
        f = out / f"selection_accuracy_bs{bs}.png"
        fig.savefig(f, dpi=110)
        plt.close(fig)
        files.append(str(f))
    return files


def machine(device) -> str:
    from ..bench.machine import describe
    return describe(device)


# ---- CLI ---------------------------------------------------------------------------------

def add_parser(subparsers):
    p = subparsers.add_parser("selection", help="accuracy of page-selection policies vs dense",
                              description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default=None, help="model folder (default: the shipped model)")
    p.add_argument("--json", default=None, help="write every result here")
    p.add_argument("--md", default=None, help="write the Markdown table and target verdicts here")
    p.add_argument("--plots", default=None, help="folder for accuracy-vs-budget PNGs")
    p.add_argument("--quick", action="store_true", help="small sweep for a 2-core CPU (a few minutes)")
    p.add_argument("--policies", default=None, help=f"comma list (default: {','.join(ALL_POLICIES)})")
    p.add_argument("--budgets", default=None, help=f"comma list of tokens or fractions (default: {','.join(FULL_BUDGETS)})")
    p.add_argument("--block-sizes", default=None, help="comma list (default: 8,16,32)")
    p.add_argument("--context", type=int, default=None, help="tokens per sample (default 2048; quick 1024)")
    p.add_argument("--decode-tokens", type=int, default=None, help="teacher-forced decode steps per text sample")
    p.add_argument("--text-samples", type=int, default=None)
    p.add_argument("--passkey-samples", type=int, default=None)
    p.add_argument("--top-p", default=None, help="adaptive policy's mass targets, comma list (default 0.95,0.99; quick 0.99)")
    p.add_argument("--dense-layers", type=int, default=None, help="first layers left dense (default 2)")
    p.add_argument("--sink-pages", type=int, default=None,
                   help="attention-sink pages every sparse policy keeps (default: each policy's own)")
    p.add_argument("--tier-factors", default=None,
                   help="fast-tier sizes to replay, as multiples of the mean pages selected (default 2,4; '' = none)")
    p.add_argument("--data-dir", default=None, help="train-lm corpus folder with heldout_docs.npy")
    p.add_argument("--heldout-frac", type=float, default=0.05, help="the training run's held-out fraction")
    p.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    p.add_argument("--dtype", default="float32", choices=tuple(DTYPES),
                   help="model and KV cache dtype (the CUDA attention kernels serve fp16/bf16)")
    p.add_argument("--threads", type=int, default=1,
                   help="CPU threads (default 1: these per-sequence ops are small, extra threads only spin)")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=run)
    return p


def _csv(field, value, conv):
    try:
        return tuple(conv(x.strip()) for x in value.split(",") if x.strip())
    except ValueError:
        raise ConfigError(field, f"expected a comma-separated list, got {value!r}") from None


def spec_from_args(args) -> EvalSpec:
    spec = EvalSpec.quick() if args.quick else EvalSpec()
    if args.policies:
        spec.policies = _csv("--policies", args.policies, str)
    if args.budgets:
        spec.budgets = _csv("--budgets", args.budgets, str)
    if args.block_sizes:
        spec.block_sizes = _csv("--block-sizes", args.block_sizes, int)
    if args.tier_factors is not None:
        spec.tier_factors = _csv("--tier-factors", args.tier_factors, float)
    if args.top_p is not None:
        spec.top_ps = _csv("--top-p", args.top_p, float)
    for name in ("context", "decode_tokens", "text_samples", "passkey_samples", "dense_layers", "sink_pages"):
        v = getattr(args, name)
        if v is not None:
            setattr(spec, name, v)
    spec.seed = args.seed
    return spec.validate()


def run(args) -> int:
    from ..model.loader import default_model_dir, load_model
    spec = spec_from_args(args)
    if args.threads is not None:
        if args.threads < 1:
            raise ConfigError("--threads", f"must be >= 1, got {args.threads}")
        torch.set_num_threads(args.threads)
    device = "cuda" if args.device == "auto" and torch.cuda.is_available() else (
        "cpu" if args.device == "auto" else args.device)
    if device == "cuda" and not torch.cuda.is_available():
        raise ConfigError("--device", "cuda requested but no CUDA device is available")
    model_dir = Path(args.model) if args.model else default_model_dir()
    dtype = DTYPES[args.dtype]
    model, tok = load_model(model_dir, device=device, dtype=dtype)
    tokens, source = heldout_tokens(tok, args.data_dir, args.heldout_frac)
    t0 = time.perf_counter()
    results = evaluate(model, tok, tokens, spec, device=device, dtype=dtype)
    wall = time.perf_counter() - t0
    verdicts = check_targets(results)
    table = markdown_table(results)
    tiers = tier_table(results)
    print(table)
    if tiers:
        print("\nTwo-tier page cache (selections replayed; residency accounting, no copies):\n" + tiers)
    for v in verdicts:
        met = {True: "met", False: "MISSED", None: "reported"}[v["met"]]
        print(f"- {v['target']} (block {v['block_size']}): {met}: {json.dumps(v['value'])}")
    info = {"model": str(model_dir), "machine": machine(device), "device": device, "dtype": args.dtype,
            "text_source": source,
            "spec": asdict(spec), "wall_s": wall, "torch": torch.__version__}
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps({**info, "results": [asdict(r) for r in results],
                                               "targets": verdicts}, indent=1) + "\n")
    plots = write_plots(results, args.plots) if args.plots else []
    if args.md:
        lines = [f"# Page-selection accuracy ({model_dir.name})", "",
                 f"Machine: {info['machine']}; text: {source}; context {spec.context}, "
                 f"{spec.text_samples} text x {spec.decode_tokens} decode tokens, {spec.passkey_samples} pass-key "
                 f"samples; first {spec.dense_layers} layers dense; sink pages "
                 f"{'policy default' if spec.sink_pages is None else spec.sink_pages}; adaptive top_p "
                 f"{', '.join(f'{p:g}' for p in spec.top_ps)} "
                 f"(budget = its cap). "
                 f"Wall time {wall:.0f} s.", "", table, ""]
        if tiers:
            lines += ["## Two-tier page cache", "",
                      "Each run's selections (union over kv-heads per sequence and layer) replayed through a "
                      "fast tier of the given size per (sequence, layer); a miss fetches one page (K+V, all "
                      "kv-heads, cache dtype). Residency accounting: nothing is copied.", "", tiers, ""]
        lines += ["## Targets", ""]
        for v in verdicts:
            met = {True: "met", False: "**missed**", None: "reported"}[v["met"]]
            lines.append(f"- {v['target']} (block {v['block_size']}): {met} - `{json.dumps(v['value'])}`")
        lines += [""] + [f"![{Path(f).stem}]({Path(f).resolve()})" for f in plots]
        Path(args.md).parent.mkdir(parents=True, exist_ok=True)
        Path(args.md).write_text("\n".join(lines) + "\n")
    return 0
