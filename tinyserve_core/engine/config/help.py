"""One line per flat key, for `tinyserve simulate --help` and GUI tooltips. Its order is
the order of keys in saved JSON files and of the flags in --help (the order of the one
flat dataclass that came before the sections); a test checks it names every key once."""

from __future__ import annotations

from .sections import POLICIES

HELP = {
    "model": "Hugging Face checkpoint folder (None: the shipped tinyserve-lm)",
    "device": "auto | cpu | cuda", "dtype": "auto | float32 | float16 | bfloat16",
    "block_size": "tokens per KV block (power of two, 1..128)",
    "num_blocks": "physical KV blocks in the pool",
    "max_model_len": "context limit in tokens (None: the model's)",
    "enable_prefix_caching": "reuse cached full blocks of shared prefixes (true/false)",
    "kv_cache_dtype": "auto (K/V in the model's dtype) | fp8 | fp8_e4m3 (e4m3 codes, a scale per page "
                      "and kv-head: half the bytes of fp16; not with twostage)",
    "max_num_seqs": "most sequences running at once",
    "max_num_batched_tokens": "prompt-token budget of one prefill step",
    "seed": "seed of the workload and of sampling",
    "temperature": "sampling temperature (0 = greedy)", "top_p": "nucleus sampling mass",
    "top_k": "top-k sampling (0 = off)", "n": "parallel samples per request (fork + copy-on-write)",
    "workload": "poisson | static | passkey | replay FILE",
    "replay_file": "JSONL workload to replay", "text_dir": "folder of .txt files for prompts",
    "rate": "arrivals per second (engine clock)", "duration": "seconds of arrivals",
    "requests": "number of requests", "prompt_len": "typical prompt length (tokens)",
    "prompt_len_max": "longest prompt (tokens)", "prompt_dist": "fixed | uniform | lognormal",
    "prompt_sigma": "lognormal spread of prompt lengths",
    "output_len": "typical output length (tokens)", "output_len_max": "longest output (tokens)",
    "output_dist": "fixed | uniform | lognormal", "output_sigma": "lognormal spread of output lengths",
    "passkey_depth": "passkey workload: key depth 0..1 (None: random)",
    "shared_prefix_frac": "share of requests starting with a shared system prompt (0..1)",
    "shared_prefix_len": "shared system-prompt length (tokens)",
    "num_prefix_groups": "number of distinct shared system prompts",
    "policy": "page selection: " + " | ".join(POLICIES),
    "budget": "selection budget: tokens if > 1, else a fraction of the context",
    "top_p_mass": "adaptive policy: estimated attention mass to keep",
    "sink_pages": "pages at the start always kept", "dense_layers": "first layers kept dense",
    "recent_pages": "streaming/h2o: recent window in pages (0 = half the budget)",
    "candidates": "twostage: stage-1 candidate pages, as a multiple of the budget",
    "estimate_top_p": "twostage: 0 keeps the budget; else the fewest pages whose estimated mass reaches it",
    "quant_bits": "twostage: bits of the quantised key copy (8 | 4)",
    "tier_pages": "fast-tier pages per sequence (0 = no tiering)", "tier_policy": "lru | lfu",
    "stats": "selection statistics on (recall, oracle pages, violations)",
    "profile": "time each op family per step (the Kernels view, op_ms in traces); CUDA-graph "
               "steps are timed whole, with an eager per-op breakdown within profile_budget",
    "profile_every": "profiling: graph-replayed decode steps per eager per-op breakdown, at least, "
                     "and before the first (>= 1)",
    "profile_budget": "profiling: share of the replayed steps' wall time that timing and the eager "
                      "breakdowns may cost (0 = one every profile_every steps)",
    "trace": "write a Chrome/Perfetto trace JSON here", "metrics": "write per-step metrics CSV here",
    "summary_json": "write the run summary JSON here",
    "kv_events": "publish vLLM-format KV-cache events on this ZMQ endpoint (tcp://*:5557 binds)",
    "kv_events_replay": "answer KV-event replay requests on this endpoint (tcp://*:5558)",
}
