"""The simulator's records, compact and, past a size, on disk.

A million-actor hour makes ~13 M requests and ~2.5 M activations and checkpoints.
Kept as Python tuples they alone would need several GiB; here they are typed columns:

* :class:`RequestLog`: one row per request, updated in place until the request ends.
  Once ``spill_rows`` rows are held, the oldest rows that have all ended are appended
  to one file per column and dropped from memory; at the end the table's columns are
  read-only memory maps of those files, and pages are read only when a column is
  used. The files are anonymous temporary files (unlinked when created), so a run that
  is killed leaves nothing behind.
* :class:`RowLog`: rows appended complete (activations, checkpoints), stored as
  columns; strings (actors, workers, nodes, tiers) as codes into a table of names.

Both give the tables :func:`control.metrics.table` gives (column names, values and
numeric dtypes), so summaries do not change; string columns are object arrays whose
rows share one str per name (8 bytes a row; a fixed-width unicode array would take 4
bytes per character of the longest name, on every row).
"""

from __future__ import annotations

import tempfile
from array import array
from typing import IO, Any, NamedTuple, get_type_hints

import numpy as np

from control.metrics import OUTCOMES

OPEN = -1  # outcome of a request that has not ended
SPILL_ROWS = 1 << 20  # rows a request log holds before it spills ended ones to disk

# column -> array typecode
_REQUEST_COLUMNS = {
    "arrival": "d", "actor": "q", "service": "d", "cp": "d", "queue": "d",
    "activation": "d", "total": "d", "outcome": "b", "status": "h", "activated": "b",
    "wake": "b",
}  # fmt: skip


class RequestLog:
    """Per-request columns, indexed by request id (``rid``): row ``rid - base`` of the
    in-memory arrays. Columns are attributes (``log.total[rid - log.base]``)."""

    arrival: array[Any]
    actor: array[Any]
    service: array[Any]
    cp: array[Any]
    queue: array[Any]
    activation: array[Any]
    total: array[Any]
    outcome: array[Any]
    status: array[Any]
    activated: array[Any]
    wake: array[Any]

    def __init__(self, spill_rows: int = SPILL_ROWS) -> None:
        if spill_rows < 1:
            raise ValueError(f"spill_rows: must be >= 1 (got {spill_rows})")
        for name, code in _REQUEST_COLUMNS.items():
            setattr(self, name, array(code))
        self.base = 0  # request id of the first row in memory
        self.spilled_rows = 0
        self._spill_rows = spill_rows
        self._spill_at = spill_rows
        self._files: dict[str, IO[bytes]] | None = None  # column -> its spill file

    def __len__(self) -> int:
        return self.base + len(self.arrival)

    def add(self, now: float, actor: int, service: float, *, wake: bool = False) -> int:
        """A new open request; its id."""
        rid = self.base + len(self.arrival)
        self.arrival.append(now)
        self.actor.append(actor)
        self.service.append(service)
        self.cp.append(0.0)
        self.queue.append(0.0)
        self.activation.append(0.0)
        self.total.append(0.0)
        self.outcome.append(OPEN)
        self.status.append(0)
        self.activated.append(0)
        self.wake.append(wake)
        if len(self.arrival) >= self._spill_at:
            self._spill()
        return rid

    def _spill(self) -> None:
        """Move the ended rows before the oldest open one to the column files."""
        first_open = self.outcome.tobytes().find(OPEN.to_bytes(1, "little", signed=True))
        ended = len(self.outcome) if first_open < 0 else first_open
        if ended:
            if self._files is None:
                # open across calls, closed by close(): not a with-block
                self._files = {name: tempfile.TemporaryFile(prefix="actormux-requests-")  # noqa: SIM115
                               for name in _REQUEST_COLUMNS}  # fmt: skip
            for name in _REQUEST_COLUMNS:
                column: array[Any] = getattr(self, name)
                column[:ended].tofile(self._files[name])
                del column[:ended]
            self.base += ended
            self.spilled_rows += ended
        self._spill_at = len(self.arrival) + self._spill_rows

    def columns(self) -> dict[str, np.ndarray]:
        """Every column, whole, by name (memory maps once some rows were spilled)."""
        if self._files is None:
            return {name: np.frombuffer(getattr(self, name), dtype=getattr(self, name).typecode)
                    for name in _REQUEST_COLUMNS}  # fmt: skip
        out: dict[str, np.ndarray] = {}
        try:
            for name in _REQUEST_COLUMNS:
                column: array[Any] = getattr(self, name)
                spill = self._files[name]
                column.tofile(spill)
                spill.flush()
                out[name] = np.memmap(spill, dtype=column.typecode, mode="r")
        finally:  # the maps keep the data
            self.close()
        for name, code in _REQUEST_COLUMNS.items():  # later rows go on in memory
            setattr(self, name, array(code))
        return out

    def table(self, actor_ids: list[str]) -> dict[str, np.ndarray]:
        """The requests table (:data:`control.metrics.REQUEST_COLUMNS`)."""
        columns = self.columns()
        return {
            "request": np.arange(len(columns["arrival"]), dtype=np.int64),
            "actor": np.asarray(actor_ids, dtype=object)[columns["actor"]],
            "arrival_s": columns["arrival"],
            "outcome": np.asarray(OUTCOMES, dtype=object)[columns["outcome"]],
            "status": columns["status"],
            "activated": columns["activated"].astype(bool),
            "control_plane_s": columns["cp"],
            "queue_s": columns["queue"],
            "activation_s": columns["activation"],
            "service_s": columns["service"],
            "total_s": columns["total"],
            "wake": columns["wake"].astype(bool),
        }

    def close(self) -> None:
        """Close the spill files (their space goes once no map uses them)."""
        for spill in (self._files or {}).values():
            spill.close()
        self._files = None


_KINDS = {str: "s", bool: "b", int: "q", float: "d"}


class RowLog:
    """Complete rows of one :class:`typing.NamedTuple` type, stored as columns: each
    field by its annotation (str as a code into that column's names, bool, int, float)."""

    def __init__(self, row_type: type[NamedTuple]) -> None:
        hints = get_type_hints(row_type)
        self.fields: tuple[str, ...] = row_type._fields
        self._kinds = "".join(_KINDS[hints[name]] for name in self.fields)
        self._columns = [array("i" if kind == "s" else kind) for kind in self._kinds]
        self._codes: list[dict[str, int]] = [{} for _ in self.fields]
        self._names: list[list[str]] = [[] for _ in self.fields]
        self.rows = 0

    def __len__(self) -> int:
        return self.rows

    def append(self, row: tuple[Any, ...]) -> None:
        """Add one row (a tuple with this log's fields)."""
        for i, kind in enumerate(self._kinds):
            value = row[i]
            if kind == "s":
                codes = self._codes[i]
                code = codes.get(value)
                if code is None:
                    code = codes[value] = len(self._names[i])
                    self._names[i].append(value)
                self._columns[i].append(code)
            else:
                self._columns[i].append(value)
        self.rows += 1

    def table(self) -> dict[str, np.ndarray]:
        """The rows as columns, as :func:`control.metrics.table` gives them."""
        if not self.rows:
            return {name: np.empty(0) for name in self.fields}
        out = {}
        for i, name in enumerate(self.fields):
            column, kind = self._columns[i], self._kinds[i]
            values = np.frombuffer(column, dtype=column.typecode)
            if kind == "s":  # objects: each name is stored once, rows point to it
                out[name] = np.asarray(self._names[i], dtype=object)[values]
            elif kind == "b":
                out[name] = values.astype(bool)
            else:
                out[name] = values.copy()
        return out
