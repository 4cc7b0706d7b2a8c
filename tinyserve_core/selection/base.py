"""What every policy shares: the per-call context, the result, live parameters.

A policy turns one decode step of one layer into `page_indices[B, Hkv, S]` (logical
page numbers, ascending, -1 padding) or None for dense. Parameters live in a frozen
dataclass that `update(**params)` validates and swaps whole (all or none), so a
running engine is retuned between steps and a step always sees one consistent set."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Callable, ClassVar

import torch

from .. import kernels
from ..errors import ConfigError
from ..kernels.ranking import forced_pages, take_top, tokens_per_page, top_p_pages  # noqa: F401 (re-exported)
from .params import Budget, check_int


@dataclass(slots=True)
class SelectContext:
    """One layer of one decode step, as the model runner hands it over."""
    query: torch.Tensor          # [B, Hq, D], post-RoPE, the query the attention uses
    k_cache: torch.Tensor        # [NB, bs, Hkv, D] this layer's cache
    v_cache: torch.Tensor
    meta: torch.Tensor           # [NB, 2, Hkv, D] key min/max per page
    block_tables: torch.Tensor   # [B, M] int32
    seq_lens: torch.Tensor       # [B] int32, context length including the new token
    seq_ids: list[int]
    layer_idx: int
    scale: float
    block_size: int
    qkeys: torch.Tensor | None = None  # [NB, bs, Hkv, D*bits/8] uint8, for policies that ask for it
    qbounds: torch.Tensor | None = None  # [NB, Hkv, 2D + 32] uint8, the int8 bound copy kept with qkeys
    # An FP8 cache's [NB, 2, Hkv] page scales (meta then holds e4m3 codes under the K scales);
    # kernels.page_scores takes them with meta.
    kv_scales: torch.Tensor | None = None
    # The caller takes the attention output with the selection: a policy that can compute
    # both in one launch (quest: kernels.sparse_decode_attention) sets Selection.output.
    attend: bool = False

    @property
    def num_kv_heads(self) -> int:
        return self.meta.shape[2]

    def num_pages(self) -> torch.Tensor:
        """int64 [B]: pages holding each sequence's context."""
        return (self.seq_lens.long() + self.block_size - 1) // self.block_size


@dataclass(frozen=True, slots=True)
class Selection:
    """A policy's answer. `page_indices` None means every page (dense). The optional
    tensors feed statistics: `scores` [B,Hkv,M] the page bounds, `budget_pages` [B,Hkv]
    the budget the policy chose, `entropy` [B,Hkv] of its mass estimate (nats),
    `candidates` [B,Hkv,C] the pages a two-stage policy's first stage kept (-1 pad),
    `output` the attention over `page_indices` when the policy computed it too.
    `exempt` marks a layer the policy never selects on (dense policy, the first
    dense layers): statistics and tiers leave it out, it keeps its whole context."""
    page_indices: torch.Tensor | None
    scores: torch.Tensor | None = None
    budget_pages: torch.Tensor | None = None
    entropy: torch.Tensor | None = None
    exempt: bool = False
    candidates: torch.Tensor | None = None
    output: torch.Tensor | None = None  # [B, Hq, D] attention over page_indices (SelectContext.attend)


EXEMPT = Selection(None, exempt=True)


class Policy:
    """Base of the selection policies. Subclasses set `name`, a frozen `Params`
    dataclass and `_validators` (field -> callable(field, value) -> clean value)."""

    name: ClassVar[str] = "policy"
    Params: ClassVar[type]
    # True when select() only queues GPU work decided by host values that depend on the
    # shapes and parameters alone, so a CUDA graph of the decode step can include it.
    graph_safe: ClassVar[bool] = True
    # Bits of the quantised key copy the policy reads (SelectContext.qkeys), or None.
    quant_key_bits: int | None = None
    # Whether the policy reads a quantised key copy at any parameters (its class's answer
    # for quant_key_bits, which may depend on them), which an FP8 cache does not keep.
    reads_key_copy: ClassVar[bool] = False
    # Whether select() reads the page key bounds (SelectContext.meta).
    reads_bounds: ClassVar[bool] = True
    # Whether select() reads the cached keys themselves (true attention: h2o, oracle), a
    # dense pass over the context each step (over an FP8 cache: the codes dequantised).
    reads_keys: ClassVar[bool] = False
    _validators: ClassVar[dict[str, Callable[[str, Any], Any]]] = {}

    def __init__(self, **params):
        self._params = self.Params()
        if params:
            self.update(**params)

    @property
    def params(self):
        return self._params

    def update(self, **params) -> None:
        """Validate and apply new parameter values atomically (all or none)."""
        clean = {}
        for key, value in params.items():
            check = self._validators.get(key)
            if check is None:
                allowed = ", ".join(sorted(self._validators)) or "none"
                raise ConfigError(key, f"not a parameter of the {self.name} policy (allowed: {allowed})")
            clean[key] = check(key, value)
        new = dataclasses.replace(self._params, **clean)
        self._check_params(new)
        self._params = new

    def _check_params(self, p) -> None:
        """Cross-field checks; raise ConfigError naming the field."""

    def describe(self) -> dict:
        out = {"policy": self.name}
        for f in dataclasses.fields(self._params):
            v = getattr(self._params, f.name)
            out[f.name] = str(v) if isinstance(v, Budget) else v
        return out

    def select(self, ctx: SelectContext) -> Selection:
        raise NotImplementedError

    def forget(self, seq_id: int) -> None:
        """Drop per-sequence state (only stateful policies keep any)."""


def dense_layers_validator(field: str, value) -> int:
    return check_int(field, value, 0)


def budget_validator(field: str, value) -> Budget:
    return Budget.parse(field, value)


# The ranking helpers shared by the top-k style policies live beside the kernels (the
# twostage reference uses them too); re-exported here for the policies.


@dataclass(frozen=True, slots=True)
class TopPagesParams:
    """The knobs of every top-pages policy (a policy with other defaults subclasses it)."""
    budget: Budget = Budget(fraction=0.125)
    sink_pages: int = 0
    dense_layers: int = 2


class TopPagesPolicy(Policy):
    """Keeps, per (sequence, kv-head), the budget's worth of highest-ranked pages; the
    sink pages and the page being written always stay and count against the budget,
    and the first `dense_layers` layers attend densely. Subclasses give the ranking."""

    Params = TopPagesParams
    _validators = {
        "budget": budget_validator,
        "sink_pages": lambda f, v: check_int(f, v, 0),
        "dense_layers": dense_layers_validator,
    }

    # True when rank() is the Quest page bound, which kernels.sparse_decode_attention
    # ranks by as well (the policy then hands the attention over with the pages).
    fuses_attention: ClassVar[bool] = False

    def rank(self, ctx: SelectContext, num_pages: torch.Tensor, max_pages: int):
        """(keys [B, Hkv, M]: higher = kept first, -inf never; scores to report or None)."""
        raise NotImplementedError

    def select(self, ctx: SelectContext) -> Selection:
        p = self.params
        if ctx.layer_idx < p.dense_layers:
            return EXEMPT
        M = ctx.block_tables.shape[1]
        if p.budget.covers(M, ctx.block_size):  # decided on the host: no sync, exact dense
            return Selection(None)
        n = ctx.num_pages()
        B, H = ctx.query.shape[0], ctx.num_kv_heads
        forced = forced_pages(n, M, p.sink_pages)
        k = torch.minimum(torch.maximum(p.budget.pages(ctx.seq_lens, ctx.block_size), forced.sum(-1)), n)
        budget = k[:, None].expand(B, H)
        kmax = max(p.budget.max_pages(M, ctx.block_size), p.sink_pages + 1)
        if (self.fuses_attention and ctx.attend and p.budget.tokens is not None
                and kernels.sparse_decode_one_launch(ctx.query, ctx.k_cache, ctx.block_tables, kmax)):
            # the same pages as below and the attention over them in one launch (where the
            # GPU's tuning row says it beats three; else the step's selection and attention
            # stay apart, and so do their timings)
            out, pages, scores = kernels.sparse_decode_attention(
                ctx.query, ctx.k_cache, ctx.v_cache, ctx.meta, ctx.block_tables, ctx.seq_lens, ctx.scale, kmax,
                p.sink_pages, force_last=True)
            return Selection(pages, scores=scores, budget_pages=budget, output=out)
        keys, scores = self.rank(ctx, n, M)
        keys = keys.masked_fill(forced[:, None, :], float("inf"))
        if keys.is_cuda and p.budget.tokens is not None:
            # A token budget gives every row the same k (>= its forced pages), so
            # the k best keys (pages past the context score -inf and come out as -1) are
            # exactly take_top's set: one select_pages launch instead of topk + sort.
            return Selection(kernels.select_pages(keys, kmax), scores=scores, budget_pages=budget)
        return Selection(take_top(keys, budget, kmax), scores=scores, budget_pages=budget)
