"""What profiling costs a GPU engine, checked on the CPU: timing events come from a pool
and go back to it once read (no event made per step), and the breakdown sampler is
charged a profiled step's wall time on the runner's clock, host work included, not only
the time its timing events saw (engine/step_timing.py, engine/breakdown_sampler.py)."""

from __future__ import annotations

import pytest
import torch

from tinyserve_core.engine.breakdown_sampler import BreakdownSampler
from tinyserve_core.engine.model_runner import DecodeItem, ModelRunner, OpTimer, PrefillItem
from tinyserve_core.engine.step_timing import DeviceSpan, EventPool
from tinyserve_core.model import LlamaForCausalLM, ModelConfig

BS = 4


class FakeEvent:
    """A CUDA event's timing surface on the host: `record` stamps a shared counter (ms)."""
    now_ms = 0.0

    def __init__(self):
        self.t, self.records, self.stream = None, 0, None

    def record(self, stream=None):
        self.t, self.records, self.stream = FakeEvent.now_ms, self.records + 1, stream

    def synchronize(self):
        assert self.t is not None, "waited on an event that was never recorded"

    def elapsed_time(self, end) -> float:
        return end.t - self.t


class Clock:
    """Host seconds that move only when told, plus `tick` per reading (the cost of the
    code between two readings)."""

    def __init__(self, tick=0.0):
        self.now, self.tick = 0.0, tick

    def __call__(self) -> float:
        t = self.now
        self.now += self.tick
        return t


def test_op_timer_reuses_pooled_events_across_steps():
    pool = EventPool(FakeEvent)
    for step in range(5):
        timer = OpTimer(pool)
        with timer("total"):
            FakeEvent.now_ms += 1.0
            for name in ("attention", "matmul"):
                with timer(name):
                    FakeEvent.now_ms += 0.25
        t = timer.result()
        assert t == {"total": pytest.approx(1e-3 + 5e-4), "attention": pytest.approx(2.5e-4),
                     "matmul": pytest.approx(2.5e-4)}
        assert timer.events == []          # every pair read and given back
    assert pool.created == 6               # one step's worth, then reused


def test_a_timer_looks_its_stream_up_once():
    lookups = []
    pool = EventPool(FakeEvent, stream=lambda: lookups.append(1) or "the step's stream")
    timer = OpTimer(pool)
    with timer("total"):
        for name in ("attention", "matmul", "attention"):
            with timer(name):
                pass
    events = [e for _, a, b in timer.events for e in (a, b)]
    assert len(events) == 8 and all(e.stream == "the step's stream" for e in events)
    assert lookups == [1]


def test_a_gpu_pool_records_on_its_own_devices_stream(monkeypatch):
    """A runner on cuda:1 while cuda:0 is current: its events go on cuda:1's stream."""
    from tinyserve_core.engine import step_timing

    asked = []
    monkeypatch.setattr(step_timing.torch.cuda, "current_stream", lambda device=None: asked.append(device) or "s")
    pool = step_timing.for_device(torch.device("cuda", 1))
    assert pool._stream() == "s" and asked == [torch.device("cuda", 1)]
    assert step_timing.for_device(torch.device("cpu")) is None


def test_device_span_gives_its_events_back():
    pool = EventPool(FakeEvent)
    for _ in range(3):
        span = DeviceSpan(pool)
        span.start()
        FakeEvent.now_ms += 2.0
        span.pause()
        span.resume()
        FakeEvent.now_ms += 1.0
        span.stop()
        assert span.seconds() == pytest.approx(3e-3)
    assert pool.created == 4


def test_op_timer_reports_its_own_host_time():
    clock = Clock(tick=1.0)   # every reading costs one second: each timer call two readings
    timer = OpTimer(EventPool(FakeEvent), clock)
    with timer("total"):
        pass
    timer.result()
    assert timer.host_s == pytest.approx(3.0)   # enter, exit, result


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    cfg = ModelConfig(vocab_size=97, hidden_size=64, intermediate_size=96, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2)
    return LlamaForCausalLM(cfg).eval()


class TimedGraphs:
    """Stands in for DecodeGraphs on the CPU: a replay that takes `replay_s` on `clock`."""

    def __init__(self, vocab, clock, replay_s):
        self.vocab, self.clock, self.replay_s = vocab, clock, replay_s

    def run(self, items, sel_key, selector, timer=None, span=None, check=None):
        with timer("total"):
            self.clock.now += self.replay_s
            return torch.zeros(len(items), self.vocab)


def _profiled_runner(model, monkeypatch, clock, budget, eager_s, host_s):
    """A profiling runner whose replays take 1 ms and whose eager steps take `eager_s` in
    the forward plus `host_s` of host work after it (counting the selected tokens and
    bytes: outside the forward's own timing)."""
    runner = ModelRunner(model, 16, BS, profile=True, profile_every=2, profile_budget=budget)
    runner._sampler = BreakdownSampler(clock)
    runner._graphs = TimedGraphs(model.config.vocab_size, clock, 1e-3)
    monkeypatch.setattr(runner, "_graph_key", lambda: "no selector")
    forward, bytes_moved = runner.model.forward_paged, runner._bytes_moved

    def slow_forward(*a, **k):
        clock.now += eager_s
        return forward(*a, **k)

    def slow_bytes(*a, **k):
        clock.now += host_s
        return bytes_moved(*a, **k)

    monkeypatch.setattr(runner.model, "forward_paged", slow_forward)
    monkeypatch.setattr(runner, "_bytes_moved", slow_bytes)
    runner.prefill([PrefillItem(0, [1, 2, 3, 4, 5], 0, [0, 1])])
    return runner


def _steps(runner, n):
    return [step for step in range(n)
            if "attention" in runner.decode([DecodeItem(0, 3, 5, [0, 1, 2, 3])]).finish().timings]


def test_a_sample_is_charged_its_wall_time_with_the_host_work(model, monkeypatch):
    clock = Clock()
    runner = _profiled_runner(model, monkeypatch, clock, 0.5, eager_s=0.02, host_s=0.01)
    sampled = _steps(runner, 200)
    s = runner._sampler
    assert s.replay_s == pytest.approx(1e-3)
    # the forward's 20 ms and the 10 ms after it, less the replay it replaced
    assert s.cost_s == pytest.approx(0.029)
    # first after `every` (2) steps, on the allowance of one sample; then the measured
    # cost is repaid (the replay before it and the sampled step earn 0.5 ms each: credit
    # -28 ms after it) and earned again: (28 + 29) ms / 0.5 ms = 114 replays, then the next
    assert sampled[0] == 1 and sampled[1] - sampled[0] == 115
    assert s.spent_s <= s.earned_s + s.cost_s
    assert runner.profile_account() == {"profile_spent_s": s.spent_s, "profile_earned_s": s.earned_s,
                                        "breakdowns": len(sampled)}


def test_the_replays_timing_is_charged(model, monkeypatch):
    clock = Clock(tick=1e-6)   # each clock reading: 1 us of host work
    runner = _profiled_runner(model, monkeypatch, clock, 0.05, eager_s=0.02, host_s=0.0)
    runner.profile_every = 100   # no sample in these steps
    assert _steps(runner, 50) == []
    s = runner._sampler
    # nothing sampled: all that was spent is the timers' own host time, 3 us a replay
    assert s.spent_s == pytest.approx(50 * 3e-6)


def test_a_prefill_is_charged_its_timing_and_earns_nothing(model):
    clock = Clock(tick=1e-6)
    runner = ModelRunner(model, 16, BS, profile=True, profile_budget=0.05)
    runner._sampler = BreakdownSampler(clock)
    out = runner.prefill([PrefillItem(0, [1, 2, 3, 4, 5], 0, [0, 1])])
    timer = out.timer
    out.finish()
    s = runner._sampler
    assert "attention" in out.timings and timer.host_s > 0     # broken down, as every prefill
    assert s.spent_s == pytest.approx(timer.host_s) and s.earned_s == 0.0 and s.samples == 0
