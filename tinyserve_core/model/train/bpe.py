"""Byte-level BPE tokenizer for the shipped model, trained with `tokenizers`.

Digits are split one per token before the byte-level step, so a 5-digit pass key is
always five tokens and the model copies it digit by digit (retrieval is then an
induction pattern, not a memorised multi-digit token). The saved folder loads with
`tokenizers.Tokenizer.from_file` and with transformers' `AutoTokenizer`.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers

from ...errors import ConfigError

EOS_TOKEN = "<|endoftext|>"
MIN_VOCAB, MAX_VOCAB = 4096, 8192


def _pre_tokenizer() -> pre_tokenizers.PreTokenizer:
    return pre_tokenizers.Sequence(
        [
            pre_tokenizers.Digits(individual_digits=True),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True),
        ]
    )


def train_tokenizer(texts: Iterable[str], vocab_size: int, *, min_vocab: int = MIN_VOCAB) -> Tokenizer:
    """Train a byte-level BPE on `texts`. `min_vocab` is lowered only by tests that train
    on a few kilobytes, where 4,096 merges do not exist."""
    if not (min_vocab <= vocab_size <= MAX_VOCAB):
        raise ConfigError("--vocab-size", f"must be in [{min_vocab}, {MAX_VOCAB}], got {vocab_size}")
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = _pre_tokenizer()
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = processors.ByteLevel(trim_offsets=False)
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=2,
        special_tokens=[EOS_TOKEN],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer=trainer)
    return tok


def save_tokenizer(tok: Tokenizer, out_dir: str | Path, model_max_length: int) -> None:
    """Write tokenizer.json plus the two small files transformers needs to build a fast
    tokenizer from it with the right special tokens."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    tok.save(str(out / "tokenizer.json"))
    special = {"bos_token": EOS_TOKEN, "eos_token": EOS_TOKEN, "unk_token": EOS_TOKEN}
    config = {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "model_max_length": model_max_length,
        "add_bos_token": False,
        "add_eos_token": False,
        "clean_up_tokenization_spaces": False,
        **special,
    }
    (out / "tokenizer_config.json").write_text(json.dumps(config, indent=2) + "\n")
    (out / "special_tokens_map.json").write_text(json.dumps(special, indent=2) + "\n")


def load_tokenizer(path: str | Path) -> Tokenizer:
    p = Path(path)
    if p.is_dir():
        p = p / "tokenizer.json"
    return Tokenizer.from_file(str(p))


def eos_id(tok: Tokenizer) -> int:
    i = tok.token_to_id(EOS_TOKEN)
    if i is None:
        raise ConfigError("tokenizer", f"has no {EOS_TOKEN} token")
    return i
