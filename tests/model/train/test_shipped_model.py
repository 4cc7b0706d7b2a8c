"""The shipped default model: format, size, HF compatibility, and that it still
retrieves pass keys (a few held-out samples, CPU)."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from tinyserve_core.model.loader import default_model_dir, load_model
from tinyserve_core.model.train import corpus
from tinyserve_core.model.train.evaluate import passkey_accuracy

MODEL = default_model_dir()
pytestmark = pytest.mark.skipif(not (MODEL / "model.safetensors").is_file(), reason="shipped model not present")


def _heldout_text_ids(tok, n: int) -> np.ndarray:
    """Token ids of the shipped held-out documentation files (never trained on)."""
    if not corpus.SHIPPED_HELDOUT_ROOT.is_dir():
        pytest.skip("the shipped held-out text (assets/text/heldout) is not present")
    ids: list[int] = []
    for doc in corpus.shipped_heldout_documents(0.05):
        ids += tok.encode(doc.text) + [0]
        if len(ids) >= n:
            return np.asarray(ids[:n], dtype=np.int64)
    pytest.skip("not enough held-out documentation text")


@pytest.fixture(scope="module")
def shipped():
    return load_model(MODEL)


def test_folder_is_small_fp16_gqa_with_a_card():
    files = {p.name: p.stat().st_size for p in MODEL.iterdir()}
    assert sum(files.values()) <= 25e6 and files["model.safetensors"] <= 24e6
    cfg = json.loads((MODEL / "config.json").read_text())
    assert (cfg["num_attention_heads"], cfg["num_key_value_heads"], cfg["head_dim"]) == (8, 2, 64)
    assert cfg["max_position_embeddings"] == 2048 and cfg["model_type"] == "llama"
    from safetensors import safe_open

    with safe_open(str(MODEL / "model.safetensors"), "pt") as f:
        assert {f.get_tensor(k).dtype for k in f.keys()} == {torch.float16}
    ev = json.loads((MODEL / "eval.json").read_text())
    card = (MODEL / "MODEL_CARD.md").read_text()
    for p in ev["passkey"]:
        assert f"| {p['length']} | {p['n']} | {p['accuracy']:.1%} |" in card
    assert f"{ev['heldout']['heldout_docs']['perplexity']:.2f}" in card and "PSF License" in card


def test_transformers_gives_the_same_logits_on_heldout_text(shipped):
    pytest.importorskip("transformers")
    from tinyserve_core.model.train.hf_compat import compare_logits

    ids = _heldout_text_ids(shipped[1], 512)
    r = compare_logits(MODEL, torch.from_numpy(ids).view(2, 256))
    assert r["max_abs_diff"] < 1e-3 and r["argmax_agreement"] == 1.0


def test_heldout_perplexity_is_that_of_a_trained_model(shipped):
    model, tok = shipped
    ids = torch.from_numpy(_heldout_text_ids(tok, 1025))[None]
    with torch.no_grad():
        loss = torch.nn.functional.cross_entropy(model.forward_dense(ids[:, :-1])[0], ids[0, 1:])
    assert float(loss) < 3.5  # uniform over 4,096 tokens would be 8.3


@pytest.mark.slow
def test_retrieves_pass_keys_at_1024(shipped):
    model, tok = shipped
    src = _heldout_text_ids(tok, 20_000)
    r = passkey_accuracy(model, tok.tokenizer, src, 8, 1024, "cpu", batch_size=4)
    assert r["accuracy"] >= 0.75, r

