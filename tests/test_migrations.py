"""The versioned schema: applied once, recorded, and equal to what the models describe."""

from __future__ import annotations

import sqlalchemy as sa
from sqlmodel import SQLModel

import jobs.models  # noqa: F401 - registers the tables on SQLModel.metadata
from jobs.db import Store
from jobs.migrations import MIGRATIONS, applied_migrations, migrate


def test_migrate_records_every_migration_once(store: Store) -> None:
    with store.engine.connect() as conn:
        assert applied_migrations(conn) == {name for name, _ in MIGRATIONS}
    assert migrate(store.engine) == []


def test_migrated_schema_matches_models(store: Store) -> None:
    inspector = sa.inspect(store.engine)
    for table in SQLModel.metadata.sorted_tables:
        columns = {c["name"]: c["nullable"] for c in inspector.get_columns(table.name)}
        expected = {c.name: c.nullable for c in table.columns}
        assert columns == expected, table.name
