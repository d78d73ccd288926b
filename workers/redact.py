"""Keys never leak: scrub secrets from text, headers and log records.

Anything batcher stores, logs, exports or prints about an answer passes through ``redact``
first: relays have been seen echoing the caller's key inside error messages.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable, Mapping

_SK = re.compile(r"sk-[A-Za-z0-9_\-]{8,}")
_BEARER = re.compile(r"(Bearer\s+)[^\s\"',;]+", re.IGNORECASE)
SENSITIVE_HEADERS = frozenset(
    {"authorization", "proxy-authorization", "api-key", "x-api-key", "x-goog-api-key", "cookie"}
)


def redact(text: str, secrets: Iterable[str] = ()) -> str:
    """The text with the given secrets, ``sk-…`` keys and bearer tokens masked."""
    for secret in secrets:
        if secret and len(secret) >= 4:
            text = text.replace(secret, "***")
    text = _SK.sub("sk-***", text)
    return _BEARER.sub(r"\1***", text)


def redact_headers(headers: Mapping[str, str]) -> dict[str, str]:
    """A copy of the headers with credential values masked."""
    return {k: ("***" if k.lower() in SENSITIVE_HEADERS else v) for k, v in headers.items()}


class RedactingFilter(logging.Filter):
    """Rewrites each record's message with secrets masked (the arguments are merged first)."""

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        super().__init__()
        self.secrets = [s for s in secrets if s]

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        cleaned = redact(message, self.secrets)
        if cleaned != message or record.args:
            record.msg, record.args = cleaned, None
        return True


def install_log_redaction(secrets: Iterable[str]) -> RedactingFilter:
    """Scrub every record that reaches the root logger's handlers.

    The filter goes on the handlers, not the logger: records of child loggers propagate to the
    root's handlers without passing the root logger's own filters. A handler added later gets
    it too only if this is called again.
    """
    redacting = RedactingFilter(secrets)
    root = logging.getLogger()
    if not root.handlers:
        logging.basicConfig(level=logging.WARNING)
    for handler in root.handlers:
        present = [f for f in handler.filters if isinstance(f, RedactingFilter)]
        if present:
            present[0].secrets.extend(s for s in redacting.secrets if s not in present[0].secrets)
        else:
            handler.addFilter(redacting)
    return redacting
