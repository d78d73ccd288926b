"""A loopback stand-in relay for ``batcher dev-relay`` and the tests: deterministic answers, faults.

One module per concern: ``answers`` (the answers, pure functions of the body), ``faults`` (fault
kinds, markers, canned errors), ``config``, ``stats`` (the counters), ``relay`` (routes and
handlers) and ``server`` (ways to run it). The names a user of the relay needs are here.
"""

from __future__ import annotations

from batcher.devrelay.config import RelayConfig
from batcher.devrelay.relay import Relay
from batcher.devrelay.server import RelayServer, RunningRelay, run_forever, serve
from batcher.devrelay.stats import RelayStats

__all__ = ["Relay", "RelayConfig", "RelayServer", "RelayStats", "RunningRelay", "run_forever", "serve"]
