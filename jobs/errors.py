"""The one exception tree of batcher.

Every error a user can cause or fix is a ``BatcherError``; its message says what happened and what
to do next. The CLI turns a ``BatcherError`` into that message and exit code 1; any other exception
is a bug and shows a traceback. Foreign exceptions (SQLAlchemy, httpx, redis, kombu) are translated
into this tree at the one boundary that talks to that library.

    BatcherError
    ├── ConfigError          settings are missing or invalid
    ├── InputError           a JSONL input file has invalid lines (carries every problem)
    ├── StoreError           the SQL store cannot be reached or used
    │   ├── JobNotFound      no job has the given id
    │   ├── UnknownEndpoint  a stored line names a route no endpoint family serves
    │   └── BlobMissing      an input file a line sends is not where this machine looks
    ├── JobStateError        the job is not in a state that allows the operation
    ├── ApiError             the API answered in a way that ends a line or a job
    ├── BrokerError          the Celery broker cannot be reached
    └── LimiterError         the shared rate limiter cannot be reached (fails closed)
"""

from __future__ import annotations

from dataclasses import dataclass


class BatcherError(Exception):
    """Raised for any error the user can act on; the message says what to do next."""


class ConfigError(BatcherError):
    """Raised when settings are missing or invalid."""


@dataclass(frozen=True)
class Problem:
    """One thing wrong with one line of an input file."""

    path: str
    line: int
    message: str

    def __str__(self) -> str:
        return f"{self.path}:{self.line}: {self.message}"


class InputError(BatcherError):
    """Raised when an input file has invalid lines; carries every problem found."""

    def __init__(
        self, path: str, problems: list[Problem], *, hint: str = "", total: int | None = None
    ) -> None:
        self.path = path
        self.problems = problems
        self.hint = hint
        self.total = len(problems) if total is None else total
        super().__init__(self._render())

    def _render(self) -> str:
        lines = [str(p) for p in self.problems]
        if self.total > len(self.problems):
            lines.append(f"... and {self.total - len(self.problems)} more problems")
        if self.total:
            plural = "s" if self.total != 1 else ""
            lines.append(f"{self.path}: {self.total} invalid line{plural}; nothing was stored.")
        if self.hint:
            lines.append(self.hint)
        return "\n".join(lines)


class StoreError(BatcherError):
    """Raised when the SQL store cannot be reached or used."""


class JobNotFound(StoreError):
    """Raised when no job has the given id."""

    def __init__(self, job_id: int) -> None:
        self.job_id = job_id
        super().__init__(f"no job {job_id}; run `batcher jobs` to list the jobs in this store")


class UnknownEndpoint(StoreError):
    """Raised when a stored line names a route no endpoint family serves (a newer batcher stored it)."""


class BlobMissing(StoreError):
    """Raised when an input file (audio, an image) of a line is not in the store or blob folder."""


class JobStateError(BatcherError):
    """Raised when a job is not in a state that allows the requested operation."""


class ApiError(BatcherError):
    """Raised when the API answers in a way that ends a line or a job."""

    def __init__(self, message: str, *, status: int | None = None, code: str | None = None) -> None:
        self.status = status
        self.code = code
        super().__init__(message)


class BrokerError(BatcherError):
    """Raised when the Celery broker cannot be reached."""


class LimiterError(BatcherError):
    """Raised when the shared rate limiter cannot be reached; no call is made without it."""
