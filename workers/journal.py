"""The local journal: every answer made durable the moment it lands, replayed after a crash.

The store is written in batches (``workers.recorder``), so answers that arrived in the last flush
interval die with a killed process, and their lines are called (and paid) again. The journal
closes that gap: one append-only file per executor under ``$BATCHER_HOME/journal/``, in which

- a **sent** marker goes down before each call leaves (call id, its lines and attempt numbers);
- each attempt and terminal result is appended as it lands, before the line could run again;
- a **stored** marker follows each batch the store committed (everything up to a sequence number).

A live executor holds an exclusive ``flock`` on its file. Whoever takes the lock of a file has
proved its writer dead and **replays** it into the store: attempts and results after the last
stored marker are written (those a committed batch already holds are skipped by call id; results
only ever land on lines not yet terminal, so writing one twice is harmless), and each sent marker
whose call never landed becomes an attempt with no answer, which ``batcher usage`` counts as
*unknown*: the relay may have billed it. The file is then removed. A journal names its store by a
hash of the store URL, so stores sharing one ``BATCHER_HOME`` replay only their own.

Replay runs before dead processes' leases are taken back (the embedded runner, every chunk task,
the sweeper, ``batcher usage``), so a line whose answer landed is never handed out again. The file
starts afresh once it passes ``ROTATE_BYTES`` and the store has caught up.
"""

from __future__ import annotations

import fcntl
import hashlib
import logging
import os
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import orjson

from jobs import store as q
from jobs.db import Store
from jobs.records import AttemptRecord, LineResult
from workers.journalform import json_default, landed_entry, landed_records

log = logging.getLogger(__name__)

ROTATE_BYTES = 16 * 1024 * 1024
LOST_MESSAGE = "sent before the process died; no answer was recorded (the relay may have billed it)"
_UNSAFE = re.compile(r"[^A-Za-z0-9_.-]")


def journal_dir(home: Path) -> Path:
    """Where the journals of this ``BATCHER_HOME`` live."""
    return home / "journal"


def store_key(url: str) -> str:
    """A short name of the store a journal belongs to (a hash: the URL may hold a password)."""
    return hashlib.sha256(url.encode()).hexdigest()[:16]


def _line(record: dict[str, Any]) -> bytes:
    return orjson.dumps(record, default=json_default) + b"\n"


def open_journal(store: Store, folder: Path, owner: str) -> Journal:
    """A new journal for one executor writing to ``store``."""
    return Journal(folder, owner=owner, store=store_key(store.url))


class Journal:
    """One executor's journal file (see the module docstring)."""

    def __init__(self, folder: Path, *, owner: str, store: str) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        self._folder, self._owner, self._store = folder, owner, store
        self.seq = 0
        self._stored = 0
        self._generation = 0
        self._open_sent: dict[str, bytes] = {}
        self._unstored: dict[int, bytes] = {}
        self._fd, self.path = self._create()

    def _create(self) -> tuple[int, Path]:
        self._generation += 1
        path = self._folder / f"{_UNSAFE.sub('_', self._owner)}.{self._generation}.jsonl"
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_APPEND | os.O_NOFOLLOW
        fd = os.open(path, flags, 0o600)
        fcntl.flock(fd, fcntl.LOCK_EX)
        os.write(fd, _line({"journal": 1, "store": self._store, "owner": self._owner}))
        return fd, path

    def sent(self, call_id: str, job_id: int, lines: Sequence[tuple[int, int]], started_at: datetime) -> None:
        """Before a call leaves: which lines, at which attempt."""
        line = _line({"s": call_id, "j": job_id, "l": list(lines), "t": started_at})
        self._open_sent[call_id] = line
        os.write(self._fd, line)

    def landed(self, attempts: Sequence[AttemptRecord], results: Sequence[LineResult]) -> int:
        """An answer's records, as they land; returns their sequence number."""
        self.seq += 1
        for attempt in attempts:
            if attempt.call_id is not None:
                self._open_sent.pop(attempt.call_id, None)
        line = landed_entry(self.seq, attempts, results)
        self._unstored[self.seq] = line
        os.write(self._fd, line)
        return self.seq

    def stored(self, upto: int) -> None:
        """The store committed every record up to sequence ``upto``."""
        for n in [n for n in self._unstored if n <= upto]:
            del self._unstored[n]
        self._stored = max(self._stored, upto)
        os.write(self._fd, _line({"k": upto}))
        if os.fstat(self._fd).st_size > ROTATE_BYTES:
            self._rotate()

    def _rotate(self) -> None:
        old_fd, old_path = self._fd, self.path
        self._fd, self.path = self._create()
        for line in [*self._open_sent.values(), *self._unstored.values()]:
            os.write(self._fd, line)
        os.write(self._fd, _line({"k": self._stored}))
        old_path.unlink()
        os.close(old_fd)

    def close(self) -> None:
        """At the end of a run: remove the file if the store has everything, else leave it to replay."""
        if not self._unstored and not self._open_sent:
            self.path.unlink(missing_ok=True)
        os.close(self._fd)


# --- replay --------------------------------------------------------------------------------------


@dataclass
class _Replay:
    """What a dead journal holds that the store may not."""

    stored: int = 0
    entries: list[tuple[int, list[AttemptRecord], list[LineResult]]] = field(default_factory=list)
    sent: dict[str, dict[str, Any]] = field(default_factory=dict)
    landed_calls: set[str] = field(default_factory=set)


def replay_dead(store: Store, folder: Path) -> int:
    """Replay every journal of this store whose writer is dead; return the records written."""
    if not folder.is_dir():
        return 0
    key = store_key(store.url)
    written = 0
    for path in sorted(folder.glob("*.jsonl")):
        written += _replay_file(store, path, key)
    return written


def _replay_file(store: Store, path: Path, key: str) -> int:
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    except FileNotFoundError:
        return 0
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return 0  # its writer is alive
        with os.fdopen(os.dup(fd), "rb") as f:
            header, replay = _read(f)
        if header.get("store") != key:
            return 0
        written = _apply(store, replay)
        path.unlink(missing_ok=True)
        return written
    finally:
        os.close(fd)


def _read(f: Any) -> tuple[dict[str, Any], _Replay]:
    replay = _Replay()
    header: dict[str, Any] = {}
    for raw in f:
        try:
            record = orjson.loads(raw)
        except orjson.JSONDecodeError:
            continue  # a line cut short by the kill: its call was in flight
        if "journal" in record:
            header = record
        elif "k" in record:
            replay.stored = max(replay.stored, record["k"])
        elif "s" in record:
            replay.sent[record["s"]] = record
        elif "n" in record:
            attempts, results = landed_records(record)
            replay.landed_calls.update(a.call_id for a in attempts if a.call_id)
            replay.entries.append((record["n"], attempts, results))
    return header, replay


def _apply(store: Store, replay: _Replay) -> int:
    attempts = [a for n, batch, _ in replay.entries if n > replay.stored for a in batch]
    results = [r for n, _, batch in replay.entries if n > replay.stored for r in batch]
    attempts += [a for cid, s in replay.sent.items() if cid not in replay.landed_calls for a in _lost(cid, s)]
    if not attempts and not results:
        return 0
    with store.session() as session:
        known = q.known_calls(session, {a.call_id for a in attempts if a.call_id})
        fresh = [a for a in attempts if (a.call_id, a.request_id) not in known]
        q.record_attempts(session, fresh)
        q.record_results(session, results)
        for job_id in {a.job_id for a in fresh} | {r.job_id for r in results}:
            q.complete_if_done(session, job_id)
    log.warning("journal: replayed %d attempts and %d results of a dead process", len(fresh), len(results))
    return len(fresh) + len(results)


def _lost(call_id: str, sent: dict[str, Any]) -> Iterator[AttemptRecord]:
    for request_id, attempt_no in sent["l"]:
        yield AttemptRecord(
            request_id=request_id,
            job_id=sent["j"],
            attempt_no=attempt_no,
            started_at=datetime.fromisoformat(sent["t"]),
            duration_ms=0,
            status_code=None,
            outcome="retry",
            error_class="lost",
            error_message=LOST_MESSAGE,
            sent=True,
            call_id=call_id,
        )
