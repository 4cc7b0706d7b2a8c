import numpy as np
import pytest

from tinyserve_core.errors import ConfigError
from tinyserve_core.model.train import corpus, passkey
from tinyserve_core.model.train.data import BatchSampler


@pytest.fixture(scope="module")
def stream(tiny_roots, tiny_tokenizer):
    docs = corpus.collect_documents(*tiny_roots)
    return corpus.tokenize_documents(tiny_tokenizer, docs, 0)


def test_sample_has_exact_length_and_is_the_tokenized_text(stream, tiny_tokenizer):
    t = passkey.PasskeyTemplate(tiny_tokenizer)
    rng = np.random.default_rng(3)
    for length in (t.min_length(), 200, 517):
        s = t.sample(rng, stream, length)
        assert s.length == length and len(s.answer_ids) == 5
        text = tiny_tokenizer.decode(s.prompt_ids + s.answer_ids)
        assert text.endswith("What is the pass key? The pass key is " + s.key)
        assert text.count(s.key) == 3  # twice in the needle, once as the answer
        # Digits are split first, so the needle's ids are the tokenization of its text.
        needle = tiny_tokenizer.encode(f"\n\nThe pass key is {s.key}. Remember it. {s.key} is the pass key.\n\n").ids
        assert s.prompt_ids[s.needle_pos : s.needle_pos + len(needle)] == needle


def test_depth_places_the_needle(stream, tiny_tokenizer):
    t = passkey.PasskeyTemplate(tiny_tokenizer)
    filler = stream[:300]
    assert t.build(filler, "12345", 0.0).needle_pos == 0
    assert t.build(filler, "12345", 0.5).needle_pos == 150
    assert t.build(filler, "12345", 1.0).needle_pos == 300
    with pytest.raises(ConfigError, match="length"):
        t.sample(np.random.default_rng(0), stream, t.min_length() - 1)
    with pytest.raises(ConfigError, match="key"):
        t.build(filler, "1234", 0.5)


def test_make_samples_is_reproducible_and_spreads_depth(stream, tiny_tokenizer):
    a = passkey.make_samples(tiny_tokenizer, stream, 10, 150, seed=7)
    b = passkey.make_samples(tiny_tokenizer, stream, 10, 150, seed=7)
    assert [s.prompt_ids for s in a] == [s.prompt_ids for s in b]
    assert [round(s.depth, 2) for s in a] == [0.05, 0.15, 0.25, 0.35, 0.45, 0.55, 0.65, 0.75, 0.85, 0.95]
    assert len({s.key for s in a}) > 5


def test_batches_mix_passkey_rows_and_resume_exactly(stream, tiny_tokenizer):
    t = passkey.PasskeyTemplate(tiny_tokenizer)
    s = BatchSampler(stream, t, 0, 64, 128, 0.25, seed=1)
    b = s.next()
    assert b.shape == (64, 129) and b.dtype == np.int64
    question = np.array(t.question)
    has_q = [any((row[i : i + len(question)] == question).all() for i in range(129 - len(question))) for row in b]
    assert 6 <= sum(has_q) <= 30  # ~25% of 64 rows
    state = s.state()
    nxt = s.next()
    s2 = BatchSampler(stream, t, 0, 64, 128, 0.25, seed=999)
    s2.set_state(state)
    assert (s2.next() == nxt).all()
    with pytest.raises(ConfigError, match="--passkey-frac"):
        BatchSampler(stream, t, 0, 4, 128, 0.9, seed=1)
