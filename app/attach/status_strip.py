"""The connection states of an attach session as a strip of labels in the window
(never dialogs): per stream its state, batches, gaps, malformed frames and replay
timeouts, a rank that has gone silent, and each metrics URL's last scrape."""

from __future__ import annotations

import html
import time

from PySide6.QtWidgets import QLabel

from tinyserve_core.attach.metrics import Scrape
from tinyserve_core.attach.subscriber import StreamStats

from ..widgets.legend import flexible

SILENT_S = 5.0        # no live frame for this long: the rank is silent (lost or idle)
OK, WARN, BAD, IDLE = "#7fd17f", "#f0c060", "#ff6a6a", "#9a9aa8"


def stream_state(s: StreamStats, now: float) -> tuple[str, str]:
    """(text, colour) of one stream: what a user needs to know first comes first."""
    silent = s.last_receive is not None and now - s.last_receive > SILENT_S
    if s.state == "replay timed out":
        head, col = "replay timed out", BAD
    elif s.state == "replaying":
        head, col = "replaying", WARN
    elif s.last_receive is None:
        head, col = "waiting for events", IDLE
    else:
        head, col = "live", OK
    if silent:
        head += f", silent {now - s.last_receive:.0f} s (connection lost or idle)"
        col = WARN if col == OK else col
    parts = [f"{s.batches:,} batches"]
    if s.gaps:
        parts.append(f"{s.gaps} gap{'s' if s.gaps > 1 else ''}")
    if s.replayed_batches:
        parts.append(f"{s.replayed_batches} replayed")
    if s.malformed:
        parts.append(f"{s.malformed} malformed")
        col = BAD if col == OK else col
    if s.replay_timeouts:
        parts.append(f"{s.replay_timeouts} replay timeouts")
    return f"rank {s.rank} {head}: " + ", ".join(parts), col


def scrape_state(s: Scrape, now: float) -> tuple[str, str]:
    if s.error is not None:
        return f"metrics {s.url}: {s.error}", BAD
    return f"metrics scraped {now - s.t:.0f} s ago", OK


class StatusStrip(QLabel):
    """One wrapping line: a status strip must never make the window wider."""

    def __init__(self, parent=None):
        super().__init__("not attached: File > Attach...", parent)
        flexible(self)
        self.setStyleSheet("padding: 2px 4px;")
        self.texts: list[str] = []

    def update_from(self, frame, now: float | None = None) -> None:
        now = time.time() if now is None else now
        state = frame.state
        if frame.progress is not None:
            state += f" {frame.progress[0]:,}/{frame.progress[1]:,} messages"
        items = [(frame.error, BAD)] if frame.error else []
        items += [stream_state(s, now) for s in frame.streams]
        items += [scrape_state(s, now) for s in frame.scrapes]
        if not frame.scrapes and frame.state != "error" and frame.progress is None:
            items.append(("no metrics URL given (File > Attach...)", IDLE))
        self.texts = [t for t, _ in items]
        dots = "&nbsp;&nbsp; ".join(f'<span style="color:{c};">&#9679;</span>&nbsp;{html.escape(t)}'
                                    for t, c in items)
        self.setText(f"<b>{html.escape(frame.source)}</b> — {state}&nbsp;&nbsp; {dots}")
