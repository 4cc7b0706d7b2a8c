"""`streaming`: attention sinks + a recent window (StreamingLLM, Xiao et al. 2023),
at page granularity. Query-blind: every kv-head keeps the first `sink_pages` pages
and the most recent pages that fill the rest of the budget."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .base import TopPagesParams, TopPagesPolicy


@dataclass(frozen=True, slots=True)
class StreamingParams(TopPagesParams):
    sink_pages: int = 1  # StreamingLLM's attention sink: the first page always stays


class StreamingPolicy(TopPagesPolicy):
    name = "streaming"
    Params = StreamingParams

    def rank(self, ctx, num_pages, max_pages):
        # recency is the key: later pages rank higher, padding never
        B = num_pages.shape[0]
        pos = torch.arange(max_pages, device=num_pages.device, dtype=torch.float32)[None, :].expand(B, max_pages)
        pos = pos.masked_fill(pos >= num_pages[:, None].float(), float("-inf"))
        return pos[:, None, :].expand(B, ctx.num_kv_heads, max_pages), None
