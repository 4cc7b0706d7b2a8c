"""Evaluation of a language model on the held-out split: loss and perplexity, pass-key
retrieval accuracy by context length and depth, greedy sample generations.

Works on any model with `forward_dense(input_ids[B,T]) -> logits[B,T,V]` (ours or a
loaded checkpoint); `tinyserve eval lm` and `train-lm` both call `evaluate_model`.
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from ...errors import ConfigError
from ...writers import write_json

from .passkey import make_samples

DOC_PROMPTS = (
    "The list type",
    "A dictionary is",
    "To open a file for reading,",
    "The following example shows how to",
    "def read_config(path):",
)
PASSKEY_SEED = 20_251_113  # fixed and unlike any training seed: held-out keys and offsets
DEPTH_BINS = 5


def _autocast(device: torch.device, enabled: bool):
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=enabled and device.type == "cuda")


@torch.no_grad()
def heldout_loss(model, ids: np.ndarray, context: int, device, batch_size: int = 8, max_windows: int | None = None,
                 bf16: bool = False) -> dict:
    """Mean next-token loss over non-overlapping windows of `context` tokens (each
    token predicted once, from up to `context` tokens of its own window)."""
    device = torch.device(device)
    n_win = (len(ids) - 1) // context
    if n_win < 1:
        raise ConfigError("heldout", f"needs more than {context} tokens, has {len(ids)}")
    if max_windows is not None:
        n_win = min(n_win, max_windows)
    windows = np.stack([ids[i * context : i * context + context + 1] for i in range(n_win)]).astype(np.int64)
    total, count = 0.0, 0
    for s in range(0, n_win, batch_size):
        w = torch.from_numpy(windows[s : s + batch_size]).to(device)
        with _autocast(device, bf16):
            logits = model.forward_dense(w[:, :-1])
        loss = F.cross_entropy(logits.float().flatten(0, 1), w[:, 1:].flatten(), reduction="sum")
        total += float(loss)
        count += w[:, 1:].numel()
    mean = total / count
    return {"loss": mean, "perplexity": math.exp(mean), "tokens": count}


@torch.no_grad()
def passkey_accuracy(model, tok, source: np.ndarray, n: int, length: int, device, seed: int = PASSKEY_SEED,
                     batch_size: int = 16, bf16: bool = False) -> dict:
    """Exact-match accuracy of greedy decoding of the 5 key digits.

    One teacher-forced pass gives the same verdict as 5 greedy steps: greedy emits the
    whole key iff at every answer position the argmax, given the correct digits before
    it, is the correct digit (by induction the greedy prefix then equals the key's)."""
    device = torch.device(device)
    samples = make_samples(tok, source, n, length, seed)
    correct = np.zeros(n, dtype=bool)
    digits_right = 0
    for s in range(0, n, batch_size):
        chunk = samples[s : s + batch_size]
        x = torch.tensor([c.prompt_ids + c.answer_ids for c in chunk], device=device)
        k = len(chunk[0].answer_ids)
        with _autocast(device, bf16):
            logits = model.forward_dense(x[:, :-1])
        pred = logits[:, -k:].argmax(-1)
        ok = pred == x[:, -k:]
        correct[s : s + len(chunk)] = ok.all(-1).cpu().numpy()
        digits_right += int(ok.sum())
    depths = np.array([c.depth for c in samples])
    bins = []
    for b in range(DEPTH_BINS):
        lo, hi = b / DEPTH_BINS, (b + 1) / DEPTH_BINS
        m = (depths >= lo) & ((depths < hi) | (b == DEPTH_BINS - 1))
        bins.append({"depth": [lo, hi], "n": int(m.sum()), "accuracy": float(correct[m].mean()) if m.any() else None})
    return {
        "length": length,
        "n": n,
        "accuracy": float(correct.mean()),
        "digit_accuracy": digits_right / (n * len(samples[0].answer_ids)),
        "by_depth": bins,
    }


@torch.no_grad()
def greedy_generate(model, tok, prompt: str, max_new_tokens: int, device, eos_id: int | None = None) -> str:
    device = torch.device(device)
    ids = tok.encode(prompt, add_special_tokens=False).ids
    x = torch.tensor([ids], device=device)
    for _ in range(max_new_tokens):
        nxt = model.forward_dense(x)[:, -1].argmax(-1, keepdim=True)
        if eos_id is not None and int(nxt) == eos_id:
            break
        x = torch.cat([x, nxt], dim=1)
    return tok.decode(x[0, len(ids) :].tolist())


def evaluate_model(model, tok, data: dict[str, np.ndarray], device, *, context: int, passkey_lengths=(1024, 2048),
                   n_passkey: int = 200, prompts=DOC_PROMPTS, max_new_tokens: int = 48, eos_id: int | None = None,
                   bf16: bool = False, progress: bool = True) -> dict:
    """`data` holds the held-out token arrays {"heldout_docs", "heldout_code"}; pass-key
    filler is drawn from both (held-out text only)."""
    t0 = time.perf_counter()
    model.eval()
    out: dict = {"heldout": {}, "passkey": [], "generations": []}
    steps = [("loss", k) for k in data] + [("passkey", L) for L in passkey_lengths] + [("gen", p) for p in prompts]
    bar = tqdm(steps, desc="eval", disable=not progress, leave=False)
    source = np.concatenate([data[k] for k in sorted(data)])
    for kind, arg in bar:
        if kind == "loss":
            out["heldout"][arg] = heldout_loss(model, data[arg], context, device, bf16=bf16)
        elif kind == "passkey":
            if arg > context:
                raise ConfigError("--passkey-lengths", f"{arg} exceeds the model context {context}")
            out["passkey"].append(passkey_accuracy(model, tok, source, n_passkey, arg, device, bf16=bf16))
        else:
            out["generations"].append({"prompt": arg, "completion": greedy_generate(model, tok, arg, max_new_tokens,
                                                                                    device, eos_id)})
    out["seconds"] = time.perf_counter() - t0
    cuda = torch.device(device).type == "cuda"
    out["precision"] = ("bf16 autocast" if bf16 and cuda else
                        "float32 (TF32 matmuls)" if cuda and torch.backends.cuda.matmul.allow_tf32 else "float32")
    return out


def format_eval_table(ev: dict) -> str:
    rows = [f"{'metric':<28}{'value':>12}"]
    for k, v in ev["heldout"].items():
        rows.append(f"{k + ' loss':<28}{v['loss']:>12.4f}")
        rows.append(f"{k + ' perplexity':<28}{v['perplexity']:>12.2f}")
    for p in ev["passkey"]:
        rows.append(f"{'passkey @' + str(p['length']) + ' (n=' + str(p['n']) + ')':<28}{p['accuracy']:>12.1%}")
    return "\n".join(rows)


def write_eval(ev: dict, path: str | Path) -> None:
    write_json(path, ev, "json", indent=1, make_parents=True)
