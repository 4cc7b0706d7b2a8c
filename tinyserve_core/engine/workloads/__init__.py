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

from .generate import PasskeyBuilder, from_engine_config, generate_workload, poisson_arrivals
from .replay import load_replay, save_replay
from .spec import LENGTH_DISTS, WORKLOAD_KINDS, LengthDist, ModelLimits, WorkloadRequest, WorkloadSpec
from .text import DEFAULT_TEXT_DIR, ModelTokenize, TextCorpus, Tokenize

__all__ = [
    "DEFAULT_TEXT_DIR", "LENGTH_DISTS", "WORKLOAD_KINDS", "LengthDist", "ModelLimits", "ModelTokenize",
    "PasskeyBuilder", "TextCorpus", "Tokenize", "WorkloadRequest", "WorkloadSpec", "from_engine_config",
    "generate_workload", "load_replay", "poisson_arrivals", "save_replay",
]
