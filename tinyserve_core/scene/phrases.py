"""Reading a query before it is embedded: typo correction against the scene's vocabulary
(rapidfuzz), then the words the geometry answers better than an embedding: one spatial
relation to another object ("on the table", "next to the cone"), a side ("on the left"),
a superlative or size word ("biggest", "small"), colours and materials. What is left
is the head, the part the text encoder scores ("the mug on the table" -> "mug").
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from rapidfuzz import fuzz, process
from rapidfuzz.distance import DamerauLevenshtein

# Longest phrase first within each relation, so "on top of" wins over "on".
RELATIONS = {
    "left": ("to the left of", "on the left of", "left of"),
    "right": ("to the right of", "on the right of", "right of"),
    "front": ("in front of",),
    "behind": ("behind",),
    "on": ("on top of", "sitting on", "standing on", "lying on", "resting on", "placed on", "on", "atop", "upon"),
    "under": ("underneath", "under", "below", "beneath"),
    "above": ("above", "over"),
    "near": ("next to", "close to", "near to", "nearest to", "closest to", "adjacent to", "beside", "near",
             "by", "alongside"),
}
SIDES = {"left": ("on the left", "to the left", "at the left", "leftmost"),
         "right": ("on the right", "to the right", "at the right", "rightmost")}
# word -> (measure, direction): +1 keeps the largest value, -1 the smallest
SUPERLATIVES = {
    **dict.fromkeys(("biggest", "largest", "bigger", "larger"), ("volume", 1)),
    **dict.fromkeys(("smallest", "tiniest", "smaller", "tinier", "littlest"), ("volume", -1)),
    **dict.fromkeys(("tallest", "taller"), ("height", 1)),
    **dict.fromkeys(("shortest", "shorter"), ("height", -1)),
    **dict.fromkeys(("highest", "higher", "topmost"), ("top", 1)),
    **dict.fromkeys(("lowest", "lower"), ("top", -1)),
}
# Plain size words pick the bigger or smaller of several matches and say nothing about one.
SIZE_WORDS = {**dict.fromkeys(("big", "large", "huge"), ("volume", 1)),
              **dict.fromkeys(("small", "little", "tiny"), ("volume", -1))}
COLOURS = {"red": "red", "green": "green", "blue": "blue", "brown": "brown", "black": "black", "white": "white",
           "grey": "grey", "gray": "grey", "orange": "orange", "yellow": "yellow", "pink": "pink",
           "purple": "purple", "beige": "beige", "multicoloured": "multicoloured", "multicolored": "multicoloured",
           "colourful": "multicoloured", "colorful": "multicoloured", "silver": "grey", "tan": "beige"}
MATERIALS = {"wood": "wood", "wooden": "wood", "metal": "metal", "metallic": "metal", "steel": "metal",
             "iron": "metal", "aluminium": "metal", "ceramic": "ceramic", "porcelain": "ceramic",
             "cardboard": "cardboard", "rubber": "rubber", "plastic": "plastic", "glass": "glass",
             "paper": "paper", "terracotta": "terracotta", "clay": "terracotta", "fabric": "fabric",
             "cloth": "fabric", "plaster": "plaster", "stone": "stone", "leather": "leather"}
# Words that name no particular thing: a head made only of these is answered by the
# relation and attribute filters alone ("the red thing", "what is on the table").
GENERIC = {"thing", "things", "object", "objects", "something", "anything", "stuff", "item", "items", "one",
           "ones", "it", "what", "which", "whatever", "made", "of", "coloured", "colored", "color", "colour",
           "is", "are", "the", "a", "an", "in", "room", "here", "there", "two", "three", "all", "each"}
# Said around a request, never part of what is asked for.
LEADING = ("where did i leave", "where did i put", "where can i find", "can you show me", "could you show me",
           "can you find", "could you find", "can you locate", "i am looking for", "i'm looking for", "look for",
           "take me to", "navigate to", "show me", "find me", "bring me", "get me", "where is", "where are",
           "what is", "what are", "which is", "which are", "is there", "are there", "there is", "please", "find",
           "locate", "go to", "where", "which", "what", "the", "a", "an", "my", "some", "any", "of", "two", "one of")
TRAILING = ("in the room", "in here", "here", "please", "located", "sitting", "standing", "lying", "that is",
            "which is", "is", "are", "placed")
FILLER_WORDS = {w for p in LEADING + TRAILING for w in p.split()} | {"i", "can", "could", "do", "to", "for",
                                                                     "with", "and", "or", "in", "at", "me", "you"}


@dataclass
class Parsed:
    text: str  # after typo correction
    head: str  # what the text encoder scores
    generic: bool  # the head names nothing: filters alone answer
    relation: str = ""  # a key of RELATIONS
    ref: str = ""  # the object the relation is to ("the table")
    without_relation: str = ""  # the head to fall back on when the reference names nothing here
    side: str = ""  # "left" | "right": the extreme candidate seen from the camera
    superlative: tuple[str, int] | None = None
    size_word: tuple[str, int] | None = None
    colours: set[str] = field(default_factory=set)
    materials: set[str] = field(default_factory=set)
    corrections: dict[str, str] = field(default_factory=dict)


def normalise(text: str) -> str:
    t = text.lower().replace("'s ", " is ").replace("’", "'").replace("i'm", "i am")
    t = re.sub(r"[^a-z0-9' -]+", " ", t)
    return " ".join(t.split())


def words_of(text: str) -> list[str]:
    return re.findall(r"[a-z]+", text.lower())


class Vocabulary:
    """What a misspelt word may be corrected to: the scene's own words (labels, aliases,
    descriptions, ...), the query grammar and the generic concepts (so "pianno" becomes
    "piano", not the nearest thing in the room). A word the encoder's own vocabulary knows
    is left as written: "lamb" is a word, not a typo of "lamp", and "eat" not one of "seat"."""

    def __init__(self, scene_words: set[str], concept_words: set[str], known: set[str]):
        grammar = {w for ps in list(RELATIONS.values()) + list(SIDES.values()) for p in ps for w in p.split()}
        grammar |= set(SUPERLATIVES) | set(SIZE_WORDS) | set(COLOURS) | set(MATERIALS) | GENERIC | FILLER_WORDS
        self.scene = scene_words | grammar
        self.concepts = concept_words
        self.targets = sorted(self.scene | concept_words)
        self.known = known

    def correct(self, word: str) -> str:
        if word in self.scene or word in self.concepts or len(word) < 3 or not word.isalpha():
            return word
        if word in self.known:
            return word
        max_d = 1 if len(word) <= 5 else 2
        hits = process.extract(word, self.targets, scorer=DamerauLevenshtein.distance, score_cutoff=max_d, limit=8)
        if not hits:
            return word
        # fewest edits; then swapped letters (the commonest slip: "lmap" is "lamp", not "map");
        # then a word of this scene over an absent concept; then the closest spelling
        best = min(hits, key=lambda h: (h[1], sorted(h[0]) != sorted(word), h[0] not in self.scene,
                                        -fuzz.ratio(word, h[0])))
        return best[0]


def _find_phrase(words: list[str], phrase: str, start: int = 0) -> int:
    p = phrase.split()
    for i in range(start, len(words) - len(p) + 1):
        if words[i:i + len(p)] == p:
            return i
    return -1


def _strip(words: list[str]) -> list[str]:
    changed = True
    while changed and words:
        changed = False
        for p in LEADING:
            n = len(p.split())
            if words[:n] == p.split() and len(words) > 0:
                words, changed = words[n:], True
                break
        for p in TRAILING:
            n = len(p.split())
            if len(words) >= n and words[-n:] == p.split():
                words, changed = words[:-n], True
                break
    return words


def parse(text: str, vocab: Vocabulary | None = None, relations: bool = True) -> Parsed:
    """The query's parts; relations=False reads "used on roads" as words, for a
    reference or a fallback head that must not split again."""
    words = normalise(text).split()
    corrections = {}
    if vocab is not None:
        fixed = [vocab.correct(w) for w in words]
        corrections = {a: b for a, b in zip(words, fixed) if a != b}
        words = fixed
    out = Parsed(" ".join(words), "", False, corrections=corrections)
    for side, phrases in SIDES.items():  # "on the left" before "on" takes "the left" as an object
        for p in phrases:
            i = _find_phrase(words, p)
            if i >= 0 and (i + len(p.split()) == len(words) or words[i + len(p.split())] != "of"):
                out.side = side
                words = words[:i] + words[i + len(p.split()):]
                break
        if out.side:
            break
    rel_at = None
    for rel, phrases in RELATIONS.items():
        for p in phrases:
            i = _find_phrase(words, p, 1)  # a relation needs something before it ...
            n = len(p.split())
            if relations and i >= 0 and i + n < len(words) and (rel_at is None or i < rel_at[0]):  # ... and an object after
                rel_at = (i, n, rel)
    out.without_relation = " ".join(_strip(list(words)))
    if rel_at is not None:
        i, n, rel = rel_at
        out.relation, out.ref = rel, " ".join(words[i + n:])
        words = words[:i]
    kept = []
    for w in words:
        if w in SUPERLATIVES:
            out.superlative = SUPERLATIVES[w]
        elif w in SIZE_WORDS:
            out.size_word = SIZE_WORDS[w]
        else:
            if w in COLOURS:
                out.colours.add(COLOURS[w])
            if w in MATERIALS:
                out.materials.add(MATERIALS[w])
            kept.append(w)
    head = _strip(kept)
    out.head = " ".join(head)
    out.generic = all(w in GENERIC or w in COLOURS or w in MATERIALS or w in FILLER_WORDS for w in head)
    return out
