"""The first run tells the memory story: the GUI's default workload, run headless, fills
the pool and shows a fork, a prefix hit, copy-on-write, an eviction and a preemption
within a bounded number of steps, and the caption names each the first time."""

from __future__ import annotations

import pytest

from tinyserve_core.engine.config import EngineConfig
from tinyserve_core.engine.simulate import Simulation

from app.serving.story import BEATS, FIRST_RUN, StoryTracker

# Arrivals follow the engine clock, which advances by measured step time: a faster machine
# runs more (shorter) steps per arrival, so the bound is the "about 30 s" of engine
# time, not a step count (the story took 139 steps / 5.9 s on an idle 2-core machine, 60
# steps under load). MAX_STEPS only stops a broken run.
MAX_CLOCK_S = 30.0
MAX_STEPS = 2000


@pytest.mark.slow
def test_first_run_config_shows_every_beat_within_bounded_steps():
    # Dense attention without statistics: page selection changes which pages attention
    # reads, never which blocks exist (outputs run to their workload length, ignore_eos),
    # so the memory story is the GUI's, at a fraction of the test's time.
    cfg = EngineConfig.from_dict({**FIRST_RUN, "policy": "dense", "stats": False, "device": "cpu"})
    sim = Simulation(cfg)
    story, peak = StoryTracker(), 0.0
    while not story.complete and sim.engine.clock < MAX_CLOCK_S and sim.engine.step_count < MAX_STEPS:
        rec = sim.step()
        peak = max(peak, rec.metrics.kv_cache_usage_perc)
        running = {s.seq_id: s.request.request_id for s in sim.engine.scheduler.running}
        for beat in story.feed(rec.step, rec.events, rec.metrics.kv_cache_usage_perc, running):
            assert beat.step == rec.step and beat.title and "{" not in beat.text
    assert set(story.seen) == set(BEATS), f"missing after {sim.engine.step_count} steps ({sim.engine.clock:.1f} s): " \
        f"{set(BEATS) - set(story.seen)}"
    assert peak >= 0.7
    # the caption names each beat once, in the order it happened
    steps = [b.step for b in story.seen.values()]
    assert steps == sorted(steps)


def test_a_beat_is_named_once():
    from tinyserve_core.observe.events import Evict
    story = StoryTracker()
    first = story.feed(3, [Evict(7, 0xABC), Evict(8, 0xDEF)], 0.2)
    assert [b.kind for b in first] == ["evict"] and "block 7" in first[0].text
    assert story.feed(4, [Evict(9, 1)], 0.9)[0].kind == "pool_full"   # evict already named
