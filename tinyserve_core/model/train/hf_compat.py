"""Does a model folder give the same logits in our runtime and in transformers?"""

from __future__ import annotations

from pathlib import Path

import torch


@torch.no_grad()
def compare_logits(folder: str | Path, input_ids: torch.Tensor, device="cpu") -> dict:
    """Run input_ids [B, T] through `load_model` and `AutoModelForCausalLM`, both in
    float32 on `device`; report the largest absolute logit difference."""
    from transformers import AutoModelForCausalLM

    from ..loader import load_model

    ours, _ = load_model(folder, device=device, dtype=torch.float32)
    hf = AutoModelForCausalLM.from_pretrained(str(folder), dtype=torch.float32).to(device).eval()
    x = input_ids.to(device)
    a = ours.forward_dense(x).float()
    b = hf(input_ids=x).logits.float()
    return {
        "max_abs_diff": float((a - b).abs().max()),
        "max_abs_logit": float(b.abs().max()),
        "argmax_agreement": float((a.argmax(-1) == b.argmax(-1)).float().mean()),
        "tokens": int(x.numel()),
    }
