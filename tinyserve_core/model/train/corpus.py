"""The training corpus: Python 3.11 documentation sources plus standard-library code,
read from installed files (never downloaded, never committed).

The held-out documentation files of the shipped model's split are the one exception: they
are package data (assets/text/heldout/), so evaluations read the same text on every host
whether or not it has python3.11-doc.

The held-out split is by document, decided by a hash of the document's name, so it is
the same on every machine and does not move when files are added elsewhere.
"""

from __future__ import annotations

import hashlib
import json
import sysconfig
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm import tqdm

from ...errors import ConfigError
from ...resources import asset_path

DEFAULT_DOCS_ROOT = Path("/usr/share/doc/python3.11/html/_sources")
DOCS_PACKAGE = "python3.11-doc"
# The shipped model's split (its train_log.json): the held-out doc files at this fraction,
# copied verbatim from DEFAULT_DOCS_ROOT (assets/text/extract_heldout_docs.py redoes it).
SHIPPED_HELDOUT_FRAC = 0.05
SHIPPED_HELDOUT_ROOT = asset_path("text", "heldout")
# Debian's stdlib (ships without the test suite) is the documented source; the running
# interpreter's stdlib is the fallback on machines without it.
DEBIAN_STDLIB_ROOT = Path("/usr/lib/python3.11")

# pydoc_data/topics.py is the documentation text itself: keeping it would leak the
# held-out doc split into training. Charmap codecs are generated tables, not prose/code.
_SKIP_PARTS = {"site-packages", "dist-packages", "test", "tests", "idle_test", "pydoc_data", "__pycache__"}
_GENERATED_MARKER = "Python Character Mapping Codec"


@dataclass(frozen=True)
class Document:
    name: str  # "docs/<relpath>" or "stdlib/<relpath>": stable across machines
    kind: str  # "docs" | "code"
    text: str


def default_stdlib_root() -> Path:
    if DEBIAN_STDLIB_ROOT.is_dir():
        return DEBIAN_STDLIB_ROOT
    return Path(sysconfig.get_paths()["stdlib"])


def heldout_fraction_of(name: str) -> float:
    """A number in [0, 1) fixed by the document name."""
    h = hashlib.sha256(name.encode("utf-8")).digest()
    return int.from_bytes(h[:8], "big") / 2**64


def is_heldout(name: str, heldout_frac: float) -> bool:
    return heldout_fraction_of(name) < heldout_frac


def collect_documents(docs_root: str | Path | None = None, stdlib_root: str | Path | None = None) -> list[Document]:
    """Read every doc source (*.txt) and stdlib module (*.py), sorted by name."""
    docs_root = Path(docs_root) if docs_root is not None else DEFAULT_DOCS_ROOT
    if not docs_root.is_dir():
        raise ConfigError("--docs-root", f"{docs_root} is not a folder: the Python 3.11 documentation "
                          f"sources are read from it; install the Debian package {DOCS_PACKAGE} "
                          "(or give --docs-root)")
    code = collect_code(stdlib_root)
    out: list[Document] = []
    for path in sorted(docs_root.rglob("*.txt")):
        text = path.read_text(encoding="utf-8", errors="replace")
        if text.strip():
            out.append(Document("docs/" + path.relative_to(docs_root).as_posix(), "docs", text))
    if not out:
        raise ConfigError("--docs-root", f"no *.txt documentation sources under {docs_root}")
    return out + code


def collect_code(stdlib_root: str | Path | None = None) -> list[Document]:
    """Every standard-library module (*.py) but tests and generated tables, sorted by name."""
    stdlib_root = Path(stdlib_root) if stdlib_root is not None else default_stdlib_root()
    if not stdlib_root.is_dir():
        raise ConfigError("--stdlib-root", f"{stdlib_root} is not a folder")
    out: list[Document] = []
    for path in sorted(stdlib_root.rglob("*.py")):
        rel = path.relative_to(stdlib_root)
        if _SKIP_PARTS.intersection(rel.parts[:-1]):
            continue
        text = path.read_text(encoding="utf-8", errors="replace")
        if not text.strip() or _GENERATED_MARKER in text[:2000]:
            continue
        out.append(Document("stdlib/" + rel.as_posix(), "code", text))
    return out


def heldout_doc_files(docs_root: str | Path, heldout_frac: float) -> list[tuple[str, Path]]:
    """(name, path) of the documentation sources under docs_root that the split rule holds
    out, sorted by path; names are those collect_documents gives."""
    root = Path(docs_root)
    named = (("docs/" + p.relative_to(root).as_posix(), p) for p in sorted(root.rglob("*.txt")))
    return [(name, p) for name, p in named if is_heldout(name, heldout_frac)]


def shipped_heldout_documents(heldout_frac: float = SHIPPED_HELDOUT_FRAC) -> list[Document]:
    """The shipped held-out documentation files that are held out at heldout_frac. Above
    the shipped fraction this is a subset of that split's held-out docs, still never
    trained on; below it the files a smaller split would train on are left out."""
    if not SHIPPED_HELDOUT_ROOT.is_dir():
        raise ConfigError("--data-dir", f"no held-out text at {SHIPPED_HELDOUT_ROOT} (a broken install?): "
                          "give --data-dir (a train-lm corpus folder)")
    docs = []
    for name, path in heldout_doc_files(SHIPPED_HELDOUT_ROOT, heldout_frac):
        text = path.read_text(encoding="utf-8", errors="replace")
        if text.strip():
            docs.append(Document(name, "docs", text))
    if not docs:
        raise ConfigError("--heldout-frac", f"{heldout_frac} holds out none of the shipped held-out files "
                          f"(shipped at {SHIPPED_HELDOUT_FRAC}); raise it or give --data-dir")
    return docs


def split_documents(docs: list[Document], heldout_frac: float) -> dict[str, list[Document]]:
    """{"train": [...], "heldout_docs": [...], "heldout_code": [...]}"""
    if not (0.0 < heldout_frac < 0.5):
        raise ConfigError("--heldout-frac", f"must be in (0, 0.5), got {heldout_frac}")
    split: dict[str, list[Document]] = {"train": [], "heldout_docs": [], "heldout_code": []}
    for d in docs:
        if is_heldout(d.name, heldout_frac):
            split["heldout_docs" if d.kind == "docs" else "heldout_code"].append(d)
        else:
            split["train"].append(d)
    for key in ("heldout_docs",):
        if not split[key]:
            raise ConfigError("--heldout-frac", f"{heldout_frac} holds out no documentation file; raise it")
    return split


def tokenize_documents(tok, docs: list[Document], eos_id: int, desc: str = "tokenize") -> np.ndarray:
    """Concatenate documents as uint16 ids, each followed by <|endoftext|>."""
    if tok.get_vocab_size() > 2**16:
        raise ConfigError("--vocab-size", "must fit uint16 token arrays")
    parts: list[np.ndarray] = []
    chunk = 64
    for i in tqdm(range(0, len(docs), chunk), desc=desc, unit="batch", leave=False):
        for enc in tok.encode_batch([d.text for d in docs[i : i + chunk]]):
            parts.append(np.asarray(enc.ids + [eos_id], dtype=np.uint16))
    return np.concatenate(parts) if parts else np.zeros(0, dtype=np.uint16)


def write_corpus(out_dir: str | Path, tok, split: dict[str, list[Document]], eos_id: int) -> dict:
    """Write <split>.npy token arrays and corpus.json (sizes, file lists) into out_dir."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    meta: dict = {"splits": {}}
    for key, docs in split.items():
        ids = tokenize_documents(tok, docs, eos_id, desc=key)
        np.save(out / f"{key}.npy", ids)
        meta["splits"][key] = {
            "documents": len(docs),
            "bytes": sum(len(d.text.encode("utf-8")) for d in docs),
            "tokens": int(ids.size),
            "names": [d.name for d in docs] if key != "train" else None,
        }
    (out / "corpus.json").write_text(json.dumps(meta, indent=1) + "\n")
    return meta


def load_split(data_dir: str | Path, key: str) -> np.ndarray:
    p = Path(data_dir) / f"{key}.npy"
    if not p.is_file():
        raise ConfigError("--data-dir", f"{p} is missing: run `tinyserve train-lm --prepare-only` first")
    return np.load(p)
