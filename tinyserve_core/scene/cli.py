"""`tinyserve train-scene`: render the training views, train the semantic field with a
progress bar and live PSNR, write the compact weights, report held-out PSNR."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

from ..errors import ConfigError, TinyServeError


def add_parser(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser("train-scene", help="train the semantic NeRF of a scene (tqdm progress, live PSNR)")
    p.add_argument("--scene", default="room", help="scene name under assets/scenes or a path to a scene .json")
    p.add_argument("--iters", type=int, default=2000, help="optimisation steps (default 2000)")
    p.add_argument("--size", type=int, default=128, help="training image side in pixels (default 128)")
    p.add_argument("--batch-rays", type=int, default=4096, help="rays per step (default 4096)")
    p.add_argument("--voxel", type=float, default=0.025, help="grid voxel size in metres (default 0.025)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="cpu", help="cpu or cuda (default cpu)")
    p.add_argument("--threads", type=int, default=1,
                   help="torch CPU threads (default 1: robust on shared cores; 2 is faster on an idle 2-core machine; 0 = torch's default)")
    p.add_argument("--out", default=None, help="weights file (default assets/scenes/<scene>.weights.safetensors)")
    p.add_argument("--json", default=None, help="also write the training summary here")
    p.set_defaults(func=run)
    return p


def run(args) -> int:
    from tqdm import tqdm

    from .spec import load_scene
    from .train import TrainConfig, evaluate_heldout, train_field
    from .weights import save_weights, weights_path

    try:
        if args.device not in ("cpu", "cuda"):
            raise ConfigError("--device", f"must be cpu or cuda, got {args.device!r}")
        if args.device == "cuda" and not torch.cuda.is_available():
            raise ConfigError("--device", "cuda requested but no CUDA device is available")
        if args.threads < 0:
            raise ConfigError("--threads", f"must be >= 0, got {args.threads}")
        if args.threads:
            torch.set_num_threads(args.threads)
        spec = load_scene(args.scene)
        cfg = TrainConfig(size=args.size, iters=args.iters, batch_rays=args.batch_rays, voxel=args.voxel,
                          seed=args.seed).validate()
        bar = tqdm(total=cfg.iters, desc=f"train-scene {spec.name}", unit="step")

        def progress(p):
            bar.update(p.step - bar.n)
            if p.step % 10 == 0 or p.step == p.total:
                bar.set_postfix(psnr=f"{p.psnr:.2f} dB", loss=f"{p.loss:.4f}")

        field, occ, stats = train_field(spec, cfg, progress, device=args.device)
        bar.close()
        held = evaluate_heldout(spec, field, occ, cfg.size)
        stats.update(heldout_psnr=held["psnr"], heldout_miou=held["miou"])
        out = Path(args.out) if args.out else weights_path(spec)
        size = save_weights(out, field, occ, spec, stats)
    except TinyServeError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"trained {stats['steps']} steps in {stats['train_seconds']:.1f} s on {stats['device']}: "
          f"train PSNR {stats['train_psnr']:.2f} dB, held-out PSNR {held['psnr']:.2f} dB, mIoU {held['miou']:.3f}")
    print(f"wrote {out} ({size / 1e6:.2f} MB)")
    if args.json:
        Path(args.json).write_text(json.dumps(stats, indent=2))
    return 0


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="tinyserve")
    add_parser(parser.add_subparsers(dest="cmd", required=True))
    args = parser.parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
