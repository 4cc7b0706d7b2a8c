"""Counting the Qt events widgets get: proof that a change repaints (or lays out) only
the widgets it must."""

from __future__ import annotations

from PySide6.QtCore import QEvent, QObject


class EventCount(QObject):
    """`.n`: the events of type `kind` the widgets got since it was made."""

    def __init__(self, kind, *widgets):
        super().__init__(widgets[0])
        self.kind, self.n = kind, 0
        for w in widgets:
            w.installEventFilter(self)

    def eventFilter(self, obj, ev):
        self.n += ev.type() == self.kind
        return False


def paints(*widgets) -> EventCount:
    return EventCount(QEvent.Type.Paint, *widgets)


def layout_requests(*widgets) -> EventCount:
    """A widget whose size may change asks its parents again, up to the main window,
    which then repaints every dock."""
    return EventCount(QEvent.Type.LayoutRequest, *widgets)
