"""Which upstream calls the store already holds: the journal's replay skips what a batch committed."""

from __future__ import annotations

from collections.abc import Collection

import sqlalchemy as sa
from sqlmodel import Session

from jobs.store.common import ATTEMPT_TABLE

_att = ATTEMPT_TABLE
_PAGE = 500  # call ids per query: well under every backend's limit on bound parameters


def known_calls(session: Session, call_ids: Collection[str]) -> set[tuple[str, int]]:
    """The (call id, line id) pairs of these calls that have an attempt row."""
    ids = sorted(call_ids)
    known: set[tuple[str, int]] = set()
    conn = session.connection()
    for start in range(0, len(ids), _PAGE):
        query = sa.select(_att.c.call_id, _att.c.request_id).where(
            _att.c.call_id.in_(ids[start : start + _PAGE])
        )
        known.update((row.call_id, row.request_id) for row in conn.execute(query))
    return known
