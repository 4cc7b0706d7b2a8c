"""The host side of a decode step's inputs, kept in persistent tensors.

Block tables change little from one decode step to the next: a sequence's table gains
one block every `block_size` tokens, and a copy-on-write replaces its last block. So
each running sequence owns a row of one persistent int32 table (`TableRows`), updated
by what changed (usually nothing), with a mirror on the device that receives only the
changed entries. A step's table is then one `index_select` of the batch's rows on the
device (inside the captured graph), and the host stages just four numbers per sequence
(token id, position, cache slot, table row) in one pinned buffer: one small copy per
step. The staging is written through numpy views (a numpy element write costs a tenth
of a torch one), with no tensor built from Python lists.

A staging buffer is rewritten at the next step only: every step ends with a host sync
(sampling), so the copy that read it has finished by then."""

from __future__ import annotations

import numpy as np
import torch

from .cuda_graphs import BATCH_BUCKETS


class TableRows:
    """Block tables of sequences, one row each, `max_pages` wide: `rows` on the host
    (pinned on a GPU) and `dev`, its copy on `device` (the host rows themselves on a
    CPU). `generation` grows when `dev` is reallocated (more sequences than rows), so a
    captured graph that reads the old tensor knows to be captured again."""

    def __init__(self, max_pages: int, pin: bool, capacity: int = 64, device: torch.device | None = None):
        self.max_pages, self.pin = max_pages, pin
        self.device = torch.device("cpu") if device is None else torch.device(device)
        self.row_of: dict[int, int] = {}
        self.known: dict[int, tuple[int, int]] = {}   # row -> (entries written, last entry)
        self.generation = 0
        self._dirty: list[tuple[int, int, int]] = []  # (row, first, end) changed since the last sync
        self._alloc(capacity, None)

    def _alloc(self, capacity: int, old: torch.Tensor | None) -> None:
        rows = torch.zeros(capacity, self.max_pages, dtype=torch.int32, pin_memory=self.pin)
        if old is not None:
            rows[: old.shape[0]] = old
        self.rows, self.host = rows, rows.numpy()   # host: the rows' numpy view
        on_host = self.device.type == "cpu"
        self.dev = rows if on_host else rows.to(self.device)
        self.free = list(range(capacity - 1, -1 if old is None else old.shape[0] - 1, -1))
        self._dirty.clear()   # a fresh mirror holds everything
        self.generation += old is not None

    def row(self, seq_id: int, table: list[int], rewrite: bool = False) -> int:
        """The row of `seq_id`, made equal to `table`. Only new entries are written
        unless the last known one changed (copy-on-write) or `rewrite` (a prefill:
        after a preemption the whole table is new)."""
        r = self.row_of.get(seq_id)
        if r is None:
            r = self.row_of[seq_id] = self._take()
            rewrite = True
        n = len(table)
        known, last = self.known.get(r, (0, -1))
        if not rewrite and n == known and (n == 0 or table[-1] == last):
            return r   # the common decode step: nothing changed
        if n > self.max_pages:
            raise ValueError(f"seq {seq_id}: block table of {n} blocks, at most {self.max_pages}")
        a = self.host[r]
        if rewrite or known == 0 or n < known or table[known - 1] != last:
            a[n:] = 0   # a reused row: nothing of its last owner past this table
            a[:n] = table
            self._dirty.append((r, 0, self.max_pages))
        elif n > known:
            a[known:n] = table[known:]
            self._dirty.append((r, known, n))
        if n:
            self.known[r] = (n, table[-1])
        return r

    def sync(self) -> None:
        """Copy the entries changed since the last sync to the device rows (asynchronous
        copies from pinned memory, one per changed row segment)."""
        if self.dev is not self.rows:
            for r, a, b in self._dirty:
                self.dev[r, a:b].copy_(self.rows[r, a:b], non_blocking=True)
        self._dirty.clear()

    def release(self, seq_id: int) -> None:
        r = self.row_of.pop(seq_id, None)
        if r is not None:
            self.known.pop(r, None)
            self.free.append(r)

    def _take(self) -> int:
        if not self.free:   # the new mirror is copied from the host rows, which hold everything
            self._alloc(2 * self.rows.shape[0], self.rows)
        return self.free.pop()


class DecodeInputs:
    """Staging of one decode step: `ints` [4, Bp] int64 (token ids, positions, cache
    slots, table rows), rows past the batch padded (token 0 at position 0, slot -1:
    a one-token context that writes nothing). The step's block table is
    `table(rows)` on the device.

    A captured decode graph copies `staging(Bp)` to the device itself (the copy is a
    node of the graph), so that view's address must outlive the graph: the buffer is
    sized for the largest graph batch up front, a larger eager batch gets a new buffer
    while the old one is kept, and `generation` tells graphs to be captured again."""

    def __init__(self, block_size: int, max_pages: int, pin: bool, device: torch.device | None = None):
        self.block_size, self.pin = block_size, pin
        # a GPU engine's sequences rarely outgrow 256 rows (growing recaptures the graphs)
        self.tables_rows = TableRows(max_pages, pin, capacity=256 if pin else 64, device=device)
        self.generation = 0
        self._flat: torch.Tensor | None = None
        self._retired: list[torch.Tensor] = []
        # pinned (a GPU): room for the largest batch a graph is captured at
        self._alloc(BATCH_BUCKETS[-1] if pin else 64)

    def _alloc(self, n: int) -> None:
        # Flat, so that a step's [4, Bp] view of its first 4 * Bp entries is contiguous:
        # a strided slice of a pinned [4, n] buffer made torch copy it through a pageable
        # temporary, a synchronous copy that held the host ~0.1 ms before every replay.
        if self._flat is not None:
            self._retired.append(self._flat)   # a captured copy may still read it
            self.generation += 1
        self._flat = torch.zeros(4 * n, dtype=torch.int64, pin_memory=self.pin)
        self._cap = n
        self._views: dict[int, tuple[torch.Tensor, np.ndarray]] = {}

    def staging(self, Bp: int) -> torch.Tensor:
        """The [4, Bp] staging view `stage(..., padded=Bp)` fills (host; pinned on a GPU)."""
        return self._view(Bp)[0]

    def _view(self, Bp: int) -> tuple[torch.Tensor, np.ndarray]:
        """The staging view of Bp rows and its numpy alias (made once per Bp)."""
        if self._cap < Bp:
            self._alloc(max(Bp, 2 * self._cap))
        v = self._views.get(Bp)
        if v is None:
            t = self._flat[: 4 * Bp].view(4, Bp)
            v = self._views[Bp] = (t, t.numpy())
        return v

    def stage(self, items, padded: int | None = None, check=None) -> torch.Tensor:
        """ints [4, Bp] (host; pinned on a GPU) of `items` (seq_id, token_id, position,
        block_table each), padded to `padded` rows; the device table rows are brought up
        to date. `check(seq_id, table, tokens)` vets each table first."""
        B = len(items)
        Bp = B if padded is None else padded
        ints, a = self._view(Bp)
        rows_of = self.tables_rows
        if check is not None:
            for it in items:
                check(it.seq_id, it.block_table, it.position + 1)
        rows = [rows_of.row(it.seq_id, it.block_table) for it in items]
        bs = self.block_size
        # a few sequences: one assignment from lists beats four numpy passes (batch 8:
        # 3.7 against 8.5 us on the dev CPU); from ~48 on, the numpy passes win
        if B <= 16:
            a[:, :B] = [[it.token_id for it in items], [it.position for it in items],
                        [it.block_table[it.position // bs] * bs + it.position % bs for it in items], rows]
        else:
            a[3, :B] = rows
            a[0, :B] = [it.token_id for it in items]
            pos = a[1, :B]
            pos[:] = [it.position for it in items]
            a[2, :B] = rows_of.host[a[3, :B], pos // bs].astype(np.int64) * bs + pos % bs
        if Bp > B:
            a[:, B:Bp] = 0
            a[2, B:Bp] = -1
        rows_of.sync()
        return ints

    def table(self, rows: torch.Tensor, width: int | None = None) -> torch.Tensor:
        """The block table [len(rows), width] of table rows `rows` (on the device)."""
        dev = self.tables_rows.dev
        return (dev if width is None else dev[:, :width]).index_select(0, rows)
