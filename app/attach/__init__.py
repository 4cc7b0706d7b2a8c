"""The Attach tab: a vLLM / SGLang server (or our engine) watched through its KV-cache
events and Prometheus metrics. The Qt-free work lives in tinyserve_core.attach."""
