"""The held-out token stream `tinyserve eval selection` measures on."""

from __future__ import annotations

import numpy as np


def heldout_tokens(tok, data_dir: str | None, heldout_frac: float) -> tuple[np.ndarray, str]:
    """The held-out token stream: a prepared corpus's held-out docs (`--data-dir`), else
    the shipped held-out documentation files (package data, the same on every host; never
    what the host has under /usr/share/doc) that the split rule holds out at heldout_frac."""
    from ...model.train import corpus
    if data_dir is not None:
        return corpus.load_split(data_dir, "heldout_docs"), f"{data_dir}/heldout_docs.npy"
    raw = getattr(tok, "tokenizer", tok)
    eos = getattr(tok, "eos_token_id", None)
    docs = corpus.shipped_heldout_documents(heldout_frac)
    return (corpus.tokenize_documents(raw, docs, eos if eos is not None else 0, desc="held-out docs"),
            f"held-out docs ({len(docs)} files, heldout_frac {heldout_frac})")
