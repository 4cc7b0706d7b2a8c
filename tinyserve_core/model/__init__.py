"""Llama-family runtime: config, model, HF-checkpoint loader, tokenizer."""

from .config import ModelConfig
from .llama import LlamaForCausalLM, PagedBatch

__all__ = ["ModelConfig", "LlamaForCausalLM", "PagedBatch"]
