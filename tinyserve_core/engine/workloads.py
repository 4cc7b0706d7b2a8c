"""Request streams for the engine: seeded, deterministic, made of real text.

A workload is a list of `WorkloadRequest`s sorted by arrival time. Generators:

* ``poisson``: exponential inter-arrival times at `rate` requests/s, for `duration`
  seconds and/or `requests` requests (whichever ends first);
* ``static``: `requests` requests all arriving at t = 0 (an offline batch);
* ``passkey``: Poisson arrivals of passkey-retrieval prompts (filler text, a hidden
  number at a chosen depth, a question at the end; the answer is kept on the request);
* ``replay``: a JSONL file, one request per line (see `load_replay`).

Prompt and output lengths follow a fixed, uniform or lognormal distribution. A share of
the requests can start with one of K shared system prompts (prefix caching), and every
request can ask for `n` parallel samples (fork + copy-on-write).

Lengths are in tokens of the model's tokenizer when a `tokenize` callable is given:
the prompt text is cut at the first word boundary that reaches the length and the token
ids at exactly `prompt_len`. Without a tokenizer, lengths count whitespace-separated
words and `prompt_token_ids` stays None (the engine tokenizes).

Determinism: every random choice comes from numpy Generators seeded from `seed`, one
stream per concern (arrivals, lengths, text, prefixes), so changing the length
distribution does not move the arrival times and vice versa.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import json
import math
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import ConfigError, InputFileError

Tokenize = Callable[[str], list[int]]

WORKLOAD_KINDS = ("poisson", "static", "passkey", "replay")
LENGTH_DISTS = ("fixed", "uniform", "lognormal")
TEXT_SUFFIXES = (".txt", ".md", ".rst")
DEFAULT_TEXT_DIR = Path(__file__).resolve().parents[2] / "assets" / "text"


@dataclass(slots=True)
class WorkloadRequest:
    arrival_s: float
    prompt: str | None
    prompt_token_ids: list[int] | None
    prompt_len: int
    max_tokens: int
    n: int = 1
    salt: str | None = None
    group: int | None = None          # shared-prefix group, None = no shared prefix
    passkey: str | None = None        # the expected answer of a passkey prompt


# -- lengths -----------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class LengthDist:
    """`value` is the fixed length, the uniform lower bound or the lognormal median;
    `high` is the uniform upper bound and the lognormal clip; `sigma` is the
    lognormal shape (std of log length)."""
    dist: str
    value: int
    high: int
    sigma: float = 0.6

    def sample(self, rng: np.random.Generator, size: int) -> np.ndarray:
        if self.dist == "fixed":
            return np.full(size, self.value, dtype=np.int64)
        if self.dist == "uniform":
            return rng.integers(self.value, self.high, size=size, endpoint=True)
        raw = rng.lognormal(math.log(self.value), self.sigma, size=size)
        return np.clip(np.rint(raw), 1, self.high).astype(np.int64)


# -- the spec the GUI and CLI fill in ------------------------------------------------

@dataclass
class WorkloadSpec:
    """Workload settings. Names match EngineConfig's keys and the CLI flags, so a
    config object (or its dict) converts with `from_config`."""
    workload: str = "poisson"
    replay_file: str | None = None
    text_dir: str | None = None          # None = the shipped corpus (assets/text)
    rate: float = 4.0                    # requests per second
    duration: float | None = None        # seconds of arrivals
    requests: int | None = 64
    prompt_len: int = 256
    prompt_len_max: int = 1024
    prompt_dist: str = "lognormal"
    prompt_sigma: float = 0.6
    output_len: int = 64
    output_len_max: int = 256
    output_dist: str = "lognormal"
    output_sigma: float = 0.6
    n: int = 1
    shared_prefix_frac: float = 0.0
    shared_prefix_len: int = 128
    num_prefix_groups: int = 4
    passkey_depth: float | None = None   # 0 = start of the filler, 1 = end; None = random
    seed: int = 0

    def __post_init__(self) -> None:
        self.validate()

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "WorkloadSpec":
        if not isinstance(d, Mapping):
            raise ConfigError("workload", "settings must be a JSON object")
        names = {f.name for f in dataclasses.fields(cls)}
        for key in d:
            if key.replace("-", "_") not in names:
                raise ConfigError(key, f"unknown workload setting (known: {', '.join(sorted(names))})")
        return cls(**{k.replace("-", "_"): v for k, v in d.items()})

    @classmethod
    def from_config(cls, cfg: Any) -> "WorkloadSpec":
        """Take the workload keys of any object or dict that has them (EngineConfig)."""
        get = cfg.get if isinstance(cfg, Mapping) else lambda k, _d: getattr(cfg, k, _d)
        missing = object()
        vals = {f.name: v for f in dataclasses.fields(cls)
                if (v := get(f.name, missing)) is not missing}
        return cls(**vals)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @property
    def prompt_lengths(self) -> LengthDist:
        return LengthDist(self.prompt_dist, self.prompt_len, self.prompt_len_max, self.prompt_sigma)

    @property
    def output_lengths(self) -> LengthDist:
        return LengthDist(self.output_dist, self.output_len, self.output_len_max, self.output_sigma)

    def validate(self) -> None:
        _choice("workload", self.workload, WORKLOAD_KINDS)
        if self.workload == "replay":
            if not isinstance(self.replay_file, (str, Path)) or not str(self.replay_file):
                raise ConfigError("replay_file", "the replay workload needs a JSONL file")
        if self.text_dir is not None and not isinstance(self.text_dir, (str, Path)):
            raise ConfigError("text_dir", f"must be a folder path, got {self.text_dir!r}")
        _number("rate", self.rate, 1e-9, 1e9, low_open=True)
        if self.duration is not None:
            _number("duration", self.duration, 0.0, 1e9, low_open=True)
        if self.requests is not None:
            _integer("requests", self.requests, 1, 10_000_000)
        if self.workload in ("poisson", "passkey") and self.duration is None and self.requests is None:
            raise ConfigError("requests", "give a number of requests or a duration")
        if self.workload == "static" and self.requests is None:
            raise ConfigError("requests", "the static workload needs a number of requests")
        for side in ("prompt", "output"):
            _choice(f"{side}_dist", getattr(self, f"{side}_dist"), LENGTH_DISTS)
            lo = _integer(f"{side}_len", getattr(self, f"{side}_len"), 1, 1 << 20)
            _integer(f"{side}_len_max", getattr(self, f"{side}_len_max"), lo, 1 << 20)
            _number(f"{side}_sigma", getattr(self, f"{side}_sigma"), 0.0, 5.0)
        _integer("n", self.n, 1, 1024)
        _number("shared_prefix_frac", self.shared_prefix_frac, 0.0, 1.0)
        _integer("shared_prefix_len", self.shared_prefix_len, 1, 1 << 20)
        _integer("num_prefix_groups", self.num_prefix_groups, 1, 1 << 16)
        if self.passkey_depth is not None:
            _number("passkey_depth", self.passkey_depth, 0.0, 1.0)
        _integer("seed", self.seed, 0, 2**63 - 1)


def _choice(field: str, value: Any, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise ConfigError(field, f"must be one of {', '.join(allowed)}, got {value!r}")


def _integer(field: str, value: Any, lo: int, hi: int) -> int:
    if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or not lo <= value <= hi:
        raise ConfigError(field, f"must be an integer from {lo} to {hi}, got {value!r}")
    return int(value)


def _number(field: str, value: Any, lo: float, hi: float, low_open: bool = False) -> float:
    ok = (isinstance(value, (int, float, np.floating, np.integer)) and not isinstance(value, bool)
          and math.isfinite(value) and (lo < value if low_open else lo <= value) and value <= hi)
    if not ok:
        bound = f"> {lo:g} and <= {hi:g}" if low_open else f"from {lo:g} to {hi:g}"
        raise ConfigError(field, f"must be a number {bound}, got {value!r}")
    return float(value)


# -- text ------------------------------------------------------------------------------

_WORD = re.compile(r"\S+\s*")
_NON_SPACE = re.compile(r"\S*")


class TextCorpus:
    """Words of a folder of plain text, read as one long ring: a passage may start at
    any word and wrap around the end. Each word keeps its trailing whitespace so that
    passages keep the source's spacing and paragraph breaks."""

    def __init__(self, words: list[str], source: str = "<memory>"):
        if not words:
            raise ConfigError("text_dir", f"{source}: no text found")
        self.words = words
        self.source = source
        # passages start where a sentence starts, as a real prompt would
        starts = [i for i in range(1, len(words))
                  if words[i - 1].rstrip()[-1] in ".?!:" and words[i][0].isupper()]
        self.sentence_starts = np.array(starts or [0], dtype=np.int64)

    @classmethod
    def from_dir(cls, path: str | Path | None = None) -> "TextCorpus":
        return _load_corpus(str(Path(path).resolve()) if path is not None else str(DEFAULT_TEXT_DIR))

    def __len__(self) -> int:
        return len(self.words)

    def text(self, start: int, count: int) -> str:
        n = len(self.words)
        start %= n
        idx = np.arange(start, start + count) % n
        return "".join(self.words[i] for i in idx).rstrip()

    def passage(self, rng: np.random.Generator, num_tokens: int,
                tokenize: Tokenize | None) -> tuple[str, list[int] | None]:
        """Text from a random sentence start on, `num_tokens` long (see module docstring)."""
        start = int(self.sentence_starts[rng.integers(len(self.sentence_starts))])
        return self.cut(start, num_tokens, tokenize)

    def cut(self, start: int, num_tokens: int,
            tokenize: Tokenize | None) -> tuple[str, list[int] | None]:
        if num_tokens <= 0:
            return "", [] if tokenize is not None else None
        if tokenize is None:
            return self.text(start, num_tokens), None
        with_offsets = getattr(tokenize, "with_offsets", None)
        # Enough words for num_tokens tokens (a word is rarely under one token).
        hi = max(1, num_tokens)
        while True:
            text = self.text(start, hi)
            ids, offsets = with_offsets(text) if with_offsets else (tokenize(text), None)
            if len(ids) >= num_tokens:
                break
            if hi > 64 * num_tokens + 64 * len(self.words):
                raise ConfigError("text_dir", f"{self.source}: text yields too few tokens")
            hi *= 2
        if offsets is not None:
            # one pass: end the text with the word that holds the last kept token
            end = _NON_SPACE.match(text, offsets[num_tokens - 1][1]).end()
            return text[:end].rstrip(), list(ids[:num_tokens])
        lo = 0  # bisect the word count: text(lo) too short (or empty), text(hi) long enough
        while hi - lo > 1:
            mid = (lo + hi) // 2
            if len(tokenize(self.text(start, mid))) >= num_tokens:
                hi = mid
            else:
                lo = mid
        text = self.text(start, hi)
        return text, list(tokenize(text))[:num_tokens]


@functools.lru_cache(maxsize=8)
def _load_corpus(path: str) -> TextCorpus:
    root = Path(path)
    if not root.is_dir():
        raise ConfigError("text_dir", f"{root} is not a folder")
    files = sorted(p for p in root.rglob("*")
                   if p.is_file() and p.suffix.lower() in TEXT_SUFFIXES
                   and not p.name.upper().startswith(("README", "LICENSE", "COPYING")))
    words: list[str] = []
    for p in files:
        try:
            text = p.read_text(encoding="utf-8", errors="replace")
        except OSError as e:
            raise ConfigError("text_dir", f"cannot read {p}: {e.strerror or e}") from None
        words.extend(_WORD.findall(text.strip() + "\n\n"))
    if not words:
        raise ConfigError("text_dir", f"{root} holds no {'/'.join(TEXT_SUFFIXES)} files with text")
    return TextCorpus(words, str(root))


# -- generators ---------------------------------------------------------------------

def poisson_arrivals(rng: np.random.Generator, rate: float, duration: float | None,
                     count: int | None) -> np.ndarray:
    """Arrival times of a Poisson process, first arrival after one exponential gap."""
    if count is not None:
        times = np.cumsum(rng.exponential(1.0 / rate, size=count))
        return times[times < duration] if duration is not None else times
    out: list[np.ndarray] = []
    t = 0.0
    chunk = max(16, int(rate * duration * 1.2) + 16)
    while True:
        times = t + np.cumsum(rng.exponential(1.0 / rate, size=chunk))
        out.append(times[times < duration])
        if times[-1] >= duration:
            return np.concatenate(out)
        t = float(times[-1])


def generate_workload(spec: WorkloadSpec, tokenize: Tokenize | None = None,
                      corpus: TextCorpus | None = None, progress: bool = False,
                      bos_ids: list[int] | tuple[int, ...] = ()) -> list[WorkloadRequest]:
    """The requests of `spec`, sorted by arrival time. `bos_ids` (the tokens the
    model's tokenizer puts before any text, e.g. Llama's BOS) start every prompt's ids
    and count towards its length."""
    spec.validate()
    if corpus is None:
        corpus = TextCorpus.from_dir(spec.text_dir)
    if spec.workload == "replay":
        return load_replay(spec.replay_file, tokenize=tokenize, corpus=corpus, seed=spec.seed)
    bos = list(bos_ids) if tokenize is not None else []

    arrival_rng, length_rng, text_rng, prefix_rng = (
        np.random.default_rng(s) for s in np.random.SeedSequence(spec.seed).spawn(4))
    if spec.workload == "static":
        arrivals = np.zeros(spec.requests)
    else:
        arrivals = poisson_arrivals(arrival_rng, spec.rate, spec.duration, spec.requests)
    num = len(arrivals)
    prompt_lens = spec.prompt_lengths.sample(length_rng, num) - len(bos)
    output_lens = spec.output_lengths.sample(length_rng, num)

    groups: list[int | None] = [None] * num
    prefixes: list[tuple[str, list[int] | None]] = []
    if spec.shared_prefix_frac > 0 and spec.workload != "passkey":
        prefixes = [corpus.passage(prefix_rng, spec.shared_prefix_len, tokenize)
                    for _ in range(spec.num_prefix_groups)]
        shared = prefix_rng.random(num) < spec.shared_prefix_frac
        picks = prefix_rng.integers(spec.num_prefix_groups, size=num)
        groups = [int(g) if s else None for s, g in zip(shared, picks)]
    passkeys = PasskeyBuilder(corpus, tokenize) if spec.workload == "passkey" else None

    rows = range(num)
    if progress:
        from tqdm import tqdm
        rows = tqdm(rows, desc="workload", unit="req")
    requests = []
    for i in rows:
        answer = None
        if passkeys is not None:
            text, ids, answer = passkeys.prompt(text_rng, int(prompt_lens[i]), spec.passkey_depth)
        elif groups[i] is not None:
            p_text, p_ids = prefixes[groups[i]]
            body_len = max(1, int(prompt_lens[i]) - spec.shared_prefix_len)
            b_text, b_ids = corpus.passage(text_rng, body_len, tokenize)
            text = p_text + "\n\n" + b_text
            ids = p_ids + b_ids if tokenize is not None else None
        else:
            text, ids = corpus.passage(text_rng, max(1, int(prompt_lens[i])), tokenize)
        if ids is not None:
            ids = bos + ids
        requests.append(WorkloadRequest(
            arrival_s=float(arrivals[i]), prompt=text, prompt_token_ids=ids,
            prompt_len=len(ids) if ids is not None else len(text.split()),
            max_tokens=int(output_lens[i]), n=spec.n, group=groups[i], passkey=answer))
    return requests


def from_engine_config(config: Any, tokenizer: Any = None, progress: bool = False) -> list[WorkloadRequest]:
    """The workload an EngineConfig describes, in tokens of the model's tokenizer (an
    object with `encode(text, add_special_tokens=...) -> list[int]`), or in words
    without one."""
    spec = WorkloadSpec.from_config(config)
    if tokenizer is None:
        return generate_workload(spec, progress=progress)

    tokenize = ModelTokenize(tokenizer)
    # whatever encode() adds in front of plain text (BOS) starts every prompt
    plain, full = tokenize("Hello"), list(tokenizer.encode("Hello"))
    bos = full[: len(full) - len(plain)] if full[len(full) - len(plain):] == plain else []
    return generate_workload(spec, tokenize, progress=progress, bos_ids=bos)


class ModelTokenize:
    """The model tokenizer as a `tokenize` callable (no special tokens). When it wraps
    a Hugging Face `tokenizers.Tokenizer` it also offers `with_offsets`, which lets
    `TextCorpus.cut` find the word boundary from one encoding instead of a search."""

    def __init__(self, tokenizer: Any):
        self._tok = tokenizer
        hf = getattr(tokenizer, "tokenizer", None)
        if hf is not None and hasattr(hf, "encode_batch"):
            self._hf = hf
        else:
            self._hf = None
            self.with_offsets = None  # type: ignore[assignment]

    def __call__(self, text: str) -> list[int]:
        return list(self._tok.encode(text, add_special_tokens=False))

    def with_offsets(self, text: str) -> tuple[list[int], list[tuple[int, int]]]:
        enc = self._hf.encode(text, add_special_tokens=False)
        return enc.ids, enc.offsets


class _TokenizerShim:
    """`tokenizers.Tokenizer`'s encode(...).ids over a plain tokenize callable, which
    is what the pass-key template takes."""

    def __init__(self, tokenize: Tokenize):
        self._tokenize = tokenize

    def encode(self, text: str, add_special_tokens: bool = False) -> Any:
        return _Encoding(list(self._tokenize(text)))


@dataclass(slots=True)
class _Encoding:
    ids: list[int]


class PasskeyBuilder:
    """Pass-key prompts in the format of `model/train/passkey.py` (the one the shipped
    model is trained and evaluated on), with real corpus text as filler. With a
    tokenizer the ids come from that module's template, so they are exactly what the
    model was trained on; the text is the same pieces joined."""

    def __init__(self, corpus: TextCorpus, tokenize: Tokenize | None):
        from ..model.train import passkey as pk
        self._pk = pk
        self.corpus = corpus
        self.tokenize = tokenize
        self.template = pk.PasskeyTemplate(_TokenizerShim(tokenize)) if tokenize is not None else None

    def _text(self, before: str, key: str, after: str) -> str:
        pk = self._pk
        return (before + pk._NEEDLE_HEAD + key + pk._NEEDLE_MID + key + pk._NEEDLE_TAIL
                + after + pk._QUESTION)

    def prompt(self, rng: np.random.Generator, prompt_len: int,
               depth: float | None = None) -> tuple[str, list[int] | None, str]:
        """(text, ids, key): filler with the needle at `depth` (random when None) and
        the question at the end; never shorter than needle + question + 1 filler."""
        digits = self._pk.KEY_DIGITS
        key = str(int(rng.integers(10 ** (digits - 1), 10 ** digits)))
        depth = float(rng.random()) if depth is None else float(depth)
        if self.template is not None:
            n_fill = max(1, prompt_len - (self.template.overhead() - digits))
        else:
            n_fill = max(1, prompt_len - len(self._text("", key, "").split()))
        before_len = int(round(depth * n_fill))
        start = int(self.corpus.sentence_starts[rng.integers(len(self.corpus.sentence_starts))])
        before, before_ids = self.corpus.cut(start, before_len, self.tokenize)
        # the filler after the needle continues the same passage
        after_start = start + len(_WORD.findall(before))
        after, after_ids = self.corpus.cut(after_start, n_fill - before_len, self.tokenize)
        text = self._text(before, key, after)
        if self.template is None:
            return text, None, key
        sample = self.template.build(np.asarray(before_ids + after_ids, dtype=np.int64), key, depth)
        return text, sample.prompt_ids, key


# -- replay -------------------------------------------------------------------------

_REPLAY_KEYS = ("arrival_s", "prompt", "prompt_token_ids", "prompt_len", "max_tokens", "n",
                "salt", "group")


def load_replay(path: str | Path, tokenize: Tokenize | None = None,
                corpus: TextCorpus | None = None, seed: int = 0) -> list[WorkloadRequest]:
    """Requests from a JSONL file, one JSON object per line:

    ``{"arrival_s": float, "prompt": str | "prompt_len": int, "max_tokens": int, "n": int}``

    `prompt_token_ids` (a list of ints) may stand beside or instead of `prompt` and
    then wins; `prompt_len` asks for that many tokens of corpus text. `n` defaults to
    1; `salt` (str) and `group` (int) are optional. Blank lines are skipped. A bad
    line raises InputFileError(path, line_number, message naming the field)."""
    p = Path(path)
    try:
        lines = p.read_text(encoding="utf-8").splitlines()
    except OSError as e:
        raise InputFileError(str(p), None, f"cannot read: {e.strerror or e}") from None
    except UnicodeDecodeError as e:
        raise InputFileError(str(p), None, f"not UTF-8 text: {e.reason}") from None
    rng = np.random.default_rng(seed)
    out: list[WorkloadRequest] = []
    for lineno, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            out.append(_replay_line(line, rng, tokenize, corpus))
        except _LineError as e:
            raise InputFileError(str(p), lineno, str(e)) from None
    if not out:
        raise InputFileError(str(p), None, "no requests (the file is empty)")
    out.sort(key=lambda r: r.arrival_s)  # stable: equal times keep file order
    return out


class _LineError(Exception):
    pass


def _replay_line(line: str, rng: np.random.Generator, tokenize: Tokenize | None,
                 corpus: TextCorpus | None) -> WorkloadRequest:
    try:
        obj = json.loads(line)
    except json.JSONDecodeError as e:
        raise _LineError(f"invalid JSON at column {e.colno}: {e.msg}") from None
    if not isinstance(obj, dict):
        raise _LineError(f"expected a JSON object, got {type(obj).__name__}")
    for key in obj:
        if key not in _REPLAY_KEYS:
            raise _LineError(f"unknown field {key!r} (allowed: {', '.join(_REPLAY_KEYS)})")

    def integer(key: str, lo: int, default: Any = ...) -> int:
        if key not in obj:
            if default is ...:
                raise _LineError(f"missing field {key!r}")
            return default
        v = obj[key]
        if isinstance(v, bool) or not isinstance(v, int) or v < lo:
            raise _LineError(f"field {key!r} must be an integer >= {lo}, got {v!r}")
        return v

    if "arrival_s" not in obj:
        raise _LineError("missing field 'arrival_s'")
    arrival = obj["arrival_s"]
    if isinstance(arrival, bool) or not isinstance(arrival, (int, float)) \
            or not math.isfinite(arrival) or arrival < 0:
        raise _LineError(f"field 'arrival_s' must be a number >= 0, got {arrival!r}")
    max_tokens = integer("max_tokens", 1)
    n = integer("n", 1, 1)
    salt = obj.get("salt")
    if salt is not None and not isinstance(salt, str):
        raise _LineError(f"field 'salt' must be a string, got {salt!r}")
    group = obj.get("group")
    if group is not None and (isinstance(group, bool) or not isinstance(group, int)):
        raise _LineError(f"field 'group' must be an integer, got {group!r}")

    prompt, ids = obj.get("prompt"), obj.get("prompt_token_ids")
    if "prompt_len" in obj and ("prompt" in obj or "prompt_token_ids" in obj):
        raise _LineError("give 'prompt' (or 'prompt_token_ids') or 'prompt_len', not both")
    if prompt is not None and (not isinstance(prompt, str) or not prompt):
        raise _LineError(f"field 'prompt' must be a non-empty string, got {prompt!r}")
    if ids is not None:
        if (not isinstance(ids, list) or not ids
                or any(isinstance(t, bool) or not isinstance(t, int) or t < 0 for t in ids)):
            raise _LineError("field 'prompt_token_ids' must be a non-empty list of integers >= 0")
    if "prompt_len" in obj:
        num = integer("prompt_len", 1)
        if corpus is None:
            corpus = TextCorpus.from_dir(None)
        prompt, ids = corpus.passage(rng, num, tokenize)
    elif prompt is None and ids is None:
        raise _LineError("missing field 'prompt' (or 'prompt_len' or 'prompt_token_ids')")
    elif ids is None and tokenize is not None:
        ids = list(tokenize(prompt))
    plen = len(ids) if ids is not None else len(prompt.split())
    return WorkloadRequest(arrival_s=float(arrival), prompt=prompt, prompt_token_ids=ids,
                           prompt_len=plen, max_tokens=max_tokens, n=n, salt=salt, group=group)


def save_replay(requests: list[WorkloadRequest], path: str | Path) -> None:
    """Write requests as a replay file that `load_replay` reads back exactly."""
    with open(path, "w", encoding="utf-8") as f:
        for r in requests:
            obj: dict[str, Any] = {"arrival_s": r.arrival_s}
            if r.prompt is not None:
                obj["prompt"] = r.prompt
            if r.prompt_token_ids is not None:
                obj["prompt_token_ids"] = list(r.prompt_token_ids)
            obj["max_tokens"] = r.max_tokens
            obj["n"] = r.n
            if r.salt is not None:
                obj["salt"] = r.salt
            if r.group is not None:
                obj["group"] = r.group
            f.write(json.dumps(obj, ensure_ascii=False) + "\n")


# -- CLI: `tinyserve workload` ------------------------------------------------------

def add_parser(subparsers) -> Any:
    """`tinyserve workload`: write a workload as a replay file (JSONL) and describe it."""
    p = subparsers.add_parser("workload", help="generate a workload and write it as a JSONL replay file")
    p.add_argument("--config", default=None, help="JSON file of `simulate` settings; the workload keys are read")
    p.add_argument("--model", default=None,
                   help="model folder whose tokenizer measures lengths (default: the shipped model, "
                        "else lengths count words)")
    p.add_argument("--out", required=True, help="JSONL file to write")
    for f in dataclasses.fields(WorkloadSpec):
        p.add_argument("--" + f.name.replace("_", "-"), dest=f.name, default=argparse.SUPPRESS,
                       metavar=f.name.upper())
    p.set_defaults(func=run)
    return p


def _parse_flag(text: str) -> Any:
    """A flag's text as the JSON value it spells (numbers, null, true), else a string."""
    if text.lower() in ("none", "null"):
        return None
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def run(args: Any) -> int:
    values: dict[str, Any] = {}
    if args.config:
        try:
            data = json.loads(Path(args.config).read_text())
        except OSError as e:
            raise ConfigError("config", f"cannot read {args.config}: {e.strerror or e}") from None
        except json.JSONDecodeError as e:
            raise ConfigError("config", f"{args.config}: invalid JSON at line {e.lineno}: {e.msg}") from None
        if not isinstance(data, dict):
            raise ConfigError("config", "must be a JSON object of settings")
        values.update({k: v for k, v in data.items() if k in {f.name for f in dataclasses.fields(WorkloadSpec)}})
    for f in dataclasses.fields(WorkloadSpec):
        if hasattr(args, f.name):
            values[f.name] = _parse_flag(getattr(args, f.name))
    if "duration" in values and "requests" not in values:
        values["requests"] = None     # a duration alone replaces the default request count
    spec = WorkloadSpec.from_dict(values)

    tokenizer = None
    from ..model.loader import default_model_dir
    model_dir = Path(args.model) if args.model else default_model_dir()
    if args.model or (model_dir / "tokenizer.json").is_file():
        from ..model.tokenizer import Tokenizer
        tokenizer = Tokenizer.from_dir(model_dir)
    requests = from_engine_config(spec, tokenizer, progress=True)
    save_replay(requests, args.out)

    unit = "tokens" if tokenizer is not None else "words"
    plens = np.array([r.prompt_len for r in requests])
    olens = np.array([r.max_tokens for r in requests])
    span = requests[-1].arrival_s - requests[0].arrival_s if requests else 0.0
    grouped = sum(r.group is not None for r in requests)
    print(f"{len(requests)} requests over {span:.2f} s"
          + (f" ({(len(requests) - 1) / span:.2f} req/s)" if span > 0 else ""))
    if requests:
        print(f"prompt {unit}: mean {plens.mean():.0f}, p50 {np.median(plens):.0f}, max {plens.max()}")
        print(f"max_tokens: mean {olens.mean():.0f}, p50 {np.median(olens):.0f}, max {olens.max()}")
        print(f"shared-prefix requests: {grouped} ({grouped / len(requests):.0%}), n = {spec.n}")
    print(f"wrote {args.out}")
    return 0
