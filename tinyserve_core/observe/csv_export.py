"""Per-step metrics as CSV: one row per engine step.

Columns: step, t_start, t_end, phase, then every StepMetrics field in declaration
order (vLLM's names where they overlap). Cumulative counters stay cumulative, as in
StepMetrics, so the last row holds the run's totals."""

from __future__ import annotations

import csv
import dataclasses
from collections.abc import Iterable
from pathlib import Path
from typing import IO, Any

from ..writers import AtomicWriter
from .record import StepMetrics, StepRecord

STEP_COLUMNS = ("step", "t_start", "t_end", "phase")
METRIC_COLUMNS = tuple(f.name for f in dataclasses.fields(StepMetrics))
CSV_COLUMNS = STEP_COLUMNS + METRIC_COLUMNS


def metrics_row(record: StepRecord) -> list[Any]:
    m = record.metrics
    return [record.step, record.t_start, record.t_end, record.phase] + [getattr(m, c) for c in METRIC_COLUMNS]


class MetricsCsvWriter:
    """Streams rows to a file as steps arrive (a long run needs no buffering), e.g.

        with MetricsCsvWriter("metrics.csv") as w:
            while not sim.done:
                w.add(sim.step())
    """

    def __init__(self, target: str | Path | IO[str]):
        # a path is written through the one atomic writer: the target appears, complete,
        # at close() (also after an interrupt); abort() leaves the old file as it was
        self._atomic: AtomicWriter | None = None
        if isinstance(target, (str, Path)):
            self._atomic = AtomicWriter(target, "metrics", newline="")
            self._file: IO[str] = self._atomic.file
            sink: Any = self._atomic   # its write() aborts and names the path on a failure
        else:
            self._file = sink = target
        self._writer = csv.writer(sink)
        self.num_rows = 0
        self._writer.writerow(CSV_COLUMNS)

    def add(self, record: StepRecord) -> None:
        self._writer.writerow(metrics_row(record))
        self.num_rows += 1

    def extend(self, records: Iterable[StepRecord]) -> None:
        for r in records:
            self.add(r)

    def flush(self) -> None:
        self._file.flush()

    def close(self) -> None:
        if self._atomic is not None:
            self._atomic.commit()

    def abort(self) -> None:
        if self._atomic is not None:
            self._atomic.abort()

    def __enter__(self) -> "MetricsCsvWriter":
        return self

    def __exit__(self, exc_type, *exc: object) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()


def write_metrics_csv(records: Iterable[StepRecord], path: str | Path) -> int:
    """Write every record; returns the number of rows."""
    with MetricsCsvWriter(path) as w:
        w.extend(records)
        return w.num_rows
