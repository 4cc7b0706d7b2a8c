import math

import numpy as np
import torch

from tinyserve_core.model.train import corpus
from tinyserve_core.model.train.evaluate import heldout_loss, passkey_accuracy
from tinyserve_core.model.train.passkey import PasskeyTemplate, make_samples


class KeyOracle:
    """Retrieves the needle's key after the question, but gets the third digit wrong
    whenever the key's first digit is odd: a model with a known accuracy."""

    def __init__(self, template: PasskeyTemplate, vocab: int):
        self.t, self.vocab = template, vocab

    def forward_dense(self, x: torch.Tensor) -> torch.Tensor:
        B, T = x.shape
        logits = torch.zeros(B, T, self.vocab)
        head, q = self.t.head, self.t.question
        for b in range(B):
            row = x[b].tolist()
            h = next(i for i in range(T) if row[i : i + len(head)] == head) + len(head)
            key = row[h : h + 5]
            qend = next(i for i in range(T) if row[i : i + len(q)] == q) + len(q)
            for j in range(5):
                pos = qend - 1 + j  # predicts token qend + j
                if pos < T:
                    want = key[j]
                    if j == 2 and self.t.digit_ids.index(key[0]) % 2 == 1:
                        want = self.t.digit_ids[(self.t.digit_ids.index(key[2]) + 1) % 10]
                    logits[b, pos, want] = 1.0
        return logits


def test_one_pass_verdict_equals_greedy_decoding(tiny_roots, tiny_tokenizer):
    src = corpus.tokenize_documents(tiny_tokenizer, corpus.collect_documents(*tiny_roots), 0)
    t = PasskeyTemplate(tiny_tokenizer)
    oracle = KeyOracle(t, tiny_tokenizer.get_vocab_size())
    samples = make_samples(tiny_tokenizer, src, 40, 150, seed=5)
    greedy_ok = 0
    for s in samples:
        x = torch.tensor([s.prompt_ids])
        for _ in range(5):
            x = torch.cat([x, oracle.forward_dense(x)[:, -1:].argmax(-1)], dim=1)
        greedy_ok += x[0, -5:].tolist() == s.answer_ids
    even = sum(int(s.key[0]) % 2 == 0 for s in samples)
    r = passkey_accuracy(oracle, tiny_tokenizer, src, 40, 150, "cpu", seed=5, batch_size=7)
    assert 0 < even < 40 and greedy_ok == even
    assert r["accuracy"] == even / 40
    assert sum(b["n"] for b in r["by_depth"]) == 40
    wrong_digits = 40 - even
    assert math.isclose(r["digit_accuracy"], 1 - wrong_digits / 200)


def test_heldout_loss_is_mean_token_cross_entropy():
    torch.manual_seed(0)
    emb = torch.nn.Embedding(50, 50)

    class Bigram:
        def forward_dense(self, x):
            return emb(x)

    ids = np.random.default_rng(0).integers(0, 50, 1 + 3 * 16).astype(np.uint16)
    r = heldout_loss(Bigram(), ids, 16, "cpu", batch_size=2)
    x = torch.from_numpy(ids.astype(np.int64))
    want = torch.nn.functional.cross_entropy(emb(x[:-1]), x[1:]).item()
    assert r["tokens"] == 48 and math.isclose(r["loss"], want, rel_tol=1e-5)
    assert math.isclose(r["perplexity"], math.exp(want), rel_tol=1e-5)
