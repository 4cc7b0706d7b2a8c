"""`oracle`: the pages holding the most true attention mass, within the same budget.

Each page is ranked by the softmax mass the current query actually puts on it (query
heads of a GQA group summed); the page being written and the sink pages stay, as for
quest. It computes the full attention of every decode query, so it is a measuring
stick, not a fast path: what the best possible page ranking reaches at a budget, which
separates a policy's ranking error from the budget's own cost."""

from __future__ import annotations

import torch

from .base import TopPagesPolicy
from .true_attention import attention_logits, context_keys, page_mass
from .quest import QuestParams


class OraclePolicy(TopPagesPolicy):
    name = "oracle"
    graph_safe = False  # per-sequence work on the host every step
    Params = QuestParams  # the same knobs as quest, so the two compare at equal settings

    def rank(self, ctx, num_pages, max_pages):
        B, H = ctx.query.shape[0], ctx.num_kv_heads
        group = ctx.query.shape[1] // H
        keys = torch.full((B, H, max_pages), float("-inf"), device=ctx.query.device)
        for b, n in enumerate(num_pages.tolist()):
            L = int(ctx.seq_lens[b])
            logits = attention_logits(ctx.query[b], context_keys(ctx.k_cache, ctx.block_tables[b], L), ctx.scale)
            keys[b, :, :n] = page_mass(logits, ctx.block_size).view(H, group, n).sum(1)
        return keys, None
