"""A Llama-family decoder (Llama, Qwen2, Mistral) with Hugging Face parameter names.

Two ways to run it:
* `forward_dense(input_ids[B,T])` — causal attention over the batch with SDPA, no cache
  (training, evaluation). Works under autocast and torch.compile.
* `forward_paged(input_ids[N], positions[N], batch, kv)` — the serving path: tokens of
  several sequences packed along one axis, K/V written into the paged cache, attention
  over each sequence's pages (prefill) or the paged decode kernel (decode).
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from typing import Any, Callable

import torch
import torch.nn.functional as F
from torch import nn

from .. import kernels
from .config import ModelConfig
from ..kernels.fused_reference import rms_norm as rms_norm_math
from ..kernels.prefill_reference import sdpa
from .rope import apply_rope, rope_cos_sin, rope_inv_freq

_NO_TIMER = contextlib.nullcontext()


def _no_timer(_name: str):
    return _NO_TIMER


def serving_linear(layer: nn.Linear, x: torch.Tensor) -> torch.Tensor:
    """layer(x) through the kernels API (a kernel of its own for a decode step's few rows).
    Weights are not written while serving: the kernel may load them ahead of its input."""
    return kernels.linear(x, layer.weight, layer.bias, static_weight=True)


def selector_attend(selector, layer, query, kv, layer_idx, block_tables, seq_lens, seq_ids):
    """(pages or None, attention output or None) from a decode step's page-selection hook:
    `select_attend` when the hook has it (the engine's PageSelector: quest returns the attention
    with the pages where its one-launch kernel runs), else `select` (the plain hook contract: pages only)."""
    if hasattr(selector, "select_attend"):
        return selector.select_attend(layer, query, kv, layer_idx, block_tables, seq_lens, seq_ids)
    return selector.select(layer, query, kv, layer_idx, block_tables, seq_lens, seq_ids), None


class RMSNorm(nn.Module):
    def __init__(self, hidden_size: int, eps: float):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(hidden_size))
        self.variance_epsilon = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # Normalise in float32 and cast back before the weight, exactly as HF does, so
        # low-precision runs round like the reference model (plain torch: autocast and
        # torch.compile see through it; the serving path calls the fused op instead).
        return rms_norm_math(x, self.weight, self.variance_epsilon)


class LlamaMLP(nn.Module):
    def __init__(self, config: ModelConfig):
        super().__init__()
        h, i, b = config.hidden_size, config.intermediate_size, config.mlp_bias
        self.gate_proj = nn.Linear(h, i, bias=b)
        self.up_proj = nn.Linear(h, i, bias=b)
        self.down_proj = nn.Linear(i, h, bias=b)
        # set by fuse_projections; buffers so that .to() moves them with the weights
        self.register_buffer("gate_up_weight", None, persistent=False)
        self.register_buffer("gate_up_bias", None, persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))

    def forward_serving(self, x: torch.Tensor) -> torch.Tensor:
        """The same MLP through the kernels API: one gate/up product when the weights
        are fused (LlamaForCausalLM.fuse_projections), then fused SiLU-and-mul."""
        if self.gate_up_weight is not None:
            gate_up = kernels.linear(x, self.gate_up_weight, self.gate_up_bias, static_weight=True)
        else:
            gate_up = torch.cat((serving_linear(self.gate_proj, x), serving_linear(self.up_proj, x)), dim=-1)
        return serving_linear(self.down_proj, kernels.silu_and_mul(gate_up))


class LlamaAttention(nn.Module):
    def __init__(self, config: ModelConfig, layer_idx: int):
        super().__init__()
        self.layer_idx = layer_idx
        self.num_heads = config.num_attention_heads
        self.num_kv_heads = config.num_key_value_heads
        self.head_dim = config.head_dim
        self.scale = self.head_dim ** -0.5
        h, d, bias = config.hidden_size, config.head_dim, config.attention_bias
        self.q_proj = nn.Linear(h, self.num_heads * d, bias=bias)
        self.k_proj = nn.Linear(h, self.num_kv_heads * d, bias=bias)
        self.v_proj = nn.Linear(h, self.num_kv_heads * d, bias=bias)
        # o_proj has a bias only in Llama's attention_bias mode; Qwen2's never does.
        self.o_proj = nn.Linear(self.num_heads * d, h, bias=bias and config.model_type != "qwen2")
        self.register_buffer("qkv_weight", None, persistent=False)   # set by fuse_projections
        self.register_buffer("qkv_bias", None, persistent=False)

    def project(self, x: torch.Tensor):
        """Unrotated q [N, Hq, D], k, v [N, Hkv, D] of packed x [N, hidden]: one product
        when the weights are fused (q, k, v are then views of its output)."""
        if self.qkv_weight is None:
            return (serving_linear(self.q_proj, x).view(-1, self.num_heads, self.head_dim),
                    serving_linear(self.k_proj, x).view(-1, self.num_kv_heads, self.head_dim),
                    serving_linear(self.v_proj, x).view(-1, self.num_kv_heads, self.head_dim))
        qkv = kernels.linear(x, self.qkv_weight, self.qkv_bias, static_weight=True)
        nq, nkv = self.num_heads * self.head_dim, self.num_kv_heads * self.head_dim
        q, k, v = qkv.split((nq, nkv, nkv), dim=-1)
        return (q.view(-1, self.num_heads, self.head_dim), k.view(-1, self.num_kv_heads, self.head_dim),
                v.view(-1, self.num_kv_heads, self.head_dim))

    def qkv(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor):
        """Projected, rotated q [..., Hq, D] and k, v [..., Hkv, D] for x [..., hidden]."""
        lead = x.shape[:-1]
        q = self.q_proj(x).view(*lead, self.num_heads, self.head_dim)
        k = self.k_proj(x).view(*lead, self.num_kv_heads, self.head_dim)
        v = self.v_proj(x).view(*lead, self.num_kv_heads, self.head_dim)
        return apply_rope(q, cos, sin), apply_rope(k, cos, sin), v

    def forward_dense(self, x, cos, sin):
        B, T, _ = x.shape
        q, k, v = self.qkv(x, cos, sin)
        out = sdpa(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), None, True, self.scale)
        return self.o_proj(out.transpose(1, 2).reshape(B, T, -1))


class LlamaDecoderLayer(nn.Module):
    def __init__(self, config: ModelConfig, layer_idx: int):
        super().__init__()
        self.self_attn = LlamaAttention(config, layer_idx)
        self.mlp = LlamaMLP(config)
        self.input_layernorm = RMSNorm(config.hidden_size, config.rms_norm_eps)
        self.post_attention_layernorm = RMSNorm(config.hidden_size, config.rms_norm_eps)

    def forward_dense(self, x, cos, sin):
        x = x + self.self_attn.forward_dense(self.input_layernorm(x), cos, sin)
        return x + self.mlp(self.post_attention_layernorm(x))


class LlamaModel(nn.Module):
    def __init__(self, config: ModelConfig):
        super().__init__()
        self.embed_tokens = nn.Embedding(config.vocab_size, config.hidden_size)
        self.layers = nn.ModuleList(LlamaDecoderLayer(config, i) for i in range(config.num_hidden_layers))
        self.norm = RMSNorm(config.hidden_size, config.rms_norm_eps)
        self.config = config
        self.register_buffer("inv_freq", rope_inv_freq(config), persistent=False)

    def reset_rope(self) -> None:
        """Recompute the RoPE frequencies on the embedding's device (after a meta-device
        build or a load)."""
        self.inv_freq = rope_inv_freq(self.config, device=self.embed_tokens.weight.device)

    def _apply(self, fn, recurse=True):
        # .to(bf16) would round the rotary frequencies; they stay float32 like HF's.
        super()._apply(fn, recurse)
        if self.inv_freq.dtype != torch.float32:
            self.inv_freq = rope_inv_freq(self.config, device=self.inv_freq.device)
        return self


@dataclass
class PagedBatch:
    """Where the packed tokens of one runner step live and what they attend to.

    Prefill: sequence i owns rows query_start[i]:query_start[i+1] of the packed tokens,
    which are its positions num_cached[i]..seq_lens[i]-1. Decode: one row per sequence
    at position seq_lens[i]-1."""
    is_prefill: bool
    slot_mapping: torch.Tensor            # [N] int64, cache slot of each packed token
    block_tables: torch.Tensor            # [B, M] int32
    seq_lens: torch.Tensor                # [B] int32, context length including new tokens
    seq_ids: list = field(default_factory=list)
    query_start: list[int] = field(default_factory=list)   # prefill only, len B+1
    num_cached: list[int] = field(default_factory=list)    # prefill only
    logits_indices: torch.Tensor | None = None             # rows whose logits are wanted
    cache_runs: torch.Tensor | None = None                 # prefill: page runs of slot_mapping (cache_runs.py)
    selector: Any = None                                   # decode page-selection hook
    # op-family timer while profiling: timer(name) is a context manager around the ops
    timer: Callable[[str], contextlib.AbstractContextManager] | None = None


class LlamaForCausalLM(nn.Module):
    def __init__(self, config: ModelConfig):
        super().__init__()
        self.config = config
        self.model = LlamaModel(config)
        self.lm_head = nn.Linear(config.hidden_size, config.vocab_size, bias=False)
        if config.tie_word_embeddings:
            self.lm_head.weight = self.model.embed_tokens.weight
        self.apply(self._init_weights)

    def _init_weights(self, m: nn.Module) -> None:
        # HF's Llama init (normal, std=initializer_range 0.02), so a fresh model trains
        # like an HF one.
        if isinstance(m, nn.Linear):
            nn.init.normal_(m.weight, std=0.02)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Embedding):
            nn.init.normal_(m.weight, std=0.02)

    # ---- dense (training / evaluation) -----------------------------------------------
    def forward_dense(self, input_ids: torch.Tensor, positions: torch.Tensor | None = None) -> torch.Tensor:
        """Causal logits [B, T, V] for input_ids [B, T] (positions default 0..T-1)."""
        B, T = input_ids.shape
        if positions is None:
            positions = torch.arange(T, device=input_ids.device).expand(B, T)
        x = self.model.embed_tokens(input_ids)
        cos, sin = rope_cos_sin(positions, self.model.inv_freq, x.dtype)
        if torch.is_autocast_enabled(x.device.type):
            # Under autocast q/k come out of the projections in the autocast dtype;
            # rotate them in that dtype as HF does.
            ad = torch.get_autocast_dtype(x.device.type)
            cos, sin = cos.to(ad), sin.to(ad)
        for layer in self.model.layers:
            x = layer.forward_dense(x, cos, sin)
        return self.lm_head(self.model.norm(x))

    forward = forward_dense

    # ---- paged (serving) -------------------------------------------------------------
    def forward_paged(self, input_ids: torch.Tensor, positions: torch.Tensor, batch: PagedBatch, kv) -> torch.Tensor:
        """Run packed tokens input_ids[N] at positions[N] against the paged cache `kv`
        (a KVCache). Writes every token's K/V (+ page key min/max) and returns logits
        [len(logits_indices), V] (all N rows when logits_indices is None)."""
        t = _no_timer if batch.timer is None else batch.timer
        layers = self.model.layers
        # Each norm is fused with the residual add before it: the norm after attention
        # with the attention output's add, the next layer's (or the final) norm with the
        # MLP output's add.
        norms = [layer.input_layernorm for layer in layers] + [self.model.norm]
        x = self.model.embed_tokens(input_ids)
        h = kernels.rms_norm(x, norms[0].weight, norms[0].variance_epsilon)
        for i, layer in enumerate(layers):
            attn = layer.self_attn
            with t("matmul"):
                q, k, v = attn.project(h)
            kernels.rotary_embedding(q, k, positions, self.model.inv_freq)
            # an FP8 cache has page scales (kv.kv_scales) and its bounds are codes under them
            metas, scales = getattr(kv, "metas", None), getattr(kv, "kv_scales", None)
            meta, kv_scales = None if metas is None else metas[i], None if scales is None else scales[i]
            with t("cache_write"):
                qkeys, qbounds = getattr(kv, "qkeys", None), getattr(kv, "qbounds", None)
                kernels.reshape_and_cache(k, v, kv.k_caches[i], kv.v_caches[i], meta, batch.slot_mapping,
                                          None if qkeys is None else qkeys[i], kv_scales=kv_scales,
                                          one_per_page=not batch.is_prefill,   # a decode step: one token a sequence
                                          runs=batch.cache_runs,
                                          qbounds=None if qkeys is None or qbounds is None else qbounds[i])
            if batch.is_prefill:
                with t("attention"):
                    o = kernels.prefill_attention(q, k, v, kv.k_caches[i], kv.v_caches[i], batch.block_tables,
                                                 batch.query_start, batch.num_cached, attn.scale, kv_scales)
            else:
                q = q.contiguous()   # a view into the q/k/v product: scoring and attention read it whole
                page_indices = o = None
                if batch.selector is not None:
                    with t("selection"):   # quest in one launch attends here too
                        page_indices, o = selector_attend(
                            batch.selector, attn, q, kv, i, batch.block_tables, batch.seq_lens, batch.seq_ids)
                if o is None:
                    with t("attention"):
                        o = kernels.paged_decode_attention(q, kv.k_caches[i], kv.v_caches[i], batch.block_tables,
                                                           batch.seq_lens, attn.scale, page_indices, kv_scales)
            with t("matmul"):
                o = serving_linear(attn.o_proj, o.reshape(o.shape[0], -1))
            ln = layer.post_attention_layernorm
            x, h = kernels.add_rms_norm(x, o, ln.weight, ln.variance_epsilon)
            with t("matmul"):
                m = layer.mlp.forward_serving(h)
            x, h = kernels.add_rms_norm(x, m, norms[i + 1].weight, norms[i + 1].variance_epsilon)
        if batch.logits_indices is not None:
            h = h[batch.logits_indices]
        with t("matmul"):
            return serving_linear(self.lm_head, h)

    def fuse_projections(self) -> None:
        """Concatenate each layer's q/k/v weights, and its gate/up weights, into one matrix
        (one product each in forward_paged instead of 3 and 2). The separate projections
        become views of it: no memory is added, and loading into them or reading them
        (state_dict, forward_dense) works as before. Call once the model sits on its
        device and dtype; a later `.to()` that copies the weights undoes the sharing, and
        calling this again fuses afresh."""
        for layer in self.model.layers:
            a, m = layer.self_attn, layer.mlp
            a.qkv_weight, a.qkv_bias = _fuse((a.q_proj, a.k_proj, a.v_proj), (a.qkv_weight, a.qkv_bias))
            m.gate_up_weight, m.gate_up_bias = _fuse((m.gate_proj, m.up_proj), (m.gate_up_weight, m.gate_up_bias))


def _fuse(linears, fused: tuple):
    """(weight, bias) of `linears` stacked along the output axis, each Linear's weight and
    bias re-pointed at its rows; `fused` (the last result) is kept while every weight is
    still its view."""
    if fused[0] is not None and all(_views(lin.weight, fused[0]) for lin in linears):
        return fused
    weight = torch.cat([lin.weight.detach() for lin in linears])
    has_bias = [lin.bias is not None for lin in linears]
    if any(has_bias) and not all(has_bias):
        return None, None   # mixed biases (no known model): keep the separate products
    bias = torch.cat([lin.bias.detach() for lin in linears]) if all(has_bias) else None
    row = 0
    for lin in linears:
        n = lin.out_features
        lin.weight = nn.Parameter(weight[row:row + n], requires_grad=False)
        if bias is not None:
            lin.bias = nn.Parameter(bias[row:row + n], requires_grad=False)
        row += n
    return weight, bias


def _views(part: torch.Tensor, whole: torch.Tensor) -> bool:
    return part.untyped_storage().data_ptr() == whole.untyped_storage().data_ptr()
