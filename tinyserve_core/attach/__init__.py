"""Attach to a real serving engine: subscribe to the KV-cache events its ranks publish
(vLLM / SGLang, ZeroMQ + msgpack), scrape its Prometheus metrics, keep a bounded model
of its cache, record and replay what was received. Qt-free; the GUI drives it from a
worker thread (see `subscriber.Attachment`)."""
