"""What the stand-in relay saw: calls, answers, usage served and reported, per key and per second."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from batcher.devrelay.answers import Usage


@dataclass
class RelayStats:
    """What the relay saw; ``snapshot`` is what ``GET /_stats`` returns."""

    calls: int = 0
    served: int = 0
    rate_limited: int = 0
    overloaded: int = 0
    peak_in_flight: int = 0
    by_status: Counter[int | str] = field(default_factory=Counter)
    by_fault: Counter[str] = field(default_factory=Counter)
    usage: Counter[str] = field(default_factory=Counter)
    reported_usage: Counter[str] = field(default_factory=Counter)
    per_key: Counter[str] = field(default_factory=Counter)
    per_second: Counter[int] = field(default_factory=Counter)
    answered_per_second: Counter[int] = field(default_factory=Counter)
    file_requests: list[dict[str, str]] = field(default_factory=list)  # headers of each image fetched

    def add_served(self, usage: Usage, *, reported: bool = False) -> None:
        """Count one answer whose work was done, with its usage even if the client never sees it.

        ``reported``: the answer carried that usage to the client intact (what it can confirm).
        """
        self.served += 1
        self.usage.update(usage)
        if reported:
            self.reported_usage.update(usage)

    def snapshot(self) -> dict[str, Any]:
        """Plain dicts: status codes and seconds stay ints here; JSON makes every key a string."""
        keys = ("prompt_tokens", "completion_tokens", "total_tokens", "characters", "seconds", "images")
        usage = {k: self.usage[k] for k in keys}
        return {
            "calls": self.calls,
            "served": self.served,
            "rate_limited": self.rate_limited,
            "overloaded": self.overloaded,
            "peak_in_flight": self.peak_in_flight,
            "by_status": dict(self.by_status),
            "by_fault": dict(self.by_fault),
            "usage": usage,
            "reported_usage": {k: self.reported_usage[k] for k in keys},
            "per_key": dict(self.per_key),
            "per_second": dict(self.per_second),
            "answered_per_second": dict(self.answered_per_second),
            "file_requests": list(self.file_requests),
        }
