"""Golden tests: our loader + paged runtime against Hugging Face transformers (fp32)."""

from __future__ import annotations

import random

import torch

from tinyserve_core.engine.model_runner import DecodeItem, ModelRunner, PrefillItem
from tinyserve_core.model import load_model

TOL = 1e-4
BS = 4  # small pages so every sequence spans several, non-contiguous blocks


class Blocks:
    """Hands out shuffled block ids so block tables are never contiguous."""

    def __init__(self, num_blocks: int, seed: int = 0):
        self.free = list(range(num_blocks))
        random.Random(seed).shuffle(self.free)

    def take(self, n: int) -> list[int]:
        out, self.free = self.free[:n], self.free[n:]
        return out


def ensure(table: list[int], blocks: Blocks, num_tokens: int) -> None:
    while len(table) * BS < num_tokens:
        table += blocks.take(1)


def hf_last_logits(hf, ids: list[int]) -> torch.Tensor:
    with torch.no_grad():
        return hf(torch.tensor([ids])).logits[0, -1]


def test_dense_logits_match_hf(hf_folder):
    path, hf = hf_folder
    model, _ = load_model(path)
    x = torch.randint(0, model.config.vocab_size, (3, 37), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        ref = hf(x).logits
        ours = model.forward_dense(x)
    assert (ours - ref).abs().max().item() < TOL


def test_paged_prefill_and_32_decode_steps_match_hf(hf_folder):
    path, hf = hf_folder
    model, _ = load_model(path)
    runner = ModelRunner(model, num_blocks=64, block_size=BS, device="cpu", dtype=torch.float32)
    blocks = Blocks(64)
    g = torch.Generator().manual_seed(2)
    seqs = [torch.randint(2, 300, (n,), generator=g).tolist() for n in (5, 13, 22)]
    tables = [blocks.take((len(s) + BS - 1) // BS) for s in seqs]

    logits = runner.prefill([PrefillItem(i, s, 0, t) for i, (s, t) in enumerate(zip(seqs, tables))]).logits
    for i, s in enumerate(seqs):
        assert (logits[i] - hf_last_logits(hf, s)).abs().max().item() < TOL

    for _ in range(32):
        nxt = logits.argmax(-1).tolist()
        items = []
        for i, s in enumerate(seqs):
            s.append(nxt[i])
            ensure(tables[i], blocks, len(s))
            items.append(DecodeItem(i, nxt[i], len(s) - 1, tables[i]))
        logits = runner.decode(items).logits
        for i, s in enumerate(seqs):
            assert (logits[i] - hf_last_logits(hf, s)).abs().max().item() < TOL, (i, len(s))


def test_prefill_with_cached_prefix_matches_hf(hf_folder):
    """A second request shares the first two full blocks of the first (a prefix-cache
    hit): it computes only its suffix, attends over the cached pages, then decodes."""
    path, hf = hf_folder
    model, _ = load_model(path)
    runner = ModelRunner(model, num_blocks=32, block_size=BS)
    blocks = Blocks(32, seed=3)
    g = torch.Generator().manual_seed(4)
    a = torch.randint(2, 300, (11,), generator=g).tolist()
    b = a[:8] + torch.randint(2, 300, (9,), generator=g).tolist()
    c = torch.randint(2, 300, (6,), generator=g).tolist()
    ta = blocks.take(3)
    runner.prefill([PrefillItem(0, a, 0, ta)])
    tb = ta[:2] + blocks.take(3)
    tc = blocks.take(2)
    # Packed together with an uncached request, so the varlen path mixes both kinds.
    logits = runner.prefill([PrefillItem(1, b, 8, tb), PrefillItem(2, c, 0, tc)]).logits
    assert (logits[0] - hf_last_logits(hf, b)).abs().max().item() < TOL
    assert (logits[1] - hf_last_logits(hf, c)).abs().max().item() < TOL
    seqs, tables = [b, c], [tb, tc]
    for _ in range(8):
        nxt = logits.argmax(-1).tolist()
        for s, t, tok in zip(seqs, tables, nxt):
            s.append(tok)
            ensure(t, blocks, len(s))
        logits = runner.decode([DecodeItem(i + 1, s[-1], len(s) - 1, t) for i, (s, t) in enumerate(zip(seqs, tables))]).logits
        for i, s in enumerate(seqs):
            assert (logits[i] - hf_last_logits(hf, s)).abs().max().item() < TOL


def test_greedy_generation_identical_to_hf_generate(hf_folder):
    path, hf = hf_folder
    model, tok = load_model(path)
    runner = ModelRunner(model, num_blocks=64, block_size=BS)
    blocks = Blocks(64, seed=5)
    prompts = [tok.encode("The quick brown fox"), tok.encode("Paged attention keeps keys and values")]
    new = 24
    ours = []
    tables = [blocks.take((len(p) + BS - 1) // BS) for p in prompts]
    seqs = [list(p) for p in prompts]
    logits = runner.prefill([PrefillItem(i, s, 0, t) for i, (s, t) in enumerate(zip(seqs, tables))]).logits
    for step in range(new):
        nxt = logits.argmax(-1).tolist()
        for s, t, tok_id in zip(seqs, tables, nxt):
            s.append(tok_id)
            ensure(t, blocks, len(s))
        if step < new - 1:
            logits = runner.decode([DecodeItem(i, s[-1], len(s) - 1, t) for i, (s, t) in enumerate(zip(seqs, tables))]).logits
    ours = [s[len(p):] for s, p in zip(seqs, prompts)]
    for p, o in zip(prompts, ours):
        with torch.no_grad():
            out = hf.generate(torch.tensor([p]), attention_mask=torch.ones(1, len(p), dtype=torch.long),
                              do_sample=False, max_new_tokens=new, min_new_tokens=new, pad_token_id=0)
        assert out[0, len(p):].tolist() == o
