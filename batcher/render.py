"""Rendering for people and scripts: plain aligned tables, and JSON for ``--json``.

Text that came from a file or a relay (custom_ids, urls, job names, relay messages) may hold
control characters; on a terminal they would be escape sequences (recolouring, retitling, hiding
text). ``printable`` shows them as ``\\x1b``-style escapes instead, and every table cell and
CLI error message passes through it. JSON output needs nothing: JSON escapes them itself.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

import orjson

from jobs import store as q
from jobs.models import Job

_SHOWN = {"\n", "\t"}
_BIDI = [*range(0x202A, 0x202F), *range(0x2066, 0x206A)]
_ESCAPES = {
    code: (f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}")
    for code in [*range(0x20), 0x7F, *range(0x80, 0xA0), *_BIDI]
    if chr(code) not in _SHOWN
}


def printable(text: str) -> str:
    """The text with control characters (and bidi overrides) shown as escapes, not obeyed."""
    return text.translate(_ESCAPES)


def table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A left-aligned text table with a header rule; numbers are right-aligned."""
    cells = [[_cell(v) for v in row] for row in rows]
    widths = [max([len(h)] + [len(r[i]) for r in cells]) for i, h in enumerate(headers)]
    numeric = [all(isinstance(row[i], int | float) for row in rows) and rows for i in range(len(headers))]

    def fmt(values: Sequence[str]) -> str:
        parts = [v.rjust(w) if num else v.ljust(w) for v, w, num in zip(values, widths, numeric, strict=True)]
        return "  ".join(parts).rstrip()

    lines = [fmt(list(headers)), "  ".join("-" * w for w in widths)]
    lines += [fmt(row) for row in cells]
    return "\n".join(lines)


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, datetime):
        return value.strftime("%Y-%m-%d %H:%M:%S")
    return printable(str(value))


def job_dict(
    job: Job, counts: dict[str, int] | None = None, usage: dict[str, int] | None = None
) -> dict[str, Any]:
    """A job as plain data for ``--json``."""
    data = job.model_dump(mode="json")
    data["options"] = q.options_of(job).public()
    if counts is not None:
        data["counts"] = counts
    if usage is not None:
        data["usage"] = usage
    return data


def to_json(data: Any) -> str:
    """Pretty JSON for ``--json`` output."""
    return orjson.dumps(data, option=orjson.OPT_INDENT_2).decode()
