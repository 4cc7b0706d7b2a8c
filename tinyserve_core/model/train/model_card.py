"""MODEL_CARD.md from the training summary and the evaluation of the saved folder:
every figure in the card is read from those two records, none is typed in."""

from __future__ import annotations

import json
from pathlib import Path

CARD_NAME = "MODEL_CARD.md"


def _corpus_rows(summary: dict) -> list[str]:
    c = summary.get("corpus") or {}
    rows = []
    for k, v in (c.get("splits") or {}).items():
        rows.append(f"| {k} | {v['documents']} | {v['bytes'] / 1e6:.2f} MB | {v['tokens'] / 1e6:.2f} M |")
    return rows


def command_line(args: dict) -> str:
    """The `tinyserve train-lm` invocation that reproduces this training run."""
    flags = ["--size", args["size"], "--context", str(args["context"]), "--batch", str(args["batch"]),
             "--vocab-size", str(args["vocab_size"]), "--lr", f"{args['lr']:g}", "--warmup", str(args["warmup"]),
             "--passkey-frac", f"{args['passkey_frac']:g}", "--seed", str(args["seed"])]
    if args.get("steps"):
        flags += ["--steps", str(args["steps"])]
    if args.get("minutes"):
        flags += ["--minutes", f"{args['minutes']:g}"]
    return "tinyserve train-lm --out DIR --device cuda " + " ".join(flags)


def _run_rows(runs: list[dict]) -> list[str]:
    rows = ["| run | steps | tokens seen (passes) | held-out docs ppl | held-out code ppl | pass-key @1024 | @2048 |",
            "| --- | --- | --- | --- | --- | --- | --- |"]
    for r in runs:
        t, e = r["train"], r["eval"]
        pk = {p["length"]: f"{p['accuracy']:.1%}" for p in e["passkey"]}
        rows.append(f"| {r['label']} | {t['steps']:,} | {t['tokens'] / 1e6:.0f} M ({t['epochs']:.0f}) "
                    f"| {e['heldout']['heldout_docs']['perplexity']:.2f} | {e['heldout']['heldout_code']['perplexity']:.2f} "
                    f"| {pk.get(1024, '-')} | {pk.get(2048, '-')} |")
    return rows


def render(folder: Path, summary: dict, ev: dict | None, runs: list[dict] | None = None, notes: str = "") -> str:
    cfg = json.loads((folder / "config.json").read_text())
    a = summary["args"]
    env = summary["environment"]
    weights = folder / "model.safetensors"
    size_mb = weights.stat().st_size / 1e6 if weights.exists() else float("nan")
    card = env.get("gpu") or f"CPU ({env.get('cpu')})"
    lines = [
        "# tinyserve-lm",
        "",
        "The default model of TinyServe: a small Llama trained from scratch on the Python 3.11",
        "documentation and standard-library sources, with pass-key retrieval samples mixed in so",
        "its attention has retrieval heads that query-aware page selection can be measured on.",
        "Made by `tinyserve train-lm` (tinyserve_core/model/train/); nothing here was downloaded.",
        "",
        "## Architecture",
        "",
        "| field | value |",
        "| --- | --- |",
        f"| parameters | {summary['params']:,} (embedding tied with lm_head) |",
        f"| layers / hidden / MLP | {cfg['num_hidden_layers']} / {cfg['hidden_size']} / {cfg['intermediate_size']} (SwiGLU) |",
        f"| attention | GQA, {cfg['num_attention_heads']} query heads, {cfg['num_key_value_heads']} KV heads, head_dim {cfg['head_dim']} |",
        f"| positions | RoPE (theta {cfg['rope_theta']:g}), trained context {cfg['max_position_embeddings']} |",
        f"| vocabulary | {cfg['vocab_size']} (byte-level BPE, digits split one per token, `<|endoftext|>` = eos) |",
        f"| weights | model.safetensors, float16, {size_mb:.1f} MB |",
        "",
        "## Data",
        "",
        "Python 3.11 documentation sources (`/usr/share/doc/python3.11/html/_sources/**/*.txt`,",
        "Debian package python3.11-doc) and standard-library modules (`/usr/lib/python3.11/**/*.py`,",
        "without site-packages, tests, pydoc_data (it repeats the docs) and generated charmap codecs).",
        "A fixed 5% of files, chosen by a hash of each file's path, is held out.",
        "",
        "| split | files | text | tokens |",
        "| --- | --- | --- | --- |",
        *_corpus_rows(summary),
        "",
        f"{a['passkey_frac']:.0%} of training rows are synthetic pass-key samples (tinyserve_core/model/train/passkey.py):",
        "a random 5-digit key at a random depth in corpus text, lengths up to the context, then",
        '"What is the pass key? The pass key is" and the key.',
        "",
        "**Licence of the data:** the Python documentation and the standard library are",
        "Copyright (c) Python Software Foundation and distributed under the PSF License",
        "Agreement (documentation examples also under the Zero-Clause BSD licence); the weights",
        "are a derived work trained on them.",
        "",
        "## Training",
        "",
        f"- {summary['steps']:,} steps of {a['batch']} x {a['context']} tokens = {summary['tokens'] / 1e6:.0f} M tokens "
        f"({summary['epochs']:.1f} passes over the training split)",
        f"- AdamW (betas 0.9/0.95, weight decay {a['weight_decay']}), peak lr {a['lr']:g}, {a['warmup']} warmup steps, "
        f"cosine to {a['min_lr_frac']:g} x peak over the {'wall-clock' if a.get('minutes') else 'step'} budget, "
        f"grad clip {a['grad_clip']}, seed {a['seed']}",
        f"- {'bf16 autocast, torch.compile, fused AdamW' if env.get('gpu') else 'float32'}",
        f"- training time: {summary['train_seconds'] / 60:.1f} min on {card} (torch {env['torch']})",
        "",
        "```",
        command_line(a),
        "```",
        "",
    ]
    if runs:
        lines += ["## Choice of schedule", "", "Runs of this recipe measured side by side (same corpus, model and "
                  "evaluation; the saved float16 weights of each):", "", *_run_rows(runs), ""]
    if notes:
        lines += [notes.strip(), ""]
    if ev is not None:
        lines += ["## Evaluation (the saved float16 weights, run in " + ev.get("precision", "float32") + ")", "",
                  "| held-out split | loss (nats/token) | perplexity | tokens |", "| --- | --- | --- | --- |"]
        for k, v in ev["heldout"].items():
            lines.append(f"| {k} | {v['loss']:.3f} | {v['perplexity']:.2f} | {v['tokens']:,} |")
        lines += ["", "Pass-key retrieval, dense attention, greedy decoding of the 5 digits, exact match, on",
                  "held-out text and keys (depths spread evenly over the context):", "",
                  "| context | samples | accuracy | digit accuracy | by depth (0-20%, ..., 80-100%) |",
                  "| --- | --- | --- | --- | --- |"]
        for p in ev["passkey"]:
            by = " / ".join(f"{b['accuracy']:.0%}" for b in p["by_depth"] if b["accuracy"] is not None)
            lines.append(f"| {p['length']} | {p['n']} | {p['accuracy']:.1%} | {p['digit_accuracy']:.1%} | {by} |")
        lines += ["", "Greedy generations (48 tokens):", ""]
        for g in ev["generations"]:
            lines += [f"**{g['prompt']}**", "", "```", g["prompt"] + g["completion"], "```", ""]
    h = [r for r in summary["history"] if "heldout_docs_loss" in r]
    if h:
        lines += ["## Training curve", "", f"| step | minutes | train loss | held-out docs loss (first {a.get('eval_windows', 16)} windows) "
                  "| pass-key accuracy (32 samples) |", "| --- | --- | --- | --- | --- |"]
        stride = max(1, len(h) // 12)
        for r in h[::stride] + ([h[-1]] if (len(h) - 1) % stride else []):
            lines.append(f"| {r['step']} | {r['elapsed_s'] / 60:.1f} | {r['train_loss']:.3f} | {r['heldout_docs_loss']:.3f} "
                         f"| {r['passkey_acc']:.0%} @ {r['passkey_len']} |")
        lines.append("")
    lines += ["## Use", "", "```", "tinyserve generate \"The list type\"            # our runtime (default model)",
              "AutoModelForCausalLM.from_pretrained(\"tinyserve_core/assets/models/tinyserve-lm\")  # transformers", "```", ""]
    return "\n".join(lines)


def write_model_card(folder: Path, summary: dict, ev: dict | None, runs: list[dict] | None = None,
                     notes: str = "") -> Path:
    path = Path(folder) / CARD_NAME
    path.write_text(render(Path(folder), summary, ev, runs, notes))
    return path


def rebuild(folder: str | Path) -> Path:
    """Re-render a folder's card from the records beside it: train_log.json, eval.json
    and the optional runs.json ({"runs": [...], "notes": "..."}) of compared schedules."""
    folder = Path(folder)
    summary = json.loads((folder / "train_log.json").read_text())
    ev = json.loads((folder / "eval.json").read_text()) if (folder / "eval.json").exists() else None
    extra = json.loads((folder / "runs.json").read_text()) if (folder / "runs.json").exists() else {}
    return write_model_card(folder, summary, ev, extra.get("runs"), extra.get("notes", ""))


if __name__ == "__main__":
    import sys

    for f in sys.argv[1:]:
        print(rebuild(f))
