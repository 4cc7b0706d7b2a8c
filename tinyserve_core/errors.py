"""Errors that reach people. Each names the field (flag, config key, file) at fault so
the CLI can print one line and exit 2 and the GUI can show it next to the field."""

from __future__ import annotations


class TinyServeError(Exception):
    """Base of every error meant to be shown to a person, not as a traceback."""


class ConfigError(TinyServeError, ValueError):
    """A bad value in a flag, config file or GUI field."""

    def __init__(self, field: str, message: str):
        self.field = field
        self.message = message
        super().__init__(f"{field}: {message}")


class ModelLoadError(TinyServeError):
    """A model folder that cannot be loaded: names the file, the field (config key,
    tensor name) when there is one, and the problem: `path: field: problem`."""

    def __init__(self, path: str, message: str, field: str | None = None):
        self.path = str(path)
        self.field = field
        self.message = f"{field}: {message}" if field else message
        super().__init__(f"{path}: {self.message}")


class InputFileError(TinyServeError):
    """A malformed line in a trace/replay/query file: names the file and line."""

    def __init__(self, path: str, line: int | None, message: str):
        self.path = str(path)
        self.line = line
        self.message = message
        where = f"{path}:{line}" if line is not None else str(path)
        super().__init__(f"{where}: {message}")
