"""`quest`: query-aware top-k pages (Quest, Tang et al. 2024).

Each page is ranked by its bounding-box upper bound on the attention logit,
`kernels.page_scores` (query heads of a GQA group aggregated by max), and the top
pages within the budget are kept. The page being written and the optional sink pages
are always kept and count against the budget; the first `dense_layers` layers attend
densely, as Quest does (their attention is too flat for the bound to rank well)."""

from __future__ import annotations

from .. import kernels
from .base import TopPagesParams, TopPagesPolicy

QuestParams = TopPagesParams  # the plain top-pages knobs: budget, sink_pages (0), dense_layers


class QuestPolicy(TopPagesPolicy):
    name = "quest"
    Params = QuestParams
    fuses_attention = True

    def rank(self, ctx, num_pages, max_pages):
        scores = kernels.page_scores(ctx.query, ctx.meta, ctx.block_tables, ctx.seq_lens,
                                     ctx.scale, ctx.block_size, ctx.kv_scales)  # [B, Hkv, M], -inf past context
        return scores, scores
