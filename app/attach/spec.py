"""What to attach to, as the dialog and `tinyserve-gui --attach` give it: live endpoints
(the same flags as `tinyserve attach`) or a recording. Validated here, Qt-free, with the
library's rules (`expand_endpoints`), so a bad field is a ConfigError naming it."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

from tinyserve_core.attach.subscriber import Endpoint, expand_endpoints
from tinyserve_core.errors import ConfigError

_SCHEMES = ("tcp://", "ipc://", "inproc://")


@dataclass
class AttachSpec:
    kv_events: list[str] = field(default_factory=list)
    data_parallel_size: int = 1
    replay: list[str] = field(default_factory=list)
    topic: str = ""
    bind: bool = False
    metrics_urls: list[str] = field(default_factory=list)
    tokenizer: str = ""
    recording: str = ""            # set: play this file instead of attaching live
    speed: float = 1.0             # recording playback, x real time (0 = as fast as possible)

    @property
    def live(self) -> bool:
        return not self.recording

    def validate(self) -> list[Endpoint]:
        """The endpoints of a live spec ([] for a recording); ConfigError names the
        field: kv_events, replay, data_parallel_size, metrics_url, tokenizer, recording, speed."""
        if self.tokenizer and not Path(self.tokenizer).is_dir():
            raise ConfigError("tokenizer", f"{self.tokenizer}: not a folder")
        if self.recording:
            if not Path(self.recording).is_file():
                raise ConfigError("recording", f"{self.recording}: no such file")
            if self.kv_events:
                raise ConfigError("recording", "give endpoints or a recording, not both")
            if not (0.0 <= self.speed <= 1000.0):
                raise ConfigError("speed", f"must be 0 (as fast as possible) .. 1000, got {self.speed}")
            return []
        if not self.kv_events:
            raise ConfigError("kv_events", "give at least one endpoint, e.g. tcp://127.0.0.1:5557")
        for key, urls in (("kv_events", self.kv_events), ("replay", self.replay)):
            for u in urls:
                if not u.startswith(_SCHEMES):
                    raise ConfigError(key, f"{u!r}: expected tcp://HOST:PORT, ipc:// or inproc://")
        for u in self.metrics_urls:
            if not u.startswith(("http://", "https://")):
                raise ConfigError("metrics_url", f"{u!r}: expected http://HOST:PORT/metrics")
        return expand_endpoints(self.kv_events, self.replay, self.data_parallel_size)

    def describe(self) -> str:
        if self.recording:
            return f"recording {self.recording} at {self.speed:g}x" if self.speed else \
                f"recording {self.recording} (as fast as possible)"
        dp = f" x {self.data_parallel_size} ranks" if self.data_parallel_size > 1 else ""
        return ", ".join(self.kv_events) + dp

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, text: str | None) -> "AttachSpec":
        """A spec saved by an earlier session; a default one when it does not read."""
        try:
            d = json.loads(text or "{}")
            known = {k: d[k] for k in cls.__dataclass_fields__ if k in d}
            spec = cls(**known)
            spec.data_parallel_size = int(spec.data_parallel_size)
            spec.speed = float(spec.speed)
            return spec
        except (ValueError, TypeError):
            return cls()


def split_urls(text: str) -> list[str]:
    """A field of URLs separated by commas, spaces or newlines."""
    return [u for u in text.replace(",", " ").split() if u]
