"""Prometheus exposition of both families mapped onto our names."""

from __future__ import annotations

import http.server
import math
import threading
from pathlib import Path

import pytest

from tinyserve_core.attach.metrics import MetricsScraper, histogram_quantile, parse_exposition
from tinyserve_core.attach.session import merged_metrics

DATA = Path(__file__).parent / "data"


def test_vllm_names_labels_and_histograms():
    scalars, hists = parse_exposition((DATA / "vllm_metrics.txt").read_text())
    assert scalars["num_requests_running"] == 5 and scalars["num_requests_waiting"] == 1
    assert scalars["kv_cache_usage_perc"] == pytest.approx(0.5)          # averaged over engines
    assert (scalars["prefix_cache_queries"], scalars["prefix_cache_hits"]) == (4000, 2000)
    assert scalars["prefix_hit_rate"] == pytest.approx(0.5)
    assert scalars["num_preemptions"] == 7
    assert hists["ttft_s"][-1] == (math.inf, 100.0)                     # engines summed by bucket
    # 50th of 100: 40 below 0.1, 50 in (0.1, 0.5] -> 0.1 + 0.4 * 10/50
    assert histogram_quantile(0.5, hists["ttft_s"]) == pytest.approx(0.18)
    assert "cache_config_info" not in str(scalars)


def test_sglang_names():
    scalars, hists = parse_exposition((DATA / "sglang_metrics.txt").read_text())
    assert scalars == pytest.approx({"num_requests_running": 12, "num_requests_waiting": 4,
                                     "kv_cache_usage_perc": 0.42, "prefix_hit_rate": 0.63,
                                     "gen_tokens_per_s": 812.5, "prompt_tokens": 123456})
    assert histogram_quantile(0.5, hists["ttft_s"]) == pytest.approx(0.1)


def test_quantiles_cover_the_interval_between_scrapes():
    s = MetricsScraper("http://unused")
    text = (DATA / "vllm_metrics.txt").read_text()
    first = s.ingest(text, 0.0)
    assert first.values["ttft_s_p50"] == pytest.approx(0.18)
    assert first.values["itl_s_p99"] == pytest.approx(0.01 + 0.015 * (990 - 500) / 500)
    # 100 more observations, all in (0.5, 1.0]: the interval's median is there, not at 0.18
    later = text.replace('le="1.0",model_name="meta-llama/Llama-3.1-8B-Instruct"} 100.0',
                         'le="1.0",model_name="meta-llama/Llama-3.1-8B-Instruct"} 200.0', 1)
    later = later.replace('engine="0",le="+Inf",model_name="meta-llama/Llama-3.1-8B-Instruct"} 100.0',
                          'engine="0",le="+Inf",model_name="meta-llama/Llama-3.1-8B-Instruct"} 200.0', 1)
    second = s.ingest(later, 1.0)
    assert 0.5 < second.values["ttft_s_p50"] <= 1.0
    m = second.step_metrics()
    assert (m.num_requests_running, m.prefix_cache_hits, m.num_preemptions) == (5, 2000, 7)


def test_scrape_over_http_and_a_dead_server():
    body = (DATA / "sglang_metrics.txt").read_bytes()

    class H(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            self.send_response(200)
            self.send_header("Content-Type", "text/plain; version=0.0.4")
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *a):
            pass
    srv = http.server.HTTPServer(("127.0.0.1", 0), H)
    t = threading.Thread(target=srv.serve_forever, daemon=True)
    t.start()
    url = f"http://127.0.0.1:{srv.server_address[1]}/metrics"
    try:
        ok = MetricsScraper(url, timeout_s=5).scrape()
    finally:
        srv.shutdown()
        srv.server_close()
    assert ok.error is None and ok.values["num_requests_running"] == 12
    dead = MetricsScraper(url, timeout_s=1).scrape()
    assert dead.error is not None and not dead.values
    merged = merged_metrics([ok, dead, ok])
    assert merged["num_requests_running"] == 24 and merged["kv_cache_usage_perc"] == pytest.approx(0.42)


def test_junk_text_is_a_failed_scrape():
    bad = MetricsScraper("http://unused").ingest("vllm:x{ 1 2 3\n", 0.0)
    assert bad.error and bad.error.startswith("not Prometheus text")


def test_token_rates_and_the_engine_record_contract():
    s = MetricsScraper("http://unused")
    base = (DATA / "vllm_metrics.txt").read_text()
    counters = ("# TYPE vllm:prompt_tokens_total counter\nvllm:prompt_tokens_total{engine=\"0\"} %d\n"
                "# TYPE vllm:generation_tokens_total counter\nvllm:generation_tokens_total{engine=\"0\"} %d\n")
    s.ingest(base + counters % (1000, 500), 10.0)
    later = s.ingest(base + counters % (1400, 700), 12.0)
    assert later.values["gen_tokens_per_s"] == pytest.approx(100.0)
    assert later.values["tokens_per_s"] == pytest.approx(300.0)
    rec = later.step_record(step=3, clock=2.0)
    assert (rec.step, rec.t_end, rec.phase) == (3, 2.0, "idle")
    assert rec.metrics.kv_cache_usage_perc == pytest.approx(0.5) and rec.metrics.tokens_per_s == pytest.approx(300.0)
