"""The object the model runner calls at each decode step for each layer.

`PageSelector` holds the live policy, the optional two-tier cache and the optional
statistics; every piece can be swapped or retuned between steps while the engine
runs (`set_policy` / `update` / `set_tiers` / `set_stats`). Like everything the
engine holds, it is used from the engine's loop only (see Engine), so no lock.

Statistics and tier accounting go through a StatsRecorder (selection/recorder.py):
device work during the step, host work one step later. The runner calls `end_step`
after each decode forward (and hands captured outputs back with `adopt` after a graph
replay); the engine calls `collect` once the next step is launched."""

from __future__ import annotations

import torch

from ..kv.tiers import TieredPageCache
from .base import Policy, SelectContext
from ..errors import ConfigError
from .registry import POLICIES, make_policy
from .recorder import StatsRecorder
from .stats import SelectionSummary


class PageSelector:
    def __init__(self, policy: str | Policy = "dense", *, tier_pages: int | None = None,
                 tier_policy: str = "lru", tier_decay: float = 0.9, stats: bool = False, **params):
        self._policy = policy if isinstance(policy, Policy) else make_policy(policy, **params)
        if isinstance(policy, Policy) and params:
            self._policy.update(**params)
        self._tiers = None if tier_pages is None else TieredPageCache(tier_pages, tier_policy, tier_decay)
        self._stats_on = bool(stats)
        self._recorder: StatsRecorder | None = None
        self._sync_recorder()
        self._qkeys_for: tuple | None = None   # (policy, cache, bits) whose quantised copy is current

    # ---- live configuration -------------------------------------------------------
    @property
    def policy(self) -> Policy:
        return self._policy

    @property
    def tiers(self) -> TieredPageCache | None:
        return self._tiers

    @property
    def stats(self) -> StatsRecorder | None:
        """The recorder when statistics are on (its `history` holds the summaries)."""
        r = self._recorder
        return r if r is not None and r.stats else None

    def _sync_recorder(self) -> None:
        """A recorder exists while statistics or tiers are on; switching what it
        computes first delivers what is in flight."""
        want = self._stats_on or self._tiers is not None
        r = self._recorder
        if r is not None and (not want or r.stats != self._stats_on):
            r.flush(self._tiers)
            self._recorder = r = None
        if want and r is None:
            self._recorder = StatsRecorder(self._stats_on)

    def set_policy(self, name: str, **params) -> None:
        """Switch policy (validated before anything changes). Per-sequence state of
        the old policy is dropped with it."""
        new = make_policy(name, **params)
        self._policy = new

    def update(self, **params) -> None:
        """Apply engine-level settings live: `policy` (switch), `tier_pages` (0 or None
        = no tiers), `tier_policy`, `tier_decay`, `stats`, and policy parameters. A
        parameter that the current policy does not take (top_p_mass under quest) is checked
        and kept for nothing; one that no policy takes is an error. Everything is
        validated before anything changes."""
        name = params.pop("policy", None)
        tier_keys = {k: params.pop(k) for k in ("tier_pages", "tier_policy", "tier_decay") if k in params}
        stats = params.pop("stats", None)
        for key, value in params.items():
            params[key] = shared_validator(key)(key, value)
        if stats is not None and not isinstance(stats, bool):
            raise ConfigError("stats", f"must be true or false, got {stats!r}")
        current, tiers = self._policy, self._tiers
        cap = pol = dec = None
        if tier_keys:
            cap = tier_keys.get("tier_pages", tiers.capacity_pages if tiers else None)
            pol = tier_keys.get("tier_policy", tiers.policy if tiers else "lru")
            dec = tier_keys.get("tier_decay", tiers.decay if tiers else 0.9)
            if cap is not None and not isinstance(cap, bool) and cap == 0:
                cap = None
            TieredPageCache._validate(1 if cap is None else cap, pol, dec)
        new_policy = current
        if name is not None and name.strip().lower() != current.name:
            new_policy = make_policy(name)
        own = {k: v for k, v in params.items() if k in new_policy._validators}
        new_policy.update(**own)  # atomic; the last step that can fail
        new_tiers = tiers
        if tier_keys:
            if cap is None:
                new_tiers = None
            elif tiers is None:
                new_tiers = TieredPageCache(cap, pol, dec)
            else:
                tiers.update(cap, pol, dec)
        if new_tiers is not tiers and self._recorder is not None:
            self._recorder.flush(tiers)   # account what is in flight with the tiers it ran under
        self._policy, self._tiers = new_policy, new_tiers
        if stats is not None:
            self.set_stats(stats)
        self._sync_recorder()

    def set_tiers(self, tier_pages: int | None, tier_policy: str = "lru", tier_decay: float = 0.9) -> None:
        new = None if tier_pages is None else TieredPageCache(tier_pages, tier_policy, tier_decay)
        if self._recorder is not None:
            self._recorder.flush(self._tiers)
        self._tiers = new
        self._sync_recorder()

    def set_stats(self, enabled: bool) -> None:
        self._stats_on = bool(enabled)
        self._sync_recorder()

    # ---- the recorder's step protocol ---------------------------------------------------
    def end_step(self, seq_ids=None) -> None:
        """The decode forward of `seq_ids` is queued: start copying its bookkeeping."""
        if self._recorder is not None:
            self._recorder.end_step(seq_ids)

    def take_pending(self) -> dict:
        return {} if self._recorder is None else self._recorder.take_pending()

    def adopt(self, pending: dict) -> None:
        if self._recorder is not None and pending:
            self._recorder.adopt(pending)

    def collect(self, keep_newest: bool = False) -> list[SelectionSummary]:
        """Summaries of finished steps (tier accounting done on the way; each carries
        its step's records as columns, `.detail`), oldest first, each once; `keep_newest` leaves the step just launched in flight."""
        r = self._recorder
        return [] if r is None else r.collect(self._tiers, keep_newest)

    def take_summary(self) -> SelectionSummary | None:
        """Everything recorded so far, delivered now (waits for the copies): the newest
        step's summary, or None without statistics. For callers outside the engine."""
        r = self._recorder
        if r is None:
            return None
        got = r.flush(self._tiers)
        return got[-1] if got else None

    def forget(self, seq_id: int) -> None:
        """A sequence finished or was preempted: drop its policy and tier state (the
        tier state once the steps still in flight are accounted)."""
        self._policy.forget(seq_id)
        if self._recorder is not None:
            self._recorder.forget(seq_id, self._tiers)
        elif self._tiers is not None:
            self._tiers.forget(seq_id)

    def graph_key(self):
        """What a captured decode step bakes in (the policy, its parameters and whether
        statistics or tier bookkeeping are recorded: all device work, hashable), or None
        when selection must run on the host every step (`graph_safe` False: h2o, oracle)."""
        if not self._policy.graph_safe:
            return None
        r = self._recorder
        return (self._policy.name, self._policy.params, None if r is None else ("recorded", r.stats, r.rtol))

    @property
    def width_bound(self) -> bool:
        """Whether the captured per-step work grows with the block table's width, not
        with the contexts (statistics: a dense pass over every page of the table): the
        runner's CUDA graphs then fit the width to the step's longest table."""
        return self.stats is not None

    def describe(self) -> dict:
        out = self._policy.describe()
        t = self._tiers
        out.update(tier_pages=None if t is None else t.capacity_pages,
                   tier_policy=None if t is None else t.policy, stats=self._stats_on)
        return out

    # ---- the runner hooks -----------------------------------------------------------
    def prepare(self, kv):
        """Make the quantised key copy the policy reads current (host work; the runner calls
        it before every decode step, so a captured step never meets a stale copy and never
        captures the refresh). The copy is re-quantised whole the first time this policy
        (at these bits) meets this cache: steps run under another policy, or restored
        caches, may have bypassed it. Returns the copy (per layer) or None."""
        policy = self._policy
        bits = policy.quant_key_bits
        if bits is None:
            return None
        if not hasattr(kv, "ensure_quant_keys"):
            raise ValueError(f"the {policy.name} policy needs a KV cache that keeps quantised keys")
        last = self._qkeys_for
        fresh = last is not None and last[0] is policy and last[1] is kv and last[2] == bits
        copy = kv.ensure_quant_keys(bits, refresh=not fresh)
        self._qkeys_for = (policy, kv, bits)
        return copy

    def select(self, layer, query: torch.Tensor, kv, layer_idx: int, block_tables: torch.Tensor,
               seq_lens: torch.Tensor, seq_ids) -> torch.Tensor | None:
        """The pages this layer attends (None: all)."""
        return self.select_attend(layer, query, kv, layer_idx, block_tables, seq_lens, seq_ids, attend=False)[0]

    def select_attend(self, layer, query: torch.Tensor, kv, layer_idx: int, block_tables: torch.Tensor,
                      seq_lens: torch.Tensor, seq_ids, attend: bool = True):
        """(pages or None, the attention output over them or None): the output comes with
        the pages when the policy computes both in one launch (quest, where the GPU's
        tuning row enables it); else the caller attends."""
        policy, recorder = self._policy, self._recorder
        metas = getattr(kv, "metas", None)
        meta = None if metas is None else metas[layer_idx]
        if meta is None and policy.reads_bounds:
            raise ValueError(f"the {policy.name} policy needs the KV cache's page key bounds (kv.metas)")
        scales = getattr(kv, "kv_scales", None)
        k_cache = kv.k_caches[layer_idx]
        copy = self.prepare(kv)
        qkeys = None if copy is None else copy[layer_idx]
        bounds = getattr(kv, "qbounds", None) if copy is not None else None
        ctx = SelectContext(
            query=query, k_cache=k_cache, v_cache=kv.v_caches[layer_idx], meta=meta,
            block_tables=block_tables, seq_lens=seq_lens, seq_ids=list(seq_ids),
            layer_idx=layer_idx, scale=_softmax_scale(layer, query.shape[-1]),
            block_size=int(k_cache.shape[1]), qkeys=qkeys, attend=attend,
            qbounds=None if bounds is None else bounds[layer_idx],
            kv_scales=None if scales is None else scales[layer_idx])
        sel = policy.select(ctx)
        if sel.exempt:
            return None, None
        if recorder is not None:
            recorder.record(ctx, sel, policy.name)
        return sel.page_indices, sel.output


def _softmax_scale(layer, head_dim: int) -> float:
    for name in ("scale", "scaling", "softmax_scale"):
        v = getattr(layer, name, None)
        if isinstance(v, (int, float)):
            return float(v)
    return head_dim ** -0.5


def shared_validator(key: str):
    """The validator of a policy parameter, whichever policy defines it."""
    for cls in POLICIES.values():
        if key in cls._validators:
            return cls._validators[key]
    known = sorted({k for c in POLICIES.values() for k in c._validators})
    raise ConfigError(key, f"not a selection parameter (known: {', '.join(known)})")


def build_selector(policy: str = "dense", *, tier_pages: int | None = 0,
                   tier_policy: str = "lru", tier_decay: float = 0.9, stats: bool = False,
                   **params) -> PageSelector:
    """The engine's constructor: engine-config keys in, a configured selector out.
    Parameters the chosen policy does not take are validated and otherwise ignored,
    so a config file can carry every key for every policy."""
    sel = PageSelector(make_policy(policy))
    sel.update(tier_pages=tier_pages, tier_policy=tier_policy, tier_decay=tier_decay,
               stats=bool(stats), **params)
    return sel
