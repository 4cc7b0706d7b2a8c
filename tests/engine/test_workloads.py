"""Workload generators: determinism, arrival and length statistics, shared prefixes,
pass-key prompts, replay files and their errors, spec validation."""

from __future__ import annotations

import dataclasses
import json
import re
import zlib

import numpy as np
import pytest

from tinyserve_core.engine.workloads import (
    LengthDist, TextCorpus, WorkloadRequest, WorkloadSpec, from_engine_config,
    generate_workload, load_replay, poisson_arrivals, save_replay,
)
from tinyserve_core.errors import ConfigError, InputFileError

_PIECE = re.compile(r"\s?[A-Za-z]{1,4}|\d|\s?[^\w\s]|\s+")


def subword_tokenize(text: str) -> list[int]:
    """A BPE-like stand-in: words split into <= 4-letter pieces, digits one per token."""
    return [zlib.crc32(p.encode()) % 50_000 for p in _PIECE.findall(text)]


@pytest.fixture(scope="module")
def bpe():
    """A real byte-level BPE (tokenizers), digits split, with a BOS post-processor."""
    from tokenizers import Tokenizer, models, pre_tokenizers, processors, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Digits(individual_digits=True), pre_tokenizers.ByteLevel(add_prefix_space=False)])
    corpus = TextCorpus.from_dir()
    trainer = trainers.BpeTrainer(vocab_size=600, special_tokens=["<s>"], show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator([corpus.text(0, 20_000)], trainer)
    tok.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", 0)])
    return tok


def test_same_seed_same_requests_different_seed_different():
    spec = WorkloadSpec(requests=40, shared_prefix_frac=0.5, seed=7)
    a = generate_workload(spec, subword_tokenize)
    b = generate_workload(dataclasses.replace(spec), subword_tokenize)
    c = generate_workload(dataclasses.replace(spec, seed=8), subword_tokenize)
    assert a == b
    assert [r.arrival_s for r in a] != [r.arrival_s for r in c]
    assert [r.prompt for r in a] != [r.prompt for r in c]


def test_arrivals_do_not_move_when_lengths_change():
    base = generate_workload(WorkloadSpec(requests=30, seed=3))
    other = generate_workload(WorkloadSpec(requests=30, seed=3, prompt_dist="fixed", output_len=9))
    assert [r.arrival_s for r in base] == [r.arrival_s for r in other]
    assert [r.max_tokens for r in base] != [r.max_tokens for r in other]


def test_poisson_rate_and_count_are_right():
    rng = np.random.default_rng(0)
    times = poisson_arrivals(rng, rate=5.0, duration=None, count=4000)
    gaps = np.diff(np.concatenate([[0.0], times]))
    assert np.all(gaps > 0)
    assert gaps.mean() == pytest.approx(0.2, rel=0.06)           # 1/rate
    assert gaps.std() / gaps.mean() == pytest.approx(1.0, rel=0.08)  # exponential: CV = 1
    by_time = poisson_arrivals(np.random.default_rng(1), rate=20.0, duration=100.0, count=None)
    assert abs(len(by_time) - 2000) < 4 * np.sqrt(2000)
    assert by_time.max() < 100.0 and np.all(np.diff(by_time) > 0)


def test_duration_and_count_stop_at_whichever_comes_first():
    few = generate_workload(WorkloadSpec(rate=10.0, duration=1000.0, requests=12))
    assert len(few) == 12
    short = generate_workload(WorkloadSpec(rate=10.0, duration=2.0, requests=10_000))
    assert 0 < len(short) < 60 and all(r.arrival_s < 2.0 for r in short)


def test_static_batch_arrives_at_zero():
    reqs = generate_workload(WorkloadSpec(workload="static", requests=16, n=3))
    assert len(reqs) == 16
    assert all(r.arrival_s == 0.0 and r.n == 3 for r in reqs)


def test_length_distributions_respect_their_bounds():
    rng = np.random.default_rng(0)
    logn = LengthDist("lognormal", 200, 400, sigma=1.0).sample(rng, 5000)
    assert logn.min() >= 1 and logn.max() == 400             # clipped, and the clip is hit
    assert np.median(logn) == pytest.approx(200, rel=0.08)
    uni = LengthDist("uniform", 10, 20).sample(rng, 2000)
    assert set(uni.tolist()) == set(range(10, 21))            # both ends inclusive
    assert np.all(LengthDist("fixed", 33, 99).sample(rng, 10) == 33)


def test_prompts_have_exact_token_lengths_cut_from_real_text():
    spec = WorkloadSpec(requests=30, prompt_dist="uniform", prompt_len=20, prompt_len_max=300)
    for r in generate_workload(spec, subword_tokenize):
        assert r.prompt_len == len(r.prompt_token_ids)
        assert 20 <= r.prompt_len <= 300
        # ids are the text's own tokens, cut at a token boundary inside its last word
        full = subword_tokenize(r.prompt)
        assert full[: r.prompt_len] == r.prompt_token_ids
        assert len(subword_tokenize(r.prompt.rsplit(" ", 1)[0])) < r.prompt_len
        assert r.prompt[0].isupper()                          # starts at a sentence


def test_without_tokenizer_lengths_count_words():
    reqs = generate_workload(WorkloadSpec(requests=5, prompt_dist="fixed", prompt_len=50))
    assert all(r.prompt_token_ids is None and len(r.prompt.split()) == 50 == r.prompt_len for r in reqs)


def test_shared_prefix_groups_share_exact_token_prefixes():
    spec = WorkloadSpec(requests=200, shared_prefix_frac=0.6, num_prefix_groups=3,
                        shared_prefix_len=64, prompt_len=150, prompt_dist="fixed")
    reqs = generate_workload(spec, subword_tokenize)
    grouped = [r for r in reqs if r.group is not None]
    assert 0.5 < len(grouped) / len(reqs) < 0.7
    prefixes = {}
    for r in grouped:
        head = tuple(r.prompt_token_ids[:64])
        assert prefixes.setdefault(r.group, head) == head
        assert r.prompt_len == 150
    assert len(set(prefixes.values())) == 3
    assert {r.group for r in grouped} == {0, 1, 2}
    # ungrouped prompts do not start with any shared prefix
    loose = [r for r in reqs if r.group is None]
    assert all(tuple(r.prompt_token_ids[:64]) not in prefixes.values() for r in loose)


def test_passkey_prompts_follow_the_training_format(bpe):
    from tinyserve_core.model.tokenizer import Tokenizer
    from tinyserve_core.model.train.passkey import PasskeyTemplate

    cfg = dict(workload="passkey", requests=6, prompt_dist="fixed", prompt_len=160,
               output_len=5, output_dist="fixed", seed=2)
    reqs = from_engine_config(cfg, Tokenizer(bpe, bos_token_id=0))
    template = PasskeyTemplate(bpe)
    keys = set()
    for r in reqs:
        keys.add(r.passkey)
        ids = r.prompt_token_ids
        assert ids[0] == 0 and ids.count(0) == 1                  # the tokenizer's BOS, once
        assert r.prompt_len == len(ids) == 160
        assert ids[-len(template.question):] == template.question
        k = template.key_ids(r.passkey)
        needle = template.head + k + template.mid + k + template.tail
        assert any(ids[i:i + len(needle)] == needle for i in range(len(ids)))
        assert f"The pass key is {r.passkey}." in r.prompt
        assert r.prompt.endswith("What is the pass key? The pass key is ")
    assert len(keys) == 6


def test_passkey_depth_places_the_needle():
    for depth, where in ((0.0, "start"), (1.0, "end")):
        (r,) = generate_workload(WorkloadSpec(workload="passkey", requests=1, prompt_len=200,
                                              prompt_dist="fixed", passkey_depth=depth), subword_tokenize)
        pos = r.prompt.index("The pass key is")
        if where == "start":
            assert pos < 5
        else:
            assert pos > len(r.prompt) * 0.8


def test_engine_config_keys_convert():
    from tinyserve_core.engine.config import EngineConfig

    cfg = EngineConfig.from_dict(dict(workload="static", requests=9, prompt_len=40, prompt_dist="fixed"))
    spec = WorkloadSpec.from_config(cfg)
    assert (spec.workload, spec.requests, spec.prompt_len, spec.prompt_dist) == ("static", 9, 40, "fixed")
    assert len(from_engine_config(cfg)) == 9


def test_bos_is_detected_and_counted(bpe):
    from tinyserve_core.model.tokenizer import Tokenizer

    reqs = from_engine_config(dict(requests=4, prompt_dist="fixed", prompt_len=64), Tokenizer(bpe))
    assert all(r.prompt_token_ids[0] == 0 and r.prompt_len == 64 for r in reqs)


def test_text_dir_is_used_and_notes_skipped(tmp_path):
    (tmp_path / "a.txt").write_text("Alpha beta gamma delta. " * 50)
    (tmp_path / "README.md").write_text("Never in a prompt. " * 50)
    (tmp_path / "heldout" / "library").mkdir(parents=True)  # evaluation text, not prompts
    (tmp_path / "heldout" / "library" / "x.rst.txt").write_text("Never held out. " * 50)
    reqs = generate_workload(WorkloadSpec(requests=5, text_dir=str(tmp_path), prompt_len=30, prompt_dist="fixed"))
    assert all("Never" not in r.prompt and "Alpha" in r.prompt for r in reqs)
    with pytest.raises(ConfigError) as e:
        generate_workload(WorkloadSpec(requests=1, text_dir=str(tmp_path / "missing")))
    assert e.value.field == "text_dir"
    (tmp_path / "empty").mkdir()
    with pytest.raises(ConfigError, match="text_dir"):
        TextCorpus.from_dir(tmp_path / "empty")


def test_replay_round_trip(tmp_path):
    reqs = generate_workload(WorkloadSpec(requests=20, n=2, shared_prefix_frac=0.5), subword_tokenize)
    path = tmp_path / "w.jsonl"
    save_replay(reqs, path)
    again = load_replay(path, tokenize=subword_tokenize)
    assert [(r.arrival_s, r.prompt_token_ids, r.max_tokens, r.n, r.group) for r in again] == \
           [(r.arrival_s, r.prompt_token_ids, r.max_tokens, r.n, r.group) for r in reqs]
    via_spec = generate_workload(WorkloadSpec(workload="replay", replay_file=str(path)), subword_tokenize)
    assert [r.prompt for r in via_spec] == [r.prompt for r in reqs]


def test_replay_forms_and_order(tmp_path):
    path = tmp_path / "w.jsonl"
    path.write_text("\n".join([
        json.dumps({"arrival_s": 2.0, "prompt": "Hello there world", "max_tokens": 4}),
        "",
        json.dumps({"arrival_s": 0.5, "prompt_len": 40, "max_tokens": 8, "n": 3, "salt": "tenant-a"}),
        json.dumps({"arrival_s": 1, "prompt_token_ids": [5, 6, 7], "max_tokens": 1}),
    ]) + "\n")
    reqs = load_replay(path, tokenize=subword_tokenize)
    assert [r.arrival_s for r in reqs] == [0.5, 1.0, 2.0]
    assert reqs[0].prompt_len == 40 and reqs[0].n == 3 and reqs[0].salt == "tenant-a"
    assert reqs[1].prompt_token_ids == [5, 6, 7]
    assert reqs[2].prompt_token_ids == subword_tokenize("Hello there world") and reqs[2].n == 1


@pytest.mark.parametrize("line, start", [
    ('{"arrival_s": 0.1, "prompt": "x", "max_tokens": 4', "json: invalid JSON"),
    ('[1, 2]', "line: expected a JSON object"),
    ('{"prompt": "x", "max_tokens": 4}', "arrival_s: missing"),
    ('{"arrival_s": -1, "prompt": "x", "max_tokens": 4}', "arrival_s: must be"),
    ('{"arrival_s": "soon", "prompt": "x", "max_tokens": 4}', "arrival_s: must be"),
    ('{"arrival_s": 0, "prompt": "x"}', "max_tokens: missing"),
    ('{"arrival_s": 0, "prompt": "x", "max_tokens": 0}', "max_tokens: must be"),
    ('{"arrival_s": 0, "prompt": "x", "max_tokens": 2.5}', "max_tokens: must be"),
    ('{"arrival_s": 0, "prompt": "x", "max_tokens": 2, "n": true}', "n: must be"),
    ('{"arrival_s": 0, "max_tokens": 2}', "prompt: missing"),
    ('{"arrival_s": 0, "prompt": "", "max_tokens": 2}', "prompt: must be"),
    ('{"arrival_s": 0, "prompt": "x", "prompt_len": 5, "max_tokens": 2}', "prompt_len: give 'prompt'"),
    ('{"arrival_s": 0, "prompt_len": "long", "max_tokens": 2}', "prompt_len: must be"),
    ('{"arrival_s": 0, "prompt_token_ids": [1, "a"], "max_tokens": 2}', "prompt_token_ids: must be"),
    ('{"arrival_s": 0, "prompt": "x", "max_tokens": 2, "temperature": 1}', '"temperature": unknown field'),
    # limits stated in the message
    ('{"arrival_s": 0, "prompt": "x", "max_tokens": 2, "n": 65}', "n: must be an integer from 1 to 64"),
    ('{"arrival_s": 1e305, "prompt": "x", "max_tokens": 2}', "arrival_s: must be a number of seconds from 0 to 1e+09"),
    ('{"arrival_s": 0, "prompt_len": 100000000, "max_tokens": 2}', "prompt_len: must be an integer from 1 to 1048576"),
    ('{"arrival_s": 0, "prompt": "x", "max_tokens": 2, "group": -1}', "group: must be an integer from 0"),
    ('{"arrival_s": 0, "prompt": "x", "max_tokens": 2, "salt": 3}', "salt: must be a string"),
])
def test_replay_errors_name_line_and_field(tmp_path, line, start):
    path = tmp_path / "bad.jsonl"
    good = json.dumps({"arrival_s": 0.0, "prompt": "fine", "max_tokens": 2})
    path.write_text(f"{good}\n\n{line}\n{good}\n")
    with pytest.raises(InputFileError) as e:
        load_replay(path)
    assert e.value.line == 3
    assert e.value.message.startswith(start), e.value.message
    assert str(e.value).startswith(f"{path}:3: ")


def test_replay_file_level_errors(tmp_path):
    with pytest.raises(InputFileError, match="no such file"):
        load_replay(tmp_path / "nope.jsonl")
    with pytest.raises(InputFileError, match="is a directory"):
        load_replay(tmp_path)
    (tmp_path / "empty.jsonl").write_text("\n\n# only a comment\n")
    with pytest.raises(InputFileError, match="no requests"):
        load_replay(tmp_path / "empty.jsonl")
    (tmp_path / "latin1.jsonl").write_bytes(b'{"arrival_s": 0, "prompt": "x", "max_tokens": 2}\n'
                                            b'{"arrival_s": 0, "prompt": "caf\xe9", "max_tokens": 2}\n')
    with pytest.raises(InputFileError, match="not UTF-8") as e:
        load_replay(tmp_path / "latin1.jsonl")
    assert e.value.line == 2


def test_a_replay_line_too_long_for_any_prompt_is_refused_unread(tmp_path):
    from tinyserve_core.engine.workloads.replay import MAX_REPLAY_LINE_CHARS
    path = tmp_path / "huge.jsonl"
    path.write_text(json.dumps({"arrival_s": 0, "prompt": "w " * (MAX_REPLAY_LINE_CHARS // 2),
                                "max_tokens": 2}) + "\n")
    with pytest.raises(InputFileError, match=f"over the limit of {MAX_REPLAY_LINE_CHARS}") as e:
        load_replay(path)
    assert e.value.line == 1


def test_replay_is_checked_against_the_model_before_any_text_is_built(tmp_path, monkeypatch):
    from tinyserve_core.engine.workloads import ModelLimits

    limits = ModelLimits(context=64, vocab_size=50_000)   # subword_tokenize's ids are below
    path = tmp_path / "w.jsonl"

    def load(line):
        path.write_text(json.dumps({"arrival_s": 0, "prompt": "fine", "max_tokens": 2}) + "\n" + line + "\n")
        with pytest.raises(InputFileError) as e:
            load_replay(path, tokenize=subword_tokenize, limits=limits)
        assert e.value.line == 2
        return e.value.message

    assert load('{"arrival_s": 0, "prompt_token_ids": [5, 50000], "max_tokens": 2}') == (
        "prompt_token_ids: token id 50000 is outside the model's vocabulary of 50000 ids (0 to 49999)")
    assert load('{"arrival_s": 0, "prompt_token_ids": ' + json.dumps([1] * 64) + ', "max_tokens": 2}') \
        .startswith("prompt_token_ids: 64 tokens do not fit the model's context of 64")
    assert load('{"arrival_s": 0, "prompt": "' + "word " * 80 + '", "max_tokens": 2}').startswith(
        "prompt: ")
    # no text is cut for a length the model cannot take
    monkeypatch.setattr(TextCorpus, "passage", lambda *a: pytest.fail("text built"))
    assert load('{"arrival_s": 0, "prompt_len": 64, "max_tokens": 2}').startswith(
        "prompt_len: 64 tokens do not fit the model's context of 64 (max_model_len; at most 63")
    # a tokenizer whose ids run past the model's vocabulary
    big = lambda text: [50_000 + len(w) for w in text.split()]  # noqa: E731
    path.write_text('{"arrival_s": 0, "prompt": "hello", "max_tokens": 2}\n')
    with pytest.raises(InputFileError, match="prompt: token id 50005 is outside"):
        load_replay(path, tokenize=big, limits=limits)


def test_generated_workloads_are_checked_against_the_model():
    from tinyserve_core.engine.workloads import ModelLimits

    limits = ModelLimits(context=64, vocab_size=100_000)
    with pytest.raises(ConfigError) as e:
        generate_workload(WorkloadSpec(requests=2, prompt_len=10, prompt_len_max=64), subword_tokenize,
                          limits=limits)
    assert e.value.field == "prompt_len_max" and "context of 64" in e.value.message
    with pytest.raises(ConfigError) as e:
        generate_workload(WorkloadSpec(requests=2, prompt_len=10, prompt_len_max=20, shared_prefix_frac=0.5,
                                       shared_prefix_len=63), subword_tokenize, limits=limits)
    assert e.value.field == "shared_prefix_len"
    fits = WorkloadSpec(requests=2, prompt_dist="fixed", prompt_len=63, prompt_len_max=1000)
    assert max(r.prompt_len for r in generate_workload(fits, subword_tokenize, limits=limits)) == 63
    with pytest.raises(ConfigError, match="tokenizer and weights do not match: a prompt.s token id") as e:
        generate_workload(fits, subword_tokenize, limits=ModelLimits(context=64, vocab_size=3))
    assert e.value.field == "model"


@pytest.mark.parametrize("changes, field", [
    (dict(workload="bursty"), "workload"),
    (dict(workload="replay"), "replay_file"),
    (dict(rate=0), "rate"),
    (dict(rate=float("nan")), "rate"),
    (dict(duration=None, requests=None), "requests"),
    (dict(workload="static", requests=None, duration=5.0), "requests"),
    (dict(requests=0), "requests"),
    (dict(prompt_len=300, prompt_len_max=200), "prompt_len_max"),
    (dict(output_dist="zipf"), "output_dist"),
    (dict(prompt_sigma=-1.0), "prompt_sigma"),
    (dict(n=0), "n"),
    (dict(n=True), "n"),
    (dict(shared_prefix_frac=1.5), "shared_prefix_frac"),
    (dict(num_prefix_groups=0), "num_prefix_groups"),
    (dict(passkey_depth=2.0), "passkey_depth"),
    (dict(seed=-1), "seed"),
])
def test_spec_validation_names_the_field(changes, field):
    with pytest.raises(ConfigError) as e:
        WorkloadSpec(**changes)
    assert e.value.field == field


def test_spec_dict_round_trip_and_unknown_key():
    spec = WorkloadSpec(workload="static", requests=3, prompt_dist="uniform", passkey_depth=0.5)
    assert WorkloadSpec.from_dict(json.loads(json.dumps(spec.to_dict()))) == spec
    with pytest.raises(ConfigError) as e:
        WorkloadSpec.from_dict({"rtae": 3})
    assert e.value.field == "rtae"


def test_request_fields():
    r = WorkloadRequest(0.0, "hi", None, 1, 4)
    assert (r.n, r.salt, r.group, r.passkey) == (1, None, None, None)


def test_offsets_shortcut_matches_the_word_search(bpe):
    from tinyserve_core.engine.workloads import ModelTokenize
    from tinyserve_core.model.tokenizer import Tokenizer

    fast = ModelTokenize(Tokenizer(bpe))
    assert fast.with_offsets is not None

    def slow(text):                      # a bare callable: the bisection path
        return bpe.encode(text, add_special_tokens=False).ids

    spec = WorkloadSpec(requests=25, prompt_dist="uniform", prompt_len=5, prompt_len_max=400, seed=4)
    a, b = generate_workload(spec, fast), generate_workload(spec, slow)
    assert [r.prompt_token_ids for r in a] == [r.prompt_token_ids for r in b]
    assert [r.prompt for r in a] == [r.prompt for r in b]


def test_passkey_with_a_tokenizer_that_groups_digits():
    def grouping(text):                  # digits in runs: the training template refuses it
        return [zlib.crc32(p.encode()) % 50_000 for p in re.findall(r"\s?[A-Za-z]{1,4}|\d+|\s?[^\w\s]|\s+", text)]

    reqs = generate_workload(WorkloadSpec(workload="passkey", requests=4, prompt_len=150, prompt_dist="fixed"),
                             grouping)
    for r in reqs:
        assert r.prompt_token_ids == grouping(r.prompt)
        assert abs(r.prompt_len - 150) <= 8 and r.passkey in r.prompt    # whole words at the cuts


def test_a_text_folder_file_that_is_not_utf8_is_named_with_its_line(tmp_path):
    (tmp_path / "a.txt").write_text("Fine text. More fine text.\n")
    (tmp_path / "b.txt").write_bytes(b"One line.\nCaf\xe9 au lait.\n")
    with pytest.raises(InputFileError) as e:
        TextCorpus.from_dir(tmp_path)
    assert str(e.value).startswith(f"{tmp_path / 'b.txt'}:2: text_dir: not UTF-8 text")


def test_generated_arrivals_stay_within_the_replay_limit():
    with pytest.raises(ConfigError, match=r"past the limit of 1e\+09 s") as e:
        generate_workload(WorkloadSpec(rate=1e-8, requests=64, prompt_len=5, prompt_len_max=9))
    assert e.value.field == "rate"
