"""How long the device worked on a step, so the host's share is the rest.

The step's device work is one or more segments, each bracketed by two marks: CUDA
events on a GPU, `perf_counter` on the CPU. The runner starts the first when the step's
inputs are staged and the device work begins (the input copies); the engine pauses it
while it reads the previous step's selection records (`collect`: host work that
overlaps the forward on a GPU) and resumes it for sampling, which ends with the step's
sync. On a GPU a paused span costs nothing while the host is quicker than the forward:
the resume event runs right after the pause event, so the gap between them is the time
the device waited for the host. Gaps in which the GPU waited for kernel launches inside
a segment count as device time: the figure is the span the device was held.

`host = step wall time - device time`: scheduling, input building, postprocessing,
selection records, events and the step record (on the CPU, where the forward runs on
the host, this is the bookkeeping outside the model and the sampling)."""

from __future__ import annotations

import time

import torch


class EventPool:
    """Timing events reused from step to step. Creating a CUDA event pair per timed span
    and destroying it after the read cost host time on every step (and a profiled step
    has several spans); an event is recorded again only after its last reading, when it
    comes back with `give`. `factory` makes a new event when none is free; `stream` gives
    the stream to record on (None: the event's own default)."""

    def __init__(self, factory, stream=lambda: None):
        self._factory, self._stream = factory, stream
        self._free: list = []
        self.created = 0

    def recorder(self):
        """`mark()`: a free event, recorded on the stream current now, returned. The stream
        is looked up once (a step's work runs on one stream; looking it up is a Python
        object per record otherwise)."""
        stream, take = self._stream(), self.take

        def mark():
            event = take()
            event.record(stream)
            return event
        return mark

    def take(self):
        if self._free:
            return self._free.pop()
        self.created += 1
        return self._factory()

    def give(self, events) -> None:
        self._free.extend(events)


def for_device(device: torch.device) -> EventPool | None:
    """A pool of CUDA events for `device`, or None on the CPU (host timers there)."""
    if device.type != "cuda":
        return None
    # the stream of `device`, not of whichever GPU is current: a runner on cuda:1 times
    # its own work
    return EventPool(lambda: torch.cuda.Event(enable_timing=True), lambda: torch.cuda.current_stream(device))


class DeviceSpan:
    """`events`: an EventPool on a GPU (the marks are its events, given back once read),
    None on the CPU."""

    def __init__(self, events: EventPool | None):
        self.events = events
        self._record = events.recorder() if events is not None else None
        self._marks: list = []       # start, end, start, end, ... (an open segment has no end)

    def start(self) -> None:
        if not self._marks:   # a step has one start: its first device work
            self._marks.append(self._mark())

    def pause(self) -> None:
        if len(self._marks) % 2:
            self._marks.append(self._mark())

    def resume(self) -> None:
        if self._marks and not len(self._marks) % 2:
            self._marks.append(self._mark())

    def stop(self) -> None:
        self.pause()

    def _mark(self):
        return time.perf_counter() if self._record is None else self._record()

    def seconds(self) -> float:
        """The summed segments; on a GPU this waits for the last event, which the
        sampling sync before it has all but reached (microseconds)."""
        marks = self._marks[: len(self._marks) // 2 * 2]
        if not marks:
            return 0.0
        if self.events is not None:
            marks[-1].synchronize()
            ms = sum(a.elapsed_time(b) for a, b in zip(marks[::2], marks[1::2]))
            self.events.give(self._marks)
            self._marks = []
            return ms / 1000.0
        return sum(b - a for a, b in zip(marks[::2], marks[1::2]))
