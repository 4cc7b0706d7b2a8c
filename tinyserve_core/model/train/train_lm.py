"""The pipeline behind `tinyserve train-lm` (parsed in tinyserve_core.cli.train): build
the corpus and tokenizer, train the default model, evaluate it and write an HF-format
model folder with its MODEL_CARD.md.

Stages (each skipped when its output exists, so the GPU run gets a prepared corpus):
  1. prepare: corpus (Python docs + stdlib) -> byte-level BPE -> uint16 token arrays
  2. train: AdamW, warmup + cosine over the step or wall-clock budget, bf16 autocast,
     torch.compile and fused AdamW on CUDA; training checkpoints for --resume
     (safetensors + JSON, checkpoint.py: a pickle is never loaded)
  3. save (fp16 safetensors, config.json, tokenizer) and evaluate the saved folder
"""

from __future__ import annotations

import json
import math
import platform
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from ...errors import ConfigError

from . import bpe, corpus
from .checkpoint import CHECKPOINT_NAME, check_matches, checkpoint_folder, load_checkpoint, restore, save_checkpoint
from .data import BatchSampler
from .passkey import PasskeyTemplate

# (hidden, layers, q heads, kv heads, head_dim, intermediate). "small" is the shipped
# model: 8 q / 2 kv heads of 64 so the CUDA kernels run on it, ~11 M parameters with
# a 4,096 vocabulary (22 MB in fp16, under the 24 MB budget of the asset).
SIZES = {
    "small": (384, 6, 8, 2, 64, 960),
    "tiny": (64, 2, 4, 2, 16, 128),  # CPU smoke runs and tests
}


@dataclass
class Schedule:
    peak_lr: float
    warmup: int
    min_frac: float

    def lr(self, step: int, progress: float) -> float:
        """Linear warmup by steps, then cosine from peak to min_frac*peak over progress."""
        warm = min(1.0, (step + 1) / max(1, self.warmup))
        p = min(max(progress, 0.0), 1.0)
        return self.peak_lr * warm * (self.min_frac + (1 - self.min_frac) * 0.5 * (1 + math.cos(math.pi * p)))


# ---------------------------------------------------------------------------- prepare
def prepare(data_dir: Path, args) -> None:
    """Corpus + tokenizer into data_dir, unless already there."""
    if (data_dir / "tokenizer.json").is_file() and (data_dir / "train.npy").is_file():
        return
    docs = corpus.collect_documents(args.docs_root, args.stdlib_root)
    split = corpus.split_documents(docs, args.heldout_frac)
    print(f"corpus: {len(docs)} documents, held out {len(split['heldout_docs'])} docs + "
          f"{len(split['heldout_code'])} code; training tokenizer (vocab {args.vocab_size})", file=sys.stderr)
    tok = bpe.train_tokenizer((d.text for d in split["train"]), args.vocab_size, min_vocab=args.min_vocab)
    meta = corpus.write_corpus(data_dir, tok, split, bpe.eos_id(tok))
    bpe.save_tokenizer(tok, data_dir, args.context)
    for k, v in meta["splits"].items():
        print(f"  {k:<13} {v['documents']:>5} files {v['bytes'] / 1e6:>7.2f} MB {v['tokens'] / 1e6:>7.2f} M tokens",
              file=sys.stderr)


def load_data(data_dir: Path) -> dict[str, np.ndarray]:
    return {k: corpus.load_split(data_dir, k) for k in ("train", "heldout_docs", "heldout_code")}


# ---------------------------------------------------------------------------- model
def build_config(args, vocab_size: int, eos: int):
    from ..config import ModelConfig

    hidden, layers, heads, kv, hd, inter = SIZES[args.size]
    return ModelConfig(
        vocab_size=vocab_size, hidden_size=hidden, intermediate_size=inter, num_hidden_layers=layers,
        num_attention_heads=heads, num_key_value_heads=kv, head_dim=hd, model_type="llama",
        rms_norm_eps=1e-5, rope_theta=10000.0, tie_word_embeddings=True, max_position_embeddings=args.context,
        bos_token_id=eos, eos_token_id=eos, torch_dtype="float16",
    )


def count_params(model) -> int:
    return sum(p.numel() for p in model.parameters())  # a tied weight is listed once


def make_optimizer(model, lr: float, weight_decay: float, fused: bool):
    # Decay matrices only; norms' gains stay undecayed (nanoGPT's grouping).
    decay = [p for p in model.parameters() if p.dim() >= 2]
    no_decay = [p for p in model.parameters() if p.dim() < 2]
    groups = [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=lr, betas=(0.9, 0.95), eps=1e-8, fused=fused)


def _loss_fn(model, batch):
    logits = model.forward_dense(batch[:, :-1])
    return F.cross_entropy(logits.float().flatten(0, 1), batch[:, 1:].flatten())


def _forward_backward(loss_fn, model, batch, cuda: bool):
    with torch.autocast("cuda" if cuda else "cpu", dtype=torch.bfloat16, enabled=cuda):
        loss = loss_fn(model, batch)
    loss.backward()
    return loss


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ConfigError("--device", "cuda requested but no CUDA GPU is visible")
    if name not in ("cpu", "cuda"):
        raise ConfigError("--device", f"must be auto, cpu or cuda, got {name!r}")
    return torch.device(name)


# ---------------------------------------------------------------------------- train
def train(args, data: dict[str, np.ndarray], tok, device: torch.device) -> dict:
    from ..llama import LlamaForCausalLM

    torch.manual_seed(args.seed)
    eos = bpe.eos_id(tok)
    config = build_config(args, tok.get_vocab_size(), eos)
    model = LlamaForCausalLM(config).to(device)
    n_params = count_params(model)
    cuda = device.type == "cuda"
    if cuda:
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    opt = make_optimizer(model, args.lr, args.weight_decay, fused=cuda)
    sched = Schedule(args.lr, args.warmup, args.min_lr_frac)
    sampler = BatchSampler(data["train"], PasskeyTemplate(tok), eos, args.batch, args.context, args.passkey_frac,
                           args.seed)
    step, elapsed, history = 0, 0.0, []
    if args.resume:
        ck = load_checkpoint(args.resume)   # safetensors + JSON only: never a pickle
        check_matches(ck, args)
        restore(ck, model, opt, sampler)
        step, elapsed, history = ck.step, float(ck.state["elapsed"]), ck.state["history"]
        print(f"resumed from {args.resume} at step {step} ({elapsed:.0f} s trained)", file=sys.stderr)

    loss_fn = _loss_fn
    if args.compile == "on" or (args.compile == "auto" and cuda):
        loss_fn = torch.compile(_loss_fn)
    budget_s = args.minutes * 60 if args.minutes else None
    max_steps = args.steps

    def progress() -> float:
        p = 0.0
        if max_steps:
            p = max(p, step / max_steps)
        if budget_s:
            p = max(p, elapsed / budget_s)
        return p

    ckpt_dir = Path(args.checkpoint_dir)
    ckpt_dir.mkdir(parents=True, exist_ok=True)
    last_ckpt = time.perf_counter()
    bar = tqdm(total=max_steps, initial=step, desc="train", unit="step", dynamic_ncols=True,
               disable=args.quiet, mininterval=2.0)
    model.train()
    tokens_per_step = args.batch * args.context
    t_prev = time.perf_counter()
    loss_acc, n_acc = torch.zeros((), device=device), 0
    while progress() < 1.0:
        lr = sched.lr(step, progress())
        for g in opt.param_groups:
            g["lr"] = lr
        batch = torch.from_numpy(sampler.next())
        batch = batch.pin_memory().to(device, non_blocking=True) if cuda else batch
        try:
            loss = _forward_backward(loss_fn, model, batch, cuda)
        except Exception as e:  # noqa: BLE001 - torch.compile failures vary by build
            if loss_fn is _loss_fn:
                raise
            print(f"torch.compile failed ({type(e).__name__}: {str(e)[:300]}); training eagerly", file=sys.stderr)
            opt.zero_grad(set_to_none=True)
            loss_fn = _loss_fn
            loss = _forward_backward(loss_fn, model, batch, cuda)
        torch.nn.utils.clip_grad_norm_(model.parameters(), args.grad_clip)
        opt.step()
        opt.zero_grad(set_to_none=True)
        loss_acc += loss.detach()
        n_acc += 1
        step += 1
        now = time.perf_counter()
        elapsed += now - t_prev
        t_prev = now
        bar.update(1)
        if step % args.log_every == 0 or progress() >= 1.0:
            mean = float(loss_acc) / n_acc
            loss_acc.zero_()
            n_acc = 0
            rec = {"step": step, "elapsed_s": round(elapsed, 2), "lr": lr, "train_loss": mean,
                   "tokens": step * tokens_per_step}
            if step % args.eval_every == 0 or progress() >= 1.0:
                rec.update(quick_eval(model, tok, data, args, device, cuda))
                bar.write(f"step {step} {elapsed:.0f}s lr {lr:.2e} train {mean:.3f} heldout_docs "
                          f"{rec['heldout_docs_loss']:.3f} passkey@{rec['passkey_len']} {rec['passkey_acc']:.0%}",
                          file=sys.stderr)
            history.append(rec)
            bar.set_postfix(loss=f"{mean:.3f}", lr=f"{lr:.2e}", refresh=False)
            t_prev = time.perf_counter()  # evaluation time is not training time
        stop_here = args.stop_at is not None and step >= args.stop_at
        if time.perf_counter() - last_ckpt > args.checkpoint_minutes * 60 or progress() >= 1.0 or stop_here:
            save_checkpoint(ckpt_dir / CHECKPOINT_NAME, model, opt, sampler, step, elapsed, history, args)
            last_ckpt = time.perf_counter()
            t_prev = last_ckpt
        if stop_here:
            break
    bar.close()
    model.eval()
    return {"model": model, "config": config, "params": n_params, "steps": step, "elapsed_s": elapsed,
            "tokens": step * tokens_per_step, "history": history}


def quick_eval(model, tok, data, args, device, cuda: bool) -> dict:
    """Held-out docs loss on a few windows and pass-key accuracy on 32 samples: a
    training-curve probe, cheap enough to run every few hundred steps."""
    from .evaluate import heldout_loss, passkey_accuracy

    model.eval()
    length = min(1024, args.context)
    held = np.concatenate([data["heldout_code"], data["heldout_docs"]])
    with torch.no_grad():
        loss = heldout_loss(model, data["heldout_docs"], args.context, device, max_windows=args.eval_windows, bf16=cuda)
        pk = passkey_accuracy(model, tok, held, 32, length, device, bf16=cuda)
    model.train()
    return {"heldout_docs_loss": loss["loss"], "passkey_len": length, "passkey_acc": pk["accuracy"]}


# ---------------------------------------------------------------------------- save
def save_folder(out: Path, model, tok, context: int) -> None:
    """fp16 HF folder: config.json, model.safetensors, generation_config.json, tokenizer."""
    import copy

    from ..loader import save_model
    from ..tokenizer import Tokenizer

    half = copy.deepcopy(model).to("cpu", dtype=torch.float16)
    for name, p in half.named_parameters():
        if not torch.isfinite(p).all():
            raise RuntimeError(f"{name} overflows float16")
    eos = bpe.eos_id(tok)
    save_model(half, Tokenizer(tok, [eos], eos), out)
    bpe.save_tokenizer(tok, out, context)  # adds the special tokens transformers needs


def environment() -> dict:
    env = {"torch": torch.__version__, "python": platform.python_version(), "cpu": platform.processor() or platform.machine()}
    if torch.cuda.is_available():
        env["gpu"] = torch.cuda.get_device_name(0)
    return env


# ------------------------------------------------------------- the pipeline (`tinyserve train-lm`)
def validate(args) -> None:
    if not args.prepare_only and not args.steps and not args.minutes:
        raise ConfigError("--steps", "give --steps or --minutes (or both)")
    for name in ("steps", "batch", "context", "n_passkey", "log_every", "eval_every"):
        v = getattr(args, name)
        if v is not None and v <= 0:
            raise ConfigError("--" + name.replace("_", "-"), f"must be positive, got {v}")
    if args.minutes is not None and args.minutes <= 0:
        raise ConfigError("--minutes", f"must be positive, got {args.minutes}")
    if args.resume:
        checkpoint_folder(Path(args.resume))   # a wrong path fails before the corpus is built
    try:
        args.passkey_lengths = tuple(int(x) for x in str(args.passkey_lengths).split(",") if x)
    except ValueError:
        raise ConfigError("--passkey-lengths", f"expected comma-separated integers, got {args.passkey_lengths!r}") from None
    if not args.no_eval and any(L > args.context for L in args.passkey_lengths):
        raise ConfigError("--passkey-lengths", f"each must be <= --context {args.context}")


def run_training(args) -> dict | None:
    """The whole pipeline on the options of `tinyserve train-lm` (tinyserve_core.cli.train
    parses them); returns the evaluation of the saved folder (None when skipped)."""
    from .model_card import write_model_card

    validate(args)
    data_dir = Path(args.data_dir)
    prepare(data_dir, args)
    if args.prepare_only:
        return None
    device = resolve_device(args.device)
    tok = bpe.load_tokenizer(data_dir)
    data = load_data(data_dir)
    result = train(args, data, tok, device)
    out = Path(args.out)
    save_folder(out, result["model"], tok, args.context)
    summary = {
        "params": result["params"], "steps": result["steps"], "train_seconds": round(result["elapsed_s"], 1),
        "tokens": result["tokens"], "epochs": result["tokens"] / max(1, len(data["train"])),
        "corpus": json.loads((data_dir / "corpus.json").read_text()) if (data_dir / "corpus.json").exists() else None,
        "args": {k: v for k, v in vars(args).items() if k != "func"}, "environment": environment(),
        "history": result["history"],
    }
    (out / "train_log.json").write_text(json.dumps(summary, indent=1, default=str) + "\n")
    ev = None
    if not args.no_eval:
        ev = evaluate_folder(out, data, device, args)
        from .evaluate import write_eval

        write_eval(ev, out / "eval.json")
    write_model_card(out, summary, ev)
    return ev


def evaluate_folder(out: Path, data, device, args) -> dict:
    """Evaluate the saved (fp16) folder as users get it, in float32."""
    from ..loader import load_model

    from .evaluate import evaluate_model

    model, tokenizer = load_model(out, device=device, dtype=torch.float32)
    held = {k: v for k, v in data.items() if k != "train"}
    return evaluate_model(model, tokenizer.tokenizer, held, device, context=args.context,
                          passkey_lengths=args.passkey_lengths, n_passkey=args.n_passkey,
                          eos_id=tokenizer.eos_token_id, progress=not args.quiet)

