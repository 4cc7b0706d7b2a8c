"""How long the device worked on a step, so the host's share is the rest.

On a GPU two CUDA events bracket the step's device work: the first is recorded by the
runner when the step's inputs are staged on the host and the device work begins (the
input copies), the second right after sampling's sync, when the stream has drained; the span between them is the step's device time
(gaps in which the GPU waited for launches count as device time: the figure is the
span the device was held, the host's share is what lies outside it). On the CPU the
device is the host: the span is the wall time from the same point through sampling. Either way
`host = step wall time - device span`: scheduling, input building, postprocessing,
events and records."""

from __future__ import annotations

import time

import torch


class DeviceSpan:
    def __init__(self, device: torch.device):
        self.cuda = device.type == "cuda"
        self._a = self._b = None

    def start(self) -> None:
        if self._a is None:   # a step has one start: its first device work
            self._a = self._mark()

    def stop(self) -> None:
        self._b = self._mark()

    def _mark(self):
        if not self.cuda:
            return time.perf_counter()
        event = torch.cuda.Event(enable_timing=True)
        event.record()
        return event

    def seconds(self) -> float:
        """The span; on a GPU this waits for the stop event, which the sampling sync
        before it has all but reached (microseconds)."""
        if self._a is None or self._b is None:
            return 0.0
        if self.cuda:
            self._b.synchronize()
            return self._a.elapsed_time(self._b) / 1000.0
        return self._b - self._a
