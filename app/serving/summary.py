"""Plain-text facts about an engine for the header and tooltips: what model, which
kernel backend, how big the pool. `config_summary` needs no engine (the window shows
it while the model loads); `engine_summary` reads the built engine."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from tinyserve_core.engine.config import EngineConfig
from tinyserve_core.kernels import backend_info
from tinyserve_core.kv.kv_cache import block_bytes, cache_dtype
from tinyserve_core.model.config import ModelConfig

if TYPE_CHECKING:
    from tinyserve_core.engine.engine import Engine


def _model_dir(cfg: EngineConfig) -> str:
    if cfg.model.model:
        return cfg.model.model
    from tinyserve_core.model import default_model_dir
    return str(default_model_dir())


FP8_NAME = "fp8 e4m3"   # how the header names an FP8 cache (vLLM's setting, the format)


def _kv_bytes(mc: ModelConfig, cfg: EngineConfig) -> int:
    """The pool's bytes before the engine exists (K, V and page bounds or FP8 scales); "auto"
    dtypes are counted as float32, the CPU's."""
    model_dtype = torch.float32 if cfg.model.dtype == "auto" else getattr(torch, cfg.model.dtype)
    per_block = block_bytes(mc.num_hidden_layers, cfg.cache.block_size, mc.num_key_value_heads, mc.head_dim,
                            cache_dtype(cfg.cache.kv_cache_dtype, model_dtype))
    return per_block * cfg.cache.num_blocks


def config_summary(cfg: EngineConfig) -> dict:
    info = backend_info()
    d = {
        "model": _model_dir(cfg),
        "backend": info.get("backend"),
        "backend_reason": info.get("reason"),
        "gpu": info.get("gpu"),
        "num_blocks": cfg.cache.num_blocks,
        "block_size": cfg.cache.block_size,
        "pool_tokens": cfg.cache.num_blocks * cfg.cache.block_size,
        "policy": cfg.selection.policy,
    }
    try:
        mc = ModelConfig.from_dir(d["model"])
        d["layers"] = mc.num_hidden_layers
        d["kv_heads"] = mc.num_key_value_heads
        d["kv_bytes"] = _kv_bytes(mc, cfg)
        if cfg.cache.kv_cache_dtype != "auto":
            d["kv_dtype"] = FP8_NAME
    except Exception as e:  # shown, not fatal: the engine start reports it properly
        d["model_note"] = str(e).splitlines()[0][:200]
    return d


def engine_summary(cfg: EngineConfig, engine: Engine) -> dict:
    d = config_summary(cfg)
    mc = engine.model_config
    d.pop("model_note", None)
    d["layers"] = mc.num_hidden_layers
    d["kv_heads"] = mc.num_key_value_heads
    kv = engine.runner.kv
    k0 = kv.k_caches[0]
    d["device"] = str(k0.device)
    d["dtype"] = str(engine.dtype).replace("torch.", "")
    if k0.dtype != engine.dtype:   # an FP8 cache (kv_cache_dtype)
        d["kv_dtype"] = FP8_NAME if k0.dtype == torch.float8_e4m3fn else str(k0.dtype).replace("torch.", "")
    d["kv_bytes"] = kv.total_bytes
    return d


def summary_line(d: dict) -> str:
    model = Path(str(d.get("model"))).name or str(d.get("model"))
    parts = [f"model {model}"]
    if d.get("layers") is not None:
        parts.append(f"{d['layers']} layers x {d.get('kv_heads')} kv-heads")
    be = d.get("backend")
    if be == "cuda" and d.get("gpu"):
        parts.append(f"kernels: CUDA on {d['gpu']}")
    else:
        parts.append(f"kernels: {be} ({d.get('backend_reason')})")
    parts.append(f"pool {d['num_blocks']:,} blocks x {d['block_size']} tokens = {d['pool_tokens']:,} tokens")
    if d.get("kv_bytes"):
        kind = f" {d['kv_dtype']}" if d.get("kv_dtype") else ""
        parts.append(f"KV{kind} {d['kv_bytes'] / 2**20:.1f} MiB")
    if d.get("device"):
        parts.append(f"{d['device']} {d.get('dtype', '')}".strip())
    if d.get("model_note"):
        parts.append(f"note: {d['model_note']}")
    return " | ".join(parts)


def describe_block(engine: Engine, block_id: int) -> dict:
    """block_info(id) plus the decoded text of the block's tokens (engine loop)."""
    info = dataclasses.asdict(engine.block_manager.block_info(block_id))
    toks = info["token_ids"]
    if toks is not None and engine.tokenizer is not None:
        try:
            info["text"] = engine.tokenizer.decode(list(toks))
        except Exception as e:
            info["text"] = f"<cannot decode: {e}>"
    return info
