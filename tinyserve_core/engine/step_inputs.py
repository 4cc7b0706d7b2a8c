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

import torch


class TableRows:
    """Block tables of sequences, one row each, `max_pages` wide."""

    def __init__(self, max_pages: int, pin: bool, capacity: int = 64):
        self.max_pages, self.pin = max_pages, pin
        self.rows = torch.zeros(capacity, max_pages, dtype=torch.int32, pin_memory=pin)
        self.row_of: dict[int, int] = {}
        self.known: dict[int, tuple[int, int]] = {}   # row -> (entries written, last entry)
        self.free: list[int] = list(range(capacity - 1, -1, -1))

    def row(self, seq_id: int, table: list[int], rewrite: bool = False) -> int:
        """The row of `seq_id`, made equal to `table`. Only new entries are written
        unless the last known one changed (copy-on-write) or `rewrite` (a prefill:
        after a preemption the whole table is new)."""
        r = self.row_of.get(seq_id)
        if r is None:
            r = self.row_of[seq_id] = self._take()
            rewrite = True
        n = len(table)
        if n > self.max_pages:
            raise ValueError(f"seq {seq_id}: block table of {n} blocks, at most {self.max_pages}")
        known, last = self.known.get(r, (0, -1))
        if rewrite or known == 0 or n < known or table[known - 1] != last:
            self.rows[r, n:] = 0   # a reused row: nothing of its last owner past this table
            self.rows[r, :n] = torch.tensor(table, dtype=torch.int32)
        elif n > known:
            new = table[known:]
            if len(new) == 1:
                self.rows[r, known] = new[0]
            else:
                self.rows[r, known:n] = torch.tensor(new, dtype=torch.int32)
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
            grown = torch.zeros(2 * cap, self.max_pages, dtype=torch.int32, pin_memory=self.pin)
            grown[:cap] = self.rows
            self.rows = grown
            self.free = list(range(2 * cap - 1, cap - 1, -1))
        return self.free.pop()


class DecodeInputs:
    """Staging of one decode step: `ints` [3, Bp] int64 (token ids, positions, slots)
    and `tables` [Bp, W] int32, rows past the batch padded (token 0 at position 0,
    slot -1, block 0: a one-token context that writes nothing)."""

    def __init__(self, block_size: int, max_pages: int, pin: bool):
        self.block_size, self.pin = block_size, pin
        self.tables_rows = TableRows(max_pages, pin)
        self._ints = torch.zeros(3, 0, dtype=torch.int64)
        self._tables = torch.zeros(0, max_pages, dtype=torch.int32)

    def build(self, seq_ids: list[int], tables: list[list[int]], token_ids: list[int], positions: list[int],
              padded: int | None = None, width: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        B = len(seq_ids)
        Bp = B if padded is None else padded
        rows_of = self.tables_rows
        idx = torch.tensor([rows_of.row(s, t) for s, t in zip(seq_ids, tables)], dtype=torch.int64)
        W = width if width is not None else max(len(t) for t in tables)
        if self._ints.shape[1] < Bp:
            self._ints = torch.zeros(3, Bp, dtype=torch.int64, pin_memory=self.pin)
            self._tables = torch.zeros(Bp, rows_of.max_pages, dtype=torch.int32, pin_memory=self.pin)
        ints, tab = self._ints[:, :Bp], self._tables[:Bp, :W]
        ints[:2, :B] = torch.tensor([token_ids, positions], dtype=torch.int64)
        tab[:B] = rows_of.rows[idx, :W]
        pos = ints[1, :B]
        bs = self.block_size
        ints[2, :B] = tab[:B].gather(1, (pos // bs)[:, None]).squeeze(1).long() * bs + pos % bs
        if Bp > B:
            ints[:, B:] = 0
            ints[2, B:] = -1
            tab[B:] = 0
        return ints, tab
