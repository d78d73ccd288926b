"""How the stand-in relay behaves: ``RelayConfig``, swappable at run time."""

from __future__ import annotations

from dataclasses import dataclass, field

from batcher.devrelay.enforce import Hints, LimitRules
from batcher.devrelay.faults import ALL_FAULTS, CHOOSABLE_FAULTS
from batcher.devrelay.windows import LimitMode


@dataclass(frozen=True)
class RelayConfig:
    """How the relay behaves; swap it at run time with ``RelayServer.set_config``."""

    latency: float = 0.0
    fault_rate: float = 0.0
    faults: tuple[str, ...] = ALL_FAULTS
    seed: int = 0
    hang_seconds: float = 30.0
    retry_after: float = 1.0
    rps_limit: int = 0  # the old per-wall-clock-second limit: ``limits`` in fixed mode, 1 s windows
    limits: LimitRules = field(default_factory=LimitRules)
    api_key: str | None = None
    balance_usd: float = 100.0  # what the billing endpoints report as the key's limit
    embedding_dim: int = 8
    task_seconds: float = 20.0  # async tasks (MJ, Suno, video): seconds from submit to the end
    task_timeout: float | None = None  # the relay fails unfinished tasks after this (None: 1 h MJ, 24 h)
    mj_rewrite: bool = True  # new-api's 22→1 and 21→1 rewrites (off: a bare midjourney-proxy)
    models: tuple[str, ...] = ()  # served and listed (GET /v1/models); empty: any model, no list
    task_price_patches: tuple[str, ...] = ()  # task models billed per call: never re-priced on success
    quota_after: int = 0  # answers served before every call gets one-api's quota error (0: never)

    def __post_init__(self) -> None:
        unknown = set(self.faults) - set(CHOOSABLE_FAULTS)
        if unknown:
            choices = ", ".join(CHOOSABLE_FAULTS)
            raise ValueError(f"unknown fault kinds {sorted(unknown)}; choose from {choices}")
        if not 0.0 <= self.fault_rate <= 1.0:
            raise ValueError(f"fault_rate must be between 0 and 1 (got {self.fault_rate})")
        if self.fault_rate > 0 and not self.faults:
            raise ValueError("fault_rate > 0 needs at least one fault kind")
        if self.task_seconds < 0 or (self.task_timeout is not None and self.task_timeout <= 0):
            raise ValueError("task_seconds must be 0 or more and task_timeout positive")
        if self.limits.window <= 0:
            raise ValueError(f"the limit window must be positive (got {self.limits.window})")

    @property
    def rules(self) -> LimitRules:
        """The limits in force: ``limits``, or ``rps_limit`` as a fixed one-second window."""
        if self.rps_limit > 0 and not self.limits.requests:
            return LimitRules(
                requests=self.rps_limit,
                tokens=self.limits.tokens,
                window=1.0,
                mode=LimitMode.FIXED,
                hints=Hints.RETRY_AFTER,
                ratelimit_headers=self.limits.ratelimit_headers,
                max_concurrent=self.limits.max_concurrent,
                overload_retry_after=self.limits.overload_retry_after,
            )
        return self.limits
