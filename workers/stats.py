"""The live counters of one run: what progress displays and a chunk task's summary read."""

from __future__ import annotations

from dataclasses import dataclass

from jobs.models import RequestState
from jobs.records import LineResult


@dataclass
class Stats:
    """Live counters of one run, read by progress displays."""

    calls: int = 0
    succeeded: int = 0
    failed: int = 0
    retries: int = 0
    released: int = 0
    in_flight: int = 0
    lines_in_flight: int = 0  # the lines of the calls in flight (a pack's are many)
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cached: int = 0  # succeeded lines answered from the response cache or a twin's call, not called
    halted: str | None = None

    @property
    def ended(self) -> int:
        """Lines that reached their end in this run or were given back."""
        return self.succeeded + self.failed + self.released

    def count(self, result: LineResult) -> None:
        """Count a line's terminal result."""
        if result.state == RequestState.SUCCEEDED:
            self.succeeded += 1
            self.cached += result.cached
            if result.usage is not None:
                self.prompt_tokens += result.usage.prompt_tokens
                self.completion_tokens += result.usage.completion_tokens
        else:
            self.failed += 1
