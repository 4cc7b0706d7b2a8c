"""Llama-family runtime: config, model, HF-checkpoint loader, tokenizer."""

from .config import ModelConfig
from .llama import LlamaForCausalLM, PagedBatch
from .loader import default_model_dir, load_model, save_model
from .tokenizer import Tokenizer

__all__ = ["ModelConfig", "LlamaForCausalLM", "PagedBatch", "Tokenizer",
           "load_model", "save_model", "default_model_dir"]
