"""Handing the GIL back to the GUI thread quickly while a worker thread runs Python.

A worker that holds the GIL (a Python engine step, OMPL's solve between its Python
callbacks) keeps it until the switch interval asks it to let go; the GUI thread gives the
GIL up on every blocking call (each PyOpenGL call of a paint, each Qt wait) and then waits
up to that interval to get it back. The default 5 ms made paints during a plan take
150-550 ms. Workers lower the interval; a lower one set by another worker stays."""

from __future__ import annotations

import sys


def favour_gui_thread(interval_s: float) -> None:
    """Switch interval at most `interval_s` for the rest of the process."""
    sys.setswitchinterval(min(sys.getswitchinterval(), interval_s))
