"""The host side of a decode step's inputs, kept in persistent tensors.

Block tables change little from one decode step to the next: a sequence's table gains
one block every `block_size` tokens, and a copy-on-write replaces its last block. So
each running sequence owns a row of one persistent int32 table (`TableRows`), updated
by what changed (usually nothing), and a step's table is one `index_select` of the
batch's rows into a staging buffer; slot mappings are computed from it with tensor ops.
On a GPU the staging buffers are pinned, so the copies to the device are asynchronous.
A staging buffer is rewritten at the next step only: every step ends with a host sync
(sampling), so the copy that read it has finished by then."""

from __future__ import annotations

import numpy as np
import torch


class TableRows:
    """Block tables of sequences, one row each, `max_pages` wide. `rows` is the (pinned
    on a GPU) tensor, `host` its numpy view: the host writes single entries through the
    view (a numpy element write costs a fraction of a torch one)."""

    def __init__(self, max_pages: int, pin: bool, capacity: int = 64):
        self.max_pages, self.pin = max_pages, pin
        self._alloc(capacity)
        self.row_of: dict[int, int] = {}
        self.known: dict[int, tuple[int, int]] = {}   # row -> (entries written, last entry)
        self.free: list[int] = list(range(capacity - 1, -1, -1))

    def _alloc(self, capacity: int) -> None:
        old = getattr(self, "host", None)
        self.rows = torch.zeros(capacity, self.max_pages, dtype=torch.int32, pin_memory=self.pin)
        self.host = self.rows.numpy()
        if old is not None:
            self.host[:old.shape[0]] = old

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
            return r                     # the common decode step: nothing changed
        if n > self.max_pages:
            raise ValueError(f"seq {seq_id}: block table of {n} blocks, at most {self.max_pages}")
        host = self.host
        if rewrite or known == 0 or n < known or table[known - 1] != last:
            host[r, n:] = 0   # a reused row: nothing of its last owner past this table
            host[r, :n] = table
        elif n == known + 1:
            host[r, known] = table[known]
        elif n > known:
            host[r, known:n] = table[known:]
        if n:
            self.known[r] = (n, table[-1])
        return r

    def release(self, seq_id: int) -> None:
        r = self.row_of.pop(seq_id, None)
        if r is not None:
            self.known.pop(r, None)
            self.free.append(r)

    def _take(self) -> int:
        if not self.free:
            cap = self.rows.shape[0]
            self._alloc(2 * cap)
            self.free = list(range(2 * cap - 1, cap - 1, -1))
        return self.free.pop()


class DecodeInputs:
    """Staging of one decode step: `ints` [3, Bp] int64 (token ids, positions, slots)
    and `tables` [Bp, W] int32, rows past the batch padded (token 0 at position 0,
    slot -1, block 0: a one-token context that writes nothing). The staging tensors are
    written through their numpy views: a step's inputs are a handful of array
    operations plus one dictionary lookup per sequence whose table did not change."""

    def __init__(self, block_size: int, max_pages: int, pin: bool):
        self.block_size, self.pin = block_size, pin
        self.tables_rows = TableRows(max_pages, pin)
        self._grow(0)

    def _grow(self, rows: int) -> None:
        self._ints = torch.zeros(3, rows, dtype=torch.int64, pin_memory=self.pin and rows > 0)
        self._tables = torch.zeros(rows, self.tables_rows.max_pages, dtype=torch.int32,
                                   pin_memory=self.pin and rows > 0)
        self._ints_np, self._tables_np = self._ints.numpy(), self._tables.numpy()

    def build(self, seq_ids: list[int], tables: list[list[int]], token_ids: list[int], positions: list[int],
              padded: int | None = None, width: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """`tables` may be the block manager's live lists: they are read, never kept.
        Raises ValueError when a table has fewer blocks than its position needs."""
        B = len(seq_ids)
        Bp = B if padded is None else padded
        rows_of = self.tables_rows
        row = rows_of.row
        idx = np.fromiter(map(row, seq_ids, tables), np.int64, B)
        lens = np.fromiter(map(len, tables), np.int64, B)
        pos = np.asarray(positions, np.int64)
        bs = self.block_size
        short = lens * bs <= pos
        if short.any():
            i = int(np.flatnonzero(short)[0])
            need = int(pos[i]) // bs + 1
            raise ValueError(f"seq {seq_ids[i]}: block table has {int(lens[i])} blocks, "
                             f"{int(pos[i]) + 1} tokens need {need}")
        W = width if width is not None else int(lens.max())
        if self._ints.shape[1] < Bp:
            self._grow(Bp)
        ints, tab = self._ints_np[:, :Bp], self._tables_np[:Bp, :W]
        ints[0, :B] = token_ids
        ints[1, :B] = pos
        tab[:B] = rows_of.host[idx, :W]
        ints[2, :B] = tab[np.arange(B), pos // bs].astype(np.int64) * bs + pos % bs
        if Bp > B:
            ints[:, B:] = 0
            ints[2, B:] = -1
            tab[B:] = 0
        return self._ints[:, :Bp], self._tables[:Bp, :W]
