"""What travels between the GUI and its engine host: one small frozen dataclass per
command (GUI -> host) and per message (host -> GUI). Both sides match them by type,
never by a string tag or a tuple position. Qt-free and picklable (they cross the pipe
to the engine process).

Commands: Run, Step, Reset, Update, Select, BlockInfoQuery, WantSnapshot, GetRecords,
Export, Speed, Quit. Messages: StateChanged, Ready, Failed, SnapshotReady, BlockInfoReply,
StepsDone, RecordsReply, ConfigChanged, Exported."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from tinyserve_core.engine.config import EngineConfig

from .snapshot import Snapshot


# ---- commands (GUI -> host) ----------------------------------------------------------
@dataclass(frozen=True)
class Run:
    on: bool                                # run continuously, or pause


@dataclass(frozen=True)
class Step:
    n: int                                  # single steps to take (pauses a run)


@dataclass(frozen=True)
class Reset:
    config: EngineConfig | None = None      # None: rebuild with the current config


@dataclass(frozen=True)
class Update:
    changes: dict[str, Any]                 # live settings (flat EngineConfig keys)


@dataclass(frozen=True)
class Select:
    key: tuple[int, int, int] | None        # (seq, layer, head) the selection view follows


@dataclass(frozen=True)
class BlockInfoQuery:
    block_id: int


@dataclass(frozen=True)
class WantSnapshot:
    """The GUI took the last snapshot: the host may build the next one (credit)."""


@dataclass(frozen=True)
class GetRecords:
    pass


@dataclass(frozen=True)
class Export:
    kind: str                               # "trace" | "metrics"
    path: str


@dataclass(frozen=True)
class Speed:
    steps_per_s: float                      # 0 = as fast as it goes


@dataclass(frozen=True)
class Quit:
    pass


Command = (Run | Step | Reset | Update | Select | BlockInfoQuery | WantSnapshot | GetRecords
           | Export | Speed | Quit)


# ---- messages (host -> GUI) ----------------------------------------------------------
@dataclass(frozen=True)
class StateChanged:
    state: str                              # loading | paused | running | done | error


@dataclass(frozen=True)
class Ready:
    summary: dict                           # app/serving/summary.engine_summary


@dataclass(frozen=True)
class Failed:
    message: str                            # one line
    details: str                            # the traceback or an explanation


@dataclass(frozen=True)
class SnapshotReady:
    snapshot: Snapshot


@dataclass(frozen=True)
class BlockInfoReply:
    block_id: int
    info: dict


@dataclass(frozen=True)
class StepsDone:
    n: int                                  # steps of the current engine


@dataclass(frozen=True)
class RecordsReply:
    records: list


@dataclass(frozen=True)
class ConfigChanged:
    config: EngineConfig                    # what the host runs with now


@dataclass(frozen=True)
class Exported:
    kind: str
    path: str
    count: int
    error: str | None = None


Message = (StateChanged | Ready | Failed | SnapshotReady | BlockInfoReply | StepsDone
           | RecordsReply | ConfigChanged | Exported)
