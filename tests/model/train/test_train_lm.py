"""train-lm end to end on a tiny corpus and model (CPU; ~20-40 s on a busy 2-core box)."""

import argparse
import json

import numpy as np
import pytest
import torch

from tinyserve_core.errors import ConfigError
from tinyserve_core.cli.train import add_train_lm_arguments, run_train_lm
from tinyserve_core.model.train import train_lm

pytestmark = pytest.mark.slow


def _args(tmp_path, roots, name, *extra):
    p = argparse.ArgumentParser()
    add_train_lm_arguments(p)
    return p.parse_args([
        "--out", str(tmp_path / name), "--data-dir", str(tmp_path / "data"),
        "--checkpoint-dir", str(tmp_path / f"ck-{name}"), "--docs-root", str(roots[0]), "--stdlib-root", str(roots[1]),
        "--vocab-size", "512", "--min-vocab", "256", "--heldout-frac", "0.2", "--size", "tiny", "--context", "128",
        "--batch", "4", "--warmup", "5", "--lr", "3e-3", "--log-every", "5", "--eval-every", "10", "--eval-windows", "4",
        "--device", "cpu", "--compile", "off", "--quiet", *extra])


@pytest.fixture(scope="module")
def trained(tmp_path_factory, tiny_roots):
    tmp = tmp_path_factory.mktemp("train")
    args = _args(tmp, tiny_roots, "model", "--steps", "30", "--n-passkey", "4", "--passkey-lengths", "128")
    assert run_train_lm(args) == 0
    return tmp, tmp / "model"


def test_loss_decreases_and_folder_is_complete(trained):
    _, out = trained
    log = json.loads((out / "train_log.json").read_text())
    losses = [r["train_loss"] for r in log["history"]]
    assert log["steps"] == 30 and losses[-1] < losses[0] - 1.0
    ev = json.loads((out / "eval.json").read_text())
    assert ev["heldout"]["heldout_docs"]["loss"] < np.log(512) - 1.0  # far below a uniform guess
    assert ev["passkey"][0]["length"] == 128 and ev["passkey"][0]["n"] == 4
    for f in ("config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json",
              "generation_config.json", "MODEL_CARD.md"):
        assert (out / f).is_file(), f
    card = (out / "MODEL_CARD.md").read_text()
    assert f"{log['params']:,}" in card and "PSF License" in card
    assert f"{ev['heldout']['heldout_docs']['perplexity']:.2f}" in card


def test_folder_loads_in_our_runtime_and_transformers_with_same_logits(trained):
    pytest.importorskip("transformers")
    from tinyserve_core.model.train.hf_compat import compare_logits

    tmp, out = trained
    held = np.load(tmp / "data" / "heldout_docs.npy")[:256].astype(np.int64)
    r = compare_logits(out, torch.from_numpy(held).view(2, 128))
    assert r["max_abs_diff"] < 1e-4 * max(1.0, r["max_abs_logit"]) and r["argmax_agreement"] == 1.0


def test_resume_continues_the_same_schedule_exactly(tmp_path, tiny_roots, trained):
    data = trained[0] / "data"  # reuse the prepared corpus
    common = ("--steps", "12", "--no-eval", "--data-dir", str(data))
    full = _args(tmp_path, tiny_roots, "full", *common)
    train_lm.run_training(full)
    part = _args(tmp_path, tiny_roots, "part", *common, "--stop-at", "5")
    train_lm.run_training(part)
    ck = tmp_path / "ck-part" / train_lm.CHECKPOINT_NAME
    assert json.loads((ck / "checkpoint.json").read_text())["step"] == 5
    assert sorted(p.name for p in ck.iterdir()) == ["checkpoint.json", "checkpoint.safetensors"]
    rest = _args(tmp_path, tiny_roots, "rest", *common, "--resume", str(ck))
    train_lm.run_training(rest)
    from safetensors.torch import load_file

    a, b = load_file(tmp_path / "full" / "model.safetensors"), load_file(tmp_path / "rest" / "model.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_missing_budget_is_a_config_error(tmp_path, tiny_roots):
    with pytest.raises(ConfigError, match="--steps"):
        train_lm.run_training(_args(tmp_path, tiny_roots, "x"))


class _MakesMarker:
    """Unpickling this object creates the marker file: the proof a pickle ran code."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_resume_never_unpickles_a_checkpoint(tmp_path, tiny_roots, trained):
    import pickle

    from tinyserve_core.errors import InputFileError

    marker = tmp_path / "pwned"
    evil = tmp_path / "evil.pt"
    torch.save({"model": _MakesMarker(marker)}, evil)     # torch.load(weights_only=False) would open()
    folder = tmp_path / "ck-folder"
    folder.mkdir()
    (folder / "checkpoint.pt").write_bytes(evil.read_bytes())
    named_bytes = pickle.dumps({"model": _MakesMarker(marker)})
    named = tmp_path / "named"            # the pair's names, but pickles inside
    named.mkdir()
    for f in ("checkpoint.json", "checkpoint.safetensors"):
        (named / f).write_bytes(named_bytes)
    common = ("--steps", "3", "--no-eval", "--data-dir", str(trained[0] / "data"))
    for path, words in ((evil, "not a training checkpoint"), (folder, "no checkpoint.safetensors"),
                        (named / "checkpoint.json", "checkpoint.json")):
        with pytest.raises(InputFileError) as e:
            train_lm.run_training(_args(tmp_path, tiny_roots, "evil", *common, "--resume", str(path)))
        assert words in str(e.value) and str(e.value).startswith(str(path)) and "\n" not in str(e.value)
    assert not marker.exists()
