"""A job's options: how hard to push the API, what to spend, and the labels usage reports group by.

One pydantic model, stored with the job as JSON text (``Job.options``) and read back through the
store (``q.job_options``), so nothing else parses that column. Only the options that differ from
the defaults are stored: a job submitted before an option existed reads back with its default.

Where the job runs changes its defaults, explicit here instead of hidden in twin defaults: an
embedded run (one process, ``batcher run``) and a worker's chunk (one broker message; a worker
process runs several) get different lease lengths (``Placement``). Both get the same ceiling of
calls in flight, under which the number is found (``workers.concurrency``); a concurrency the
user chose applies to both.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from decimal import Decimal
from enum import StrEnum

from pydantic import BaseModel, ConfigDict, Field


class RunMode(StrEnum):
    """Where a job's calls are made: in the submitting process or by Celery workers."""

    EMBEDDED = "embedded"
    CELERY = "celery"


@dataclass(frozen=True, slots=True)
class Placement:
    """The defaults that depend on where lines run."""

    concurrency: int  # calls in flight unless the job chose a number
    lease_seconds: float  # how long a claimed line stays ours without a renewal


PLACEMENTS = {
    # One process holds the job for its whole run: renewals are cheap, a crash is rare and
    # `run-job` takes the dead pid's lines back at once, so a long lease costs nothing.
    # The concurrency is a ceiling: the number in flight is found below it (workers.concurrency).
    RunMode.EMBEDDED: Placement(concurrency=256, lease_seconds=300.0),
    # A chunk is one message among many workers: a killed worker's lines must come back soon.
    RunMode.CELERY: Placement(concurrency=256, lease_seconds=60.0),
}


class CacheMode(StrEnum):
    """Which lines the response cache answers (``workers.cache``)."""

    AUTO = "auto"  # deterministic requests: temperature 0 (or absent, with a seed), every embedding
    OFF = "off"  # every line is called (--no-cache)
    ALL = "all"  # sampled requests too (--cache-all)


class JobOptions(BaseModel):
    """The options a job was submitted with (flags of ``submit``/``run``; some updated later)."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    concurrency: int | None = Field(default=None, ge=1)  # None: the placement's default
    rpm: float | None = Field(default=None, gt=0)
    tpm: float | None = Field(default=None, gt=0)
    max_attempts: int = Field(default=5, ge=1)  # failed calls; throttles (429, overload) do not count
    max_wait: float = Field(default=3600.0, ge=0)  # seconds a line may stay throttled
    timeout: float = Field(default=120.0, gt=0)
    pack: bool = True
    pack_size: int = Field(default=256, ge=1)
    poll_interval: float = Field(default=15.0, gt=0)  # task lines: seconds between polls of a task
    download: bool = True  # task lines: fetch the result URLs into the results folder
    task_deadline: float | None = Field(default=None, gt=0)  # task lines: else the relay's (MJ 1 h, 24 h)
    cache: CacheMode = CacheMode.AUTO
    budget: Decimal | None = Field(default=None, gt=0)  # USD
    prices: tuple[str, ...] = ()  # price files for the budget, as absolute paths
    group: str | None = None  # the relay group whose ratio the budget applies
    tag: str | None = None
    metadata: dict[str, str] = Field(default_factory=dict)
    output: str | None = None  # the results file `run -o` wrote (absolute): `run-job` rewrites it
    errors_output: str | None = None  # and the file of failed lines (`--errors`), if one was asked for

    @classmethod
    def from_json(cls, text: str | None) -> JobOptions:
        """Options as stored; keys this version does not know are ignored."""
        return cls.model_validate_json(text or "{}")

    def to_json(self) -> str:
        """The stored form: only what differs from the defaults, keys sorted."""
        return json.dumps(self.public(), sort_keys=True)

    def public(self) -> dict[str, object]:
        """The options that differ from the defaults, as JSON-ready data (``--json`` shows these)."""
        return self.model_dump(mode="json", exclude_defaults=True)

    def merged(self, **changes: object) -> JobOptions:
        """These options with ``changes`` applied (None means keep), validated again."""
        chosen = {k: v for k, v in changes.items() if v is not None}
        return JobOptions.model_validate(self.model_dump() | chosen)

    def concurrency_in(self, mode: RunMode) -> int:
        """Calls in flight: the job's choice, else the placement's default."""
        return self.concurrency or PLACEMENTS[mode].concurrency
