"""`tinyserve train-lm` and `tinyserve train-scene`: their flags, progress and printing."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ._parser import optional

TRAIN_LM_DESCRIPTION = """\
Build the corpus and tokenizer, train the default model, evaluate it and write an
HF-format model folder with its MODEL_CARD.md.

Stages (each skipped when its output exists, so the GPU run gets a prepared corpus):
  1. prepare: corpus (Python docs + stdlib) -> byte-level BPE -> uint16 token arrays
  2. train: AdamW, warmup + cosine over the step or wall-clock budget, bf16 autocast,
     torch.compile and fused AdamW on CUDA; training checkpoints for --resume
  3. save (fp16 safetensors, config.json, tokenizer) and evaluate the saved folder"""


def register(sub) -> None:
    optional(lambda: _add_train_lm(sub))
    optional(lambda: _add_train_scene(sub))


# ---- train-lm ----------------------------------------------------------------------------

def _add_train_lm(sub) -> None:
    from ..model.train import train_lm  # noqa: F401  (its third-party needs decide the command)

    p = sub.add_parser("train-lm", help="build the corpus, train, evaluate and save the default language model",
                       description=TRAIN_LM_DESCRIPTION)
    add_train_lm_arguments(p)
    p.set_defaults(func=run_train_lm)


def add_train_lm_arguments(p: argparse.ArgumentParser) -> None:
    from ..model.train import bpe
    from ..model.train.train_lm import SIZES

    p.add_argument("--out", required=True, help="model folder to write (config.json, model.safetensors, ...)")
    p.add_argument("--data-dir", default="out/lm-data", help="prepared corpus + tokenizer (built if missing)")
    p.add_argument("--checkpoint-dir", default="out/lm-train", help="where training checkpoints go")
    p.add_argument("--prepare-only", action="store_true", help="build corpus and tokenizer, then stop")
    p.add_argument("--docs-root", default=None,
                   help="Python docs sources (None: /usr/share/doc/python3.11/html/_sources)")
    p.add_argument("--stdlib-root", default=None, help="stdlib sources (None: /usr/lib/python3.11)")
    p.add_argument("--vocab-size", type=int, default=4096, help="BPE vocabulary size")
    p.add_argument("--min-vocab", type=int, default=bpe.MIN_VOCAB,
                   help="smallest vocabulary the BPE trainer accepts (tiny test corpora lower it)")
    p.add_argument("--heldout-frac", type=float, default=0.05, help="share of documents held out")
    p.add_argument("--size", choices=sorted(SIZES), default="small", help="model size")
    p.add_argument("--context", type=int, default=2048, help="training context in tokens")
    p.add_argument("--batch", type=int, default=32, help="sequences per step")
    p.add_argument("--steps", type=int, default=None, help="step budget (cosine over steps)")
    p.add_argument("--minutes", type=float, default=None, help="wall-clock budget (cosine over time)")
    optimiser = p.add_argument_group("optimiser (AdamW, warm-up + cosine)")
    for flag, kind, default, text in (
            ("--lr", float, 2e-3, "peak learning rate"),
            ("--min-lr-frac", float, 0.1, "final learning rate as a share of the peak"),
            ("--warmup", int, 100, "linear warm-up steps"),
            ("--weight-decay", float, 0.1, "AdamW weight decay"),
            ("--grad-clip", float, 1.0, "gradient-norm clip")):
        optimiser.add_argument(flag, type=kind, default=default, help=text)
    p.add_argument("--passkey-frac", type=float, default=0.1, help="fraction of rows that are pass-key samples")
    p.add_argument("--device", default="auto", help="auto, cpu or cuda")
    p.add_argument("--compile", choices=("auto", "on", "off"), default="auto", help="torch.compile the model")
    p.add_argument("--seed", type=int, default=0, help="seed of data order and initialisation")
    p.add_argument("--resume", default=None,
                   help="checkpoint folder to continue from (<checkpoint-dir>/checkpoint: checkpoint.safetensors "
                        "+ checkpoint.json); anything else, a pickled .pt included, is refused")
    p.add_argument("--checkpoint-minutes", type=float, default=2.0, help="minutes between training checkpoints")
    p.add_argument("--stop-at", type=int, default=None,
                   help="checkpoint and stop at this step; --resume continues the same schedule")
    p.add_argument("--log-every", type=int, default=50, help="steps between log lines")
    p.add_argument("--eval-every", type=int, default=250, help="steps between held-out evaluations")
    p.add_argument("--eval-windows", type=int, default=16, help="held-out windows scored during training")
    p.add_argument("--n-passkey", type=int, default=200, help="pass-key samples per length in the final evaluation")
    p.add_argument("--passkey-lengths", default="1024,2048", help="pass-key prompt lengths, comma list")
    p.add_argument("--no-eval", action="store_true", help="skip the final evaluation")
    p.add_argument("--quiet", action="store_true", help="no progress bars")


def run_train_lm(args) -> int:
    from ..model.train.evaluate import format_eval_table
    from ..model.train.train_lm import run_training

    ev = run_training(args)
    if ev is not None:
        print(format_eval_table(ev))
    return 0


# ---- train-scene -------------------------------------------------------------------------

def _add_train_scene(sub) -> None:
    import torch  # noqa: F401  (the command needs it; without it the command is left out)

    p = sub.add_parser("train-scene", help="train the semantic NeRF of a scene (tqdm progress, live PSNR)",
                       description="Render the training views, train the semantic field with a progress "
                                   "bar and live PSNR, write the compact weights, report held-out PSNR.")
    p.add_argument("--scene", default="room", help="scene name under assets/scenes or a path to a scene .json")
    p.add_argument("--iters", type=int, default=2000, help="optimisation steps")
    p.add_argument("--size", type=int, default=128, help="training image side in pixels")
    p.add_argument("--heldout-size", type=int, default=128,
                   help="held-out views' side in pixels (128, as every figure in docs/BENCHMARKS.md, "
                        "whatever the training size)")
    p.add_argument("--batch-rays", type=int, default=4096, help="rays per step")
    p.add_argument("--voxel", type=float, default=0.025, help="grid voxel size in metres")
    p.add_argument("--feat-dim", type=int, default=8, help="features stored per grid corner")
    p.add_argument("--hidden", type=int, default=32, help="width of the decoding MLP")
    p.add_argument("--seed", type=int, default=0, help="seed of views, rays and initialisation")
    p.add_argument("--device", default="cpu", help="cpu or cuda")
    p.add_argument("--views", choices=("standard", "dense"), default=None,
                   help="training cameras: standard (56 views) or dense (132: more held-out PSNR for "
                        "~2.4x the rays to render); default dense on cuda, standard on cpu")
    p.add_argument("--threads", type=int, default=1,
                   help="torch CPU threads (1 is robust on shared cores; 2 is faster on an idle 2-core "
                        "machine; 0 = torch's default)")
    p.add_argument("--out", default=None, help="weights file (None: assets/scenes/<scene>.weights.safetensors)")
    p.add_argument("--json", default=None, help="also write the training summary here")
    p.set_defaults(func=run_train_scene)


def run_train_scene(args) -> int:
    import torch
    from tqdm import tqdm

    from ..errors import ConfigError, TinyServeError
    from ..scene.spec import load_scene
    from ..scene.train import TrainConfig, evaluate_heldout, train_field, training_grid
    from ..scene.weights import save_weights, weights_path
    from ..writers import check_writable, write_json

    if args.device not in ("cpu", "cuda"):
        raise ConfigError("--device", f"must be cpu or cuda, got {args.device!r}")
    if args.device == "cuda" and not torch.cuda.is_available():
        raise ConfigError("--device", "cuda requested but no CUDA device is available")
    if not 16 <= args.heldout_size <= 1024:
        raise ConfigError("--heldout-size", f"must lie in [16, 1024] pixels, got {args.heldout_size}")
    if args.threads < 0:
        raise ConfigError("--threads", f"must be >= 0, got {args.threads}")
    if args.threads:
        torch.set_num_threads(args.threads)
    spec = load_scene(args.scene)
    views = args.views or ("dense" if args.device == "cuda" else "standard")
    cfg = TrainConfig(size=args.size, iters=args.iters, batch_rays=args.batch_rays, voxel=args.voxel,
                      seed=args.seed, views=views, feat_dim=args.feat_dim,
                      hidden=args.hidden).validate()
    training_grid(spec, cfg)
    out = Path(args.out) if args.out else weights_path(spec)
    check_writable(out, "--out", make_parents=True)   # before minutes of training, not after
    if args.json:
        check_writable(args.json, "--json", make_parents=True)
    bar = tqdm(total=cfg.iters, desc=f"train-scene {spec.name}", unit="step")

    def progress(p):
        bar.update(p.step - bar.n)
        if p.step % 10 == 0 or p.step == p.total:
            bar.set_postfix(psnr=f"{p.psnr:.2f} dB", loss=f"{p.loss:.4f}")

    try:
        field, occ, stats = train_field(spec, cfg, progress, device=args.device)
    finally:
        bar.close()
    held = evaluate_heldout(spec, field, occ, args.heldout_size)
    stats.update(heldout_psnr=held["psnr"], heldout_miou=held["miou"], heldout_size=args.heldout_size)
    size = save_weights(out, field, occ, spec, stats)
    print(f"trained {stats['steps']} steps in {stats['train_seconds']:.1f} s on {stats['device']}: "
          f"train PSNR {stats['train_psnr']:.2f} dB, held-out PSNR {held['psnr']:.2f} dB, mIoU {held['miou']:.3f}")
    print(f"wrote {out} ({size / 1e6:.2f} MB)")
    if args.json:
        try:
            write_json(args.json, stats, "--json", make_parents=True)
        except TinyServeError as e:   # the weights are written; say what was not
            print(f"not written: {e}", file=sys.stderr)
            return 1
    return 0
