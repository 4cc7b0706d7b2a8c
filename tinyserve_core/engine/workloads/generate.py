"""Generators: Poisson and static arrivals, shared-prefix groups, pass-key prompts."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from ...errors import ConfigError
from .replay import load_replay
from .spec import MAX_ARRIVAL_S, ModelLimits, WorkloadRequest, WorkloadSpec
from .text import _WORD, ModelTokenize, TextCorpus, Tokenize


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
                      bos_ids: list[int] | tuple[int, ...] = (),
                      limits: ModelLimits | None = None) -> list[WorkloadRequest]:
    """The requests of `spec`, sorted by arrival time. `bos_ids` (the tokens the
    model's tokenizer puts before any text, e.g. Llama's BOS) start every prompt's ids
    and count towards its length. With the model's `limits`, lengths that cannot fit
    its context are refused before any text is built, and ids outside its vocabulary
    after (a tokenizer larger than the model)."""
    spec.validate()
    if limits is not None:
        _check_lengths(spec, limits)
    if corpus is None:
        corpus = TextCorpus.from_dir(spec.text_dir)
    if spec.workload == "replay":
        return load_replay(spec.replay_file, tokenize=tokenize, corpus=corpus, seed=spec.seed,
                           limits=limits)
    requests = _generate(spec, tokenize, corpus, progress, bos_ids)
    if limits is not None and tokenize is not None:
        for r in requests:
            problem = limits.vocab_problem(r.prompt_token_ids)
            if problem is not None:
                raise ConfigError("model", f"its tokenizer and weights do not match: a prompt's {problem}")
    return requests


def _check_lengths(spec: WorkloadSpec, limits: ModelLimits) -> None:
    """The longest prompt the spec can ask for against the context (replay files are
    checked line by line instead)."""
    if spec.workload == "replay":
        return
    field = "prompt_len" if spec.prompt_dist == "fixed" else "prompt_len_max"
    longest = getattr(spec, field)
    if spec.shared_prefix_frac > 0 and spec.workload != "passkey" and spec.shared_prefix_len >= longest:
        field, longest = "shared_prefix_len", spec.shared_prefix_len + 1   # prefix + one body token
    problem = limits.length_problem(longest)
    if problem is not None:
        raise ConfigError(field, f"prompts of up to {problem}")


def _generate(spec: WorkloadSpec, tokenize: Tokenize | None, corpus: TextCorpus, progress: bool,
              bos_ids: list[int] | tuple[int, ...]) -> list[WorkloadRequest]:
    bos = list(bos_ids) if tokenize is not None else []

    arrival_rng, length_rng, text_rng, prefix_rng = (
        np.random.default_rng(s) for s in np.random.SeedSequence(spec.seed).spawn(4))
    if spec.workload == "static":
        arrivals = np.zeros(spec.requests)
    else:
        arrivals = poisson_arrivals(arrival_rng, spec.rate, spec.duration, spec.requests)
    num = len(arrivals)
    if num and arrivals[-1] > MAX_ARRIVAL_S:   # the limit replay files have, for the same reason
        raise ConfigError("rate", f"{spec.rate:g} requests/s spreads {num} requests over {arrivals[-1]:.3g} s, "
                                  f"past the limit of {MAX_ARRIVAL_S:g} s")
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


def from_engine_config(config: Any, tokenizer: Any = None, progress: bool = False,
                       limits: ModelLimits | None = None) -> list[WorkloadRequest]:
    """The workload an EngineConfig describes, in tokens of the model's tokenizer (an
    object with `encode(text, add_special_tokens=...) -> list[int]`), or in words
    without one; checked against the model's `limits` when given."""
    spec = WorkloadSpec.from_config(config)
    if tokenizer is None:
        return generate_workload(spec, progress=progress, limits=limits)

    tokenize = ModelTokenize(tokenizer)
    # whatever encode() adds in front of plain text (BOS) starts every prompt
    plain, full = tokenize("Hello"), list(tokenizer.encode("Hello"))
    bos = full[: len(full) - len(plain)] if full[len(full) - len(plain):] == plain else []
    return generate_workload(spec, tokenize, progress=progress, bos_ids=bos, limits=limits)


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
    model was trained on; the text is the same pieces joined. A tokenizer that does not
    split digits one per token (the template's requirement) gets the joined text
    tokenized instead, with its length then only close to the one asked for."""

    def __init__(self, corpus: TextCorpus, tokenize: Tokenize | None):
        from ...errors import ConfigError
        from ...model.train import passkey as pk
        self._pk = pk
        self.corpus = corpus
        self.tokenize = tokenize
        self.template = None
        # the template checks each digit alone; a key is a run of digits, check that too
        if tokenize is not None and len(tokenize("1234567890")) == 10:
            try:
                self.template = pk.PasskeyTemplate(_TokenizerShim(tokenize))
            except ConfigError:
                pass

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
            overhead = self.template.overhead() - digits      # the answer is not in the prompt
        elif self.tokenize is not None:
            overhead = len(self.tokenize(self._text("", key, "")))
        else:
            overhead = len(self._text("", key, "").split())
        n_fill = max(1, prompt_len - overhead)
        before_len = int(round(depth * n_fill))
        start = int(self.corpus.sentence_starts[rng.integers(len(self.corpus.sentence_starts))])
        before, before_ids = self.corpus.cut(start, before_len, self.tokenize)
        # the filler after the needle continues the same passage
        after_start = start + len(_WORD.findall(before))
        after, after_ids = self.corpus.cut(after_start, n_fill - before_len, self.tokenize)
        text = self._text(before, key, after)
        if self.template is None:
            return text, (list(self.tokenize(text)) if self.tokenize is not None else None), key
        sample = self.template.build(np.asarray(before_ids + after_ids, dtype=np.int64), key, depth)
        return text, sample.prompt_ids, key
