"""The held-out token stream `tinyserve eval selection` measures on."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ...errors import ConfigError


def heldout_tokens(tok, data_dir: str | None, heldout_frac: float) -> tuple[np.ndarray, str]:
    """The held-out token stream: a prepared corpus's held-out docs (`--data-dir`),
    else the held-out documentation files re-derived with the training split rule,
    else the shipped prompt corpus assets/text (which may overlap training: said so)."""
    from ...model.train import corpus
    if data_dir is not None:
        return corpus.load_split(data_dir, "heldout_docs"), f"{data_dir}/heldout_docs.npy"
    raw = getattr(tok, "tokenizer", tok)
    eos = getattr(tok, "eos_token_id", None)
    if corpus.DEFAULT_DOCS_ROOT.is_dir():
        docs = []
        for f in sorted(corpus.DEFAULT_DOCS_ROOT.rglob("*.txt")):
            name = "docs/" + f.relative_to(corpus.DEFAULT_DOCS_ROOT).as_posix()
            text = f.read_text(encoding="utf-8", errors="replace")
            if text.strip() and corpus.is_heldout(name, heldout_frac):
                docs.append(corpus.Document(name, "docs", text))
        if docs:
            return (corpus.tokenize_documents(raw, docs, eos if eos is not None else 0, desc="held-out docs"),
                    f"held-out docs ({len(docs)} files, heldout_frac {heldout_frac})")
    text_dir = Path(__file__).resolve().parents[3] / "assets" / "text"
    files = sorted(p for p in text_dir.glob("*.txt") if p.name.upper() not in ("README.TXT", "LICENSE.TXT"))
    if not files:
        raise ConfigError("--data-dir", "no held-out text found: give --data-dir (a train-lm corpus folder)")
    ids = [i for f in files for i in raw.encode(f.read_text(encoding="utf-8")).ids]
    return np.asarray(ids, dtype=np.int64), "assets/text (may overlap the training corpus)"
