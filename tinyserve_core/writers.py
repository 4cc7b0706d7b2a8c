"""One discipline for every file the project writes (traces, metrics CSV, summaries,
session configs, replay files, eval/bench reports, scene weights, GUI exports):

* the target is resolved through symlinks and the real file is written, so a link to a
  file stays a link (replacing the link itself would silently detach the file it names);
* only regular files are replaced: a directory, device node, fifo or socket is refused
  with the path in the message, never clobbered or written into;
* the bytes go to a temporary file in the target's own directory (same filesystem, so
  the final os.replace is atomic), are fsynced, then replace the target: a reader sees
  the old file or the new one, never half of one; the temporary file is removed on any
  failure, interrupts included;
* permissions: a replaced file keeps its permission bits; a new one gets the usual
  0666 & ~umask (mkstemp's 0600 would hide results from the rest of a group);
* `check_writable` validates an output path before any work starts, so a long run does
  not end in a failed write.

Every problem is an InputFileError `path: field: problem` (one line, exit 2 in the CLI).
"""

from __future__ import annotations

import json
import os
import secrets
import stat
from pathlib import Path
from typing import IO, Any

from .errors import InputFileError

# Symlink chains longer than this are refused as loops (Linux gives up at 40 as well).
_MAX_LINKS = 40


def _error(path: str | Path, field: str, problem: str) -> InputFileError:
    return InputFileError(str(path), None, f"{field}: {problem}")


def _os_problem(e: OSError) -> str:
    return e.strerror or str(e)


def resolve_output(path: str | Path, field: str) -> Path:
    """The file that writing `path` would really change: symlinks followed (a dangling
    link names the file it would create). Refuses link loops and any existing target
    that is not a regular file."""
    p = Path(os.path.abspath(os.fspath(path)))
    for _ in range(_MAX_LINKS):
        try:
            st = os.lstat(p)
        except (FileNotFoundError, NotADirectoryError):   # check_writable names the bad parent
            return p
        except OSError as e:
            raise _error(path, field, f"cannot inspect ({_os_problem(e)})") from None
        if stat.S_ISLNK(st.st_mode):
            p = Path(os.path.abspath(os.path.join(p.parent, os.readlink(p))))
            continue
        if stat.S_ISDIR(st.st_mode):
            raise _error(path, field, "is a directory, expected a file to write")
        if not stat.S_ISREG(st.st_mode):
            raise _error(path, field, "is not a regular file (device, fifo or socket); refusing to replace it")
        return p
    raise _error(path, field, f"more than {_MAX_LINKS} symbolic links (a loop?)")


def check_writable(path: str | Path, field: str, *, make_parents: bool = False) -> Path:
    """Validate an output path before the work that fills it: the real target is a
    regular file or absent, and its directory exists (or, with make_parents, its
    nearest existing ancestor is a directory) and is writable. Returns the real target."""
    real = resolve_output(path, field)
    if real.exists() and not os.access(real, os.W_OK):
        raise _error(path, field, "is read-only")
    parent = real.parent
    if make_parents:
        while not parent.exists() and parent != parent.parent:
            parent = parent.parent
    if not parent.is_dir():
        what = "does not exist" if not parent.exists() else "is not a directory"
        raise _error(path, field, f"directory {parent} {what}")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise _error(path, field, f"directory {parent} is not writable")
    return real


def _umask() -> int:
    """The process umask, read without changing it (os.umask sets while it reads, which
    races other threads); the fallback is the set-and-restore pair."""
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


class AtomicWriter:
    """A file written in full or not at all. Write (or hand `file` to csv/json), then
    `commit()`; `abort()` (or an exception inside `with`) drops the temporary file and
    leaves the target as it was. Suits streaming: a long run writes as it goes and
    commits at the end or on interrupt."""

    def __init__(self, path: str | Path, field: str, *, binary: bool = False,
                 newline: str | None = None, make_parents: bool = False):
        self.path = Path(path)
        self.field = field
        self.target = check_writable(path, field, make_parents=make_parents)
        if make_parents:
            try:
                self.target.parent.mkdir(parents=True, exist_ok=True)
            except OSError as e:
                raise _error(path, field, f"cannot create directory {self.target.parent} ({_os_problem(e)})") from None
        self._tmp = self.target.with_name(f".{self.target.name}.{secrets.token_hex(4)}.tmp")
        try:
            # O_EXCL: never reuse someone else's file; 0o666 lets the kernel apply the umask
            fd = os.open(self._tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0), 0o666)
        except OSError as e:
            raise _error(path, field, f"cannot create a file in {self.target.parent} ({_os_problem(e)})") from None
        try:
            self._keep_mode(fd)
            self.file: IO[Any] = (os.fdopen(fd, "wb") if binary
                                  else os.fdopen(fd, "w", encoding="utf-8", newline=newline))
        except BaseException:
            os.close(fd)
            self._unlink_tmp()
            raise
        self.done = False        # committed or aborted
        self.committed = False

    def _keep_mode(self, fd: int) -> None:
        try:
            mode = stat.S_IMODE(os.stat(self.target).st_mode)
        except FileNotFoundError:
            mode = 0o666 & ~_umask()
        os.fchmod(fd, mode)

    def write(self, data: str | bytes) -> None:
        try:
            self.file.write(data)
        except OSError as e:
            self.abort()
            raise _error(self.path, self.field, f"write failed ({_os_problem(e)})") from None

    def commit(self) -> Path:
        """Flush, fsync and move into place; returns the real target written."""
        if self.done:
            if self.committed:
                return self.target
            raise _error(self.path, self.field, "not written (the write was abandoned)")
        try:
            self.file.flush()
            os.fsync(self.file.fileno())
            self.file.close()
            os.replace(self._tmp, self.target)
        except BaseException as e:
            self.abort()
            if isinstance(e, OSError):
                raise _error(self.path, self.field, f"write failed ({_os_problem(e)})") from None
            raise
        self.done = self.committed = True
        _fsync_dir(self.target.parent)
        return self.target

    def abort(self) -> None:
        if self.done:
            return
        self.done = True
        try:
            self.file.close()
        except OSError:
            pass
        self._unlink_tmp()

    def _unlink_tmp(self) -> None:
        try:
            os.unlink(self._tmp)
        except FileNotFoundError:
            pass

    def __enter__(self) -> "AtomicWriter":
        return self

    def __exit__(self, exc_type, *exc: object) -> None:
        if exc_type is None:
            self.commit()
        else:
            self.abort()


def _fsync_dir(directory: Path) -> None:
    """Make the rename itself durable; best effort: some filesystems refuse directory
    fsync, and the file is in place either way."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def write_bytes(path: str | Path, data: bytes, field: str, *, make_parents: bool = False) -> Path:
    with AtomicWriter(path, field, binary=True, make_parents=make_parents) as w:
        w.write(data)
    return w.target


def write_text(path: str | Path, text: str, field: str, *, make_parents: bool = False) -> Path:
    with AtomicWriter(path, field, make_parents=make_parents) as w:
        w.write(text)
    return w.target


def write_json(path: str | Path, obj: Any, field: str, *, indent: int | None = 2,
               make_parents: bool = False) -> Path:
    """`obj` as JSON with a final newline; serialised first, so a value json cannot
    encode fails before any file is touched."""
    return write_text(path, json.dumps(obj, indent=indent) + "\n", field, make_parents=make_parents)
