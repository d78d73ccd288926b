"""Keys never leak: scrub secrets from text, answer bodies, headers and log records.

Anything batcher stores, logs, exports or prints about an answer passes through ``redact``
first: relays have been seen echoing the caller's key inside error messages, error codes,
``x-request-id`` headers and answer bodies, whole or in a masked form (``sk-abcd****wxyz``).

The configured key is scrubbed whatever its shape (it need not start with ``sk-``), with its
JSON-escaped spelling and its masked forms: a prefix of the key, a run of ``*`` (or ``…``), and
a suffix of it. Any other ``sk-…`` string and bearer token is scrubbed from error text too, but
not from successful answer bodies, where such text may be the model's own words.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable, Mapping

import orjson

_SK = re.compile(r"sk-[A-Za-z0-9_\-]{8,}")
_BEARER = re.compile(r"(Bearer\s+)[^\s\"',;]+", re.IGNORECASE)
SENSITIVE_HEADERS = frozenset(
    {"authorization", "proxy-authorization", "api-key", "x-api-key", "x-goog-api-key", "cookie"}
)


MIN_SECRET = 4  # shorter "secrets" would mask ordinary words
_MASK_RUN = r"(?:\*{2,}|…|\.{3})"


def _spellings(secret: str) -> list[str]:
    """The secret as it may appear in text: itself and JSON-escaped."""
    escaped = orjson.dumps(secret).decode()[1:-1]
    return [secret] if escaped == secret else [secret, escaped]


def _masked_form(secret: str) -> re.Pattern[str] | None:
    """``sk-abcd****wxyz``: a prefix of the key, a mask, a suffix of it (what dashboards show)."""
    if len(secret) < 8:
        return None
    head, tail = re.escape(secret[:4]), re.escape(secret[-2:])
    return re.compile(rf"{head}[\w\-]{{0,40}}{_MASK_RUN}[\w\-]{{0,40}}?{tail}")


class Redactor:
    """Scrubs a fixed set of secrets; built once per run, so its patterns compile once."""

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        keys = [s for s in secrets if s and len(s) >= MIN_SECRET]
        self._plain = [spelling for s in keys for spelling in _spellings(s)]
        self._masked = [p for p in (_masked_form(s) for s in keys) if p is not None]
        self._plain_bytes = [s.encode() for s in self._plain]
        self._masked_bytes = [re.compile(p.pattern.encode()) for p in self._masked]

    def secrets_only(self, text: str) -> str:
        """The text with the configured secrets (and their masked forms) replaced by ``***``."""
        for secret in self._plain:
            if secret in text:
                text = text.replace(secret, "***")
        for pattern in self._masked:
            text = pattern.sub("***", text)
        return text

    def body(self, content: bytes) -> bytes:
        """An answer body with the configured secrets scrubbed (a plain byte search when absent)."""
        for secret in self._plain_bytes:
            if secret in content:
                content = content.replace(secret, b"***")
        for pattern in self._masked_bytes:
            content = pattern.sub(b"***", content)
        return content

    def __call__(self, text: str) -> str:
        """Error text scrubbed of the secrets, any ``sk-…`` key and bearer tokens."""
        text = self.secrets_only(text)
        text = _SK.sub("sk-***", text)
        return _BEARER.sub(r"\1***", text)

    def optional(self, text: str | None) -> str | None:
        """``__call__`` for a value that may be missing."""
        return None if text is None else self(text)


def redact(text: str, secrets: Iterable[str] = ()) -> str:
    """The text with the given secrets (and their masked forms), ``sk-…`` keys and bearer tokens masked."""
    return Redactor(secrets)(text)


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


# Every log line batcher sets up: time, level and process first (a worker's log is read by time).
LOG_FORMAT = "[%(asctime)s %(levelname)s/%(processName)s] %(message)s"


def install_log_redaction(secrets: Iterable[str]) -> RedactingFilter:
    """Scrub every record that reaches the root logger's handlers.

    The filter goes on the handlers, not the logger: records of child loggers propagate to the
    root's handlers without passing the root logger's own filters. A handler added later gets
    it too only if this is called again.
    """
    redacting = RedactingFilter(secrets)
    root = logging.getLogger()
    if not root.handlers:
        logging.basicConfig(level=logging.WARNING, format=LOG_FORMAT)
    for handler in root.handlers:
        present = [f for f in handler.filters if isinstance(f, RedactingFilter)]
        if present:
            present[0].secrets.extend(s for s in redacting.secrets if s not in present[0].secrets)
        else:
            handler.addFilter(redacting)
    return redacting
