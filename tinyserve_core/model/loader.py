"""Load and save Hugging Face checkpoint folders (config.json, *.safetensors, tokenizer).

A folder loads when its tensors are exactly the model's: every missing, unexpected or
mis-shaped tensor is an error naming the key and the file, never a silent partial load."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from ..errors import ModelLoadError
from ..loaders import MiB, load_json
from ..resources import asset_path
from .config import ModelConfig
from .llama import LlamaForCausalLM
from .tokenizer import Tokenizer

INDEX_FILE = "model.safetensors.index.json"
# An index lists one line per tensor: ~100 KB for a 70B model.
MAX_INDEX_BYTES = 16 * MiB
# Buffers some older exports saved that carry nothing the model needs.
_IGNORED_SUFFIXES = (".rotary_emb.inv_freq",)


def default_model_dir() -> Path:
    """The shipped model: tinyserve_core/assets/models/tinyserve-lm (package data)."""
    return asset_path("models", "tinyserve-lm")


def load_model(path: str | Path, device: str | torch.device = "cpu",
               dtype: torch.dtype = torch.float32) -> tuple[LlamaForCausalLM, Tokenizer]:
    path = Path(path)
    if not path.is_dir():
        raise ModelLoadError(str(path), "model folder not found")
    config = ModelConfig.from_dir(path)
    tokenizer = Tokenizer.from_dir(path)
    check_tokenizer_fits(tokenizer, config, path)
    tensors = read_safetensors(path)
    with torch.device("meta"):
        model = LlamaForCausalLM(config)
    load_weights(model, tensors, path)
    model.to(device=device, dtype=dtype)
    check_finite(model, tensors, path)
    return model.eval(), tokenizer


def weight_files(path: Path) -> list[Path]:
    """The safetensors files of a folder: the shards of the index, else model.safetensors,
    else every *.safetensors file."""
    index = path / INDEX_FILE
    if index.exists():
        shards = _index_shards(index)
        for s in shards:
            if not (path / s).is_file():
                raise ModelLoadError(str(path / s), f"missing: shard listed in {INDEX_FILE}")
        return [path / s for s in shards]
    if (path / "model.safetensors").is_file():
        return [path / "model.safetensors"]
    files = sorted(path.glob("*.safetensors"))
    if not files:
        raise ModelLoadError(str(path), "no weights: expected model.safetensors or *.safetensors shards")
    return files


def _index_shards(index: Path) -> list[str]:
    """The shard file names of a safetensors index: plain names inside the folder."""
    d = load_json(index, max_bytes=MAX_INDEX_BYTES, field="index")
    weight_map = d.get("weight_map") if isinstance(d, dict) else None
    if not isinstance(weight_map, dict) or not weight_map:
        raise ModelLoadError(str(index), "must be an object of tensor name -> shard file", field="weight_map")
    for k, v in weight_map.items():
        if not isinstance(v, str) or not v or Path(v).name != v or v in (".", ".."):
            raise ModelLoadError(str(index), f"shard of {k!r} must be a file name in the model folder, "
                                 f"got {str(v)[:60]!r}", field="weight_map")
    return sorted(set(weight_map.values()))


def check_tokenizer_fits(tokenizer: Tokenizer, config: ModelConfig, path: Path) -> None:
    """Every id the tokenizer can produce must have an embedding row (else IndexError
    mid-run)."""
    if tokenizer.vocab_size > config.vocab_size:
        raise ModelLoadError(str(path / "tokenizer.json"), f"the tokenizer has {tokenizer.vocab_size} tokens, "
                             f"more than the model's vocab_size {config.vocab_size}", field="vocab_size")
    for t in tokenizer.eos_token_ids + [tokenizer.bos_token_id]:
        if t is not None and not 0 <= t < config.vocab_size:
            raise ModelLoadError(str(path / "config.json"), f"special token id {t} is outside the "
                                 f"model's vocab_size {config.vocab_size}", field="vocab_size")


def check_finite(model: LlamaForCausalLM, tensors: dict[str, tuple[torch.Tensor, Path]], path: Path) -> None:
    """NaN/Inf weights poison every logit silently. Checked after the cast to the run
    dtype (float32 on CPU, where a sum is ~10x cheaper than over fp16, and a weight too
    large for fp16 shows up too): one float32 sum per tensor is NaN or Inf when any
    element is; only then are the elements counted, so a sum that merely overflowed
    passes."""
    for name, p in model.named_parameters():
        t = p.detach()
        if bool(torch.isfinite(t.sum(dtype=torch.float32))):
            continue
        nan = int(torch.isnan(t).sum())
        inf = int(torch.isinf(t).sum())
        if nan or inf:
            file = tensors[name][1] if name in tensors else path
            raise ModelLoadError(str(file), f"{nan} NaN and {inf} infinite values (as {t.dtype})",
                                 field=f"tensor {name}")


def read_safetensors(path: Path) -> dict[str, tuple[torch.Tensor, Path]]:
    """key -> (tensor, file it came from)."""
    out: dict[str, tuple[torch.Tensor, Path]] = {}
    for f in weight_files(path):
        try:
            with safe_open(str(f), framework="pt", device="cpu") as st:
                for k in st.keys():
                    if k in out:
                        raise ModelLoadError(str(f), f"tensor {k!r} is also in {out[k][1].name}")
                    out[k] = (st.get_tensor(k), f)
        except ModelLoadError:
            raise
        except Exception as e:  # safetensors raises its own SafetensorError / OSError
            raise ModelLoadError(str(f), f"corrupt or unreadable safetensors file: {e}") from None
    return out


def load_weights(model: LlamaForCausalLM, tensors: dict[str, tuple[torch.Tensor, Path]], path: Path) -> None:
    """Assign checkpoint tensors to a (possibly meta-device) model, strictly."""
    expected = {k: v for k, v in model.state_dict().items()}
    tied = model.config.tie_word_embeddings
    if tied:
        expected.pop("lm_head.weight", None)
    where = lambda k: str(tensors[k][1]) if k in tensors else str(path)  # noqa: E731
    for k in tensors:
        if k in expected or k.endswith(_IGNORED_SUFFIXES) or (tied and k == "lm_head.weight"):
            continue
        raise ModelLoadError(where(k), f"unexpected tensor {k!r} (not a parameter of this "
                             f"{model.config.model_type} config)")
    for k, ref in expected.items():
        if k not in tensors:
            raise ModelLoadError(str(path), f"missing tensor {k!r}")
        t = tensors[k][0]
        if tuple(t.shape) != tuple(ref.shape):
            raise ModelLoadError(where(k), f"tensor {k!r} has shape {tuple(t.shape)}, "
                                 f"config needs {tuple(ref.shape)}")
        if not t.is_floating_point():
            raise ModelLoadError(where(k), f"tensor {k!r} has dtype {t.dtype}, expected a float type")
    model.load_state_dict({k: tensors[k][0] for k in expected}, strict=False, assign=True)
    if tied:
        model.lm_head.weight = model.model.embed_tokens.weight
    model.model.reset_rope()


def save_model(model: LlamaForCausalLM, tokenizer: Tokenizer | None, path: str | Path) -> None:
    """Write an HF checkpoint folder that transformers and load_model both read."""
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    sd = {k: v.detach().to("cpu").contiguous() for k, v in model.state_dict().items()}
    config = model.config.to_dict()
    # Records the stored precision, so transformers loads the weights without upcasting.
    config["torch_dtype"] = str(model.lm_head.weight.dtype).removeprefix("torch.")
    (path / "config.json").write_text(json.dumps(config, indent=2) + "\n")
    if model.config.tie_word_embeddings:
        sd.pop("lm_head.weight", None)  # HF tied checkpoints store the embedding once
    save_file(sd, str(path / "model.safetensors"), metadata={"format": "pt"})
    if tokenizer is not None:
        tokenizer.save(path)
        gen = {}
        if tokenizer.eos_token_ids:
            e = tokenizer.eos_token_ids
            gen["eos_token_id"] = e[0] if len(e) == 1 else e
        if tokenizer.bos_token_id is not None:
            gen["bos_token_id"] = tokenizer.bos_token_id
        if gen:
            (path / "generation_config.json").write_text(json.dumps(gen, indent=2) + "\n")
