"""`oracle`: the pages holding the most true attention mass, within the same budget.

Each page is ranked by the softmax mass the current query actually puts on it (query
heads of a GQA group summed); the page being written and the sink pages stay, as for
quest. It computes the full attention of every decode query, so it is a measuring
stick, not a fast path: what the best possible page ranking reaches at a budget, which
separates a policy's ranking error from the budget's own cost."""

from __future__ import annotations

import torch

from .base import TopPagesPolicy
from .true_attention import batched_page_mass
from .quest import QuestParams


class OraclePolicy(TopPagesPolicy):
    name = "oracle"
    # Batched tensor ops only, but not yet captured and checked in a CUDA graph: eager.
    graph_safe = False
    Params = QuestParams  # the same knobs as quest, so the two compare at equal settings

    def rank(self, ctx, num_pages, max_pages):
        mass = batched_page_mass(ctx)                                      # [B, H, M], batched
        valid = torch.arange(max_pages, device=mass.device)[None, :] < num_pages[:, None]
        return mass.masked_fill(~valid[:, None, :], float("-inf")), None
