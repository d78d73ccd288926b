"""How one landed call's records are written in a journal entry, and read back (``workers.journal``).

An entry holds a call's attempts and terminal results. A packed call brings 256 of each that
differ only in a few fields (the line, its attempt number, its usage, its body, its part of the
vector block), so the entry is **columnar**: per kind of record, the fields every record shares
are written once (``s``), the others as one list of values per field (``v``), ``k`` records in
all; a usage is a list of its fields, a line's vectors ``[block, dim, encoding, start, stop]``
with the block (the call's, shared by its lines) written once in the entry's ``b``, base64.
Writing each record as an object of its own cost a packed line about 29 µs (orjson walking
dataclasses, a Python call for each decimal and each block); this costs a few.

Entries written before this form (``e``: every record an object) are still read.
"""

from __future__ import annotations

import base64
from collections.abc import Sequence
from dataclasses import fields
from datetime import datetime
from decimal import Decimal
from operator import attrgetter
from typing import Any

import orjson

from jobs.records import AttemptRecord, LineResult, Usage
from jobs.vectors import VectorEncoding, Vectors

_ATTEMPT_FIELDS = tuple(f.name for f in fields(AttemptRecord))
_RESULT_FIELDS = tuple(f.name for f in fields(LineResult))
_USAGE_FIELDS = tuple(f.name for f in fields(Usage))
_DECIMALS = ("seconds", "calls")


def json_default(value: object) -> object:
    """What orjson does not write itself: decimals (a speech line's seconds)."""
    if isinstance(value, Decimal):
        return str(value)
    raise TypeError(f"not JSON serializable: {type(value).__name__}")


def _usage_row(u: Usage | None) -> list[Any] | None:
    if u is None:
        return None
    return [
        u.prompt_tokens, u.completion_tokens, u.total_tokens, u.characters, u.estimated, u.cached_tokens,
        u.reasoning_tokens, u.cache_write_tokens, u.cache_write_1h_tokens, str(u.seconds), u.images,
        str(u.calls),
    ]  # fmt: skip


def _usage_of(row: list[Any] | None) -> Usage | None:
    if row is None:
        return None
    p, c, t, chars, est, cached, reasoning, cw, cw1h, seconds, images, calls = row
    return Usage(p, c, t, chars, est, cached, reasoning, cw, cw1h, Decimal(seconds), images, Decimal(calls))


class _Blocks:
    """The vector blocks of one entry, each written once."""

    def __init__(self) -> None:
        self.places: dict[int, int] = {}
        self.blocks: list[bytes] = []

    def row(self, v: Vectors | None) -> list[Any] | None:
        if v is None:
            return None
        place = self.places.get(id(v.data))
        if place is None:
            place = self.places[id(v.data)] = len(self.blocks)
            self.blocks.append(v.data)
        return [place, v.dim, v.encoding.value, v.start, v.stop]


def _table(records: Sequence[Any], names: Sequence[str], encode: dict[str, Any]) -> dict[str, Any]:
    """Records as columns: fields all share once (``s``), the others value by value (``v``)."""
    if len(records) == 1:  # every field is shared: one call's line, the common case unpacked
        return {"k": 1, "s": _one(records[0], names, encode), "v": {}}
    shared: dict[str, Any] = {}
    columns: dict[str, Any] = {}
    for name in names:
        values = list(map(attrgetter(name), records))
        if name in encode:
            values = list(map(encode[name], values))
        first = values[0]
        if values.count(first) == len(values):  # in C: a generator of 256 compares cost 3 us a line
            shared[name] = first
        else:
            columns[name] = values
    return {"k": len(records), "s": shared, "v": columns}


def _one(record: Any, names: Sequence[str], encode: dict[str, Any]) -> dict[str, Any]:
    values = {name: getattr(record, name) for name in names}
    for name, how in encode.items():
        if name in values:
            values[name] = how(values[name])
    return values


def landed_entry(seq: int, attempts: Sequence[AttemptRecord], results: Sequence[LineResult]) -> bytes:
    """The journal line of one call's records (see the module docstring)."""
    blocks = _Blocks()
    entry: dict[str, Any] = {"n": seq}
    if attempts:
        entry["a"] = _table(attempts, _ATTEMPT_FIELDS, {"usage": _usage_row})
    if results:
        entry["r"] = _table(results, _RESULT_FIELDS, {"usage": _usage_row, "vectors": blocks.row})
    entry["b"] = [base64.b64encode(block).decode() for block in blocks.blocks]
    return orjson.dumps(entry, default=json_default) + b"\n"


def _rows(table: dict[str, Any] | None) -> list[dict[str, Any]]:
    if not table:
        return []
    shared, columns = table["s"], table["v"]
    return [shared | {name: values[i] for name, values in columns.items()} for i in range(table["k"])]


def landed_records(record: dict[str, Any]) -> tuple[list[AttemptRecord], list[LineResult]]:
    """A journal entry's attempts and results, in either form."""
    blocks = [base64.b64decode(b) for b in record.get("b", [])]
    if "e" in record or ("a" in record and isinstance(record["a"], list)):  # every record an object
        old = record.get("e", record)
        return [_old_attempt(a) for a in old["a"]], [_old_result(r, blocks) for r in old["r"]]
    attempts = []
    for data in _rows(record.get("a")):
        data["started_at"] = datetime.fromisoformat(data["started_at"])
        data["usage"] = _usage_of(data["usage"])
        if "carried" in data:  # JSON has no tuples; entries written before packed rows have none
            data["carried"] = tuple((rid, n) for rid, n in data["carried"])
        attempts.append(AttemptRecord(**data))
    results = []
    for data in _rows(record.get("r")):
        data["usage"] = _usage_of(data["usage"])
        v = data["vectors"]
        if v is not None:
            data["vectors"] = Vectors(blocks[v[0]], v[1], VectorEncoding(v[2]), v[3], v[4])
        results.append(LineResult(**data))
    return attempts, results


# --- entries written before the columnar form -----------------------------------------------------


def _old_usage(data: dict[str, Any] | None) -> Usage | None:
    if not data:
        return None
    for name in _DECIMALS:
        if name in data:
            data[name] = Decimal(str(data[name]))
    return Usage(**{k: v for k, v in data.items() if k in _USAGE_FIELDS})


def _old_attempt(data: dict[str, Any]) -> AttemptRecord:
    data["started_at"] = datetime.fromisoformat(data["started_at"])
    data["usage"] = _old_usage(data.get("usage"))
    return AttemptRecord(**data)


def _old_result(data: dict[str, Any], blocks: Sequence[bytes] = ()) -> LineResult:
    data["usage"] = _old_usage(data.get("usage"))
    if data.get("vectors"):
        v = data["vectors"]
        encoding = VectorEncoding(v["encoding"])
        if isinstance(v["data"], str):  # a journal written before blocks were shared: the line's own part
            data["vectors"] = Vectors(base64.b64decode(v["data"]), v["dim"], encoding)
        else:
            data["vectors"] = Vectors(blocks[v["data"]], v["dim"], encoding, v["start"], v["stop"])
    return LineResult(**data)
