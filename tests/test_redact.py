"""Keys never leak: text, headers and log records are scrubbed."""

from __future__ import annotations

import io
import logging

import orjson
import pytest

from workers.redact import RedactingFilter, Redactor, install_log_redaction, redact, redact_headers

KEY = "sk-live-0123456789abcdefABCDEF"


@pytest.mark.parametrize(
    ("text", "secrets", "expected"),
    [
        (f"invalid key {KEY}", (), "invalid key sk-***"),
        ("Authorization: Bearer abc.def-ghi", (), "Authorization: Bearer ***"),
        ("token my-own-secret-value used", ("my-own-secret-value",), "token *** used"),
        ("short sk-abc stays", (), "short sk-abc stays"),
        ("无效的令牌 sk-AAAAAAAAAAAA 请检查", (), "无效的令牌 sk-*** 请检查"),
        ("nothing here", ("",), "nothing here"),
    ],
)
def test_redact_table(text: str, secrets: tuple[str, ...], expected: str) -> None:
    assert redact(text, secrets) == expected


def test_redact_headers_masks_credentials_case_insensitively() -> None:
    headers = {
        "Authorization": f"Bearer {KEY}",
        "X-Api-Key": KEY,
        "api-key": KEY,
        "Content-Type": "application/json",
    }
    assert redact_headers(headers) == {
        "Authorization": "***",
        "X-Api-Key": "***",
        "api-key": "***",
        "Content-Type": "application/json",
    }


def test_log_records_of_child_loggers_are_scrubbed() -> None:
    stream = io.StringIO()
    root = logging.getLogger()
    handler = logging.StreamHandler(stream)
    root.addHandler(handler)
    try:
        install_log_redaction(["my-configured-key-123"])
        logging.getLogger("batcher.some.child").warning(
            "calling with %s and %s", KEY, "my-configured-key-123"
        )
    finally:
        root.removeHandler(handler)
    output = stream.getvalue()
    assert "calling with sk-*** and ***" in output
    assert KEY not in output
    assert "my-configured-key-123" not in output


def test_filter_keeps_plain_records_unchanged() -> None:
    record = logging.LogRecord("x", logging.INFO, __file__, 1, "hello %s", ("world",), None)
    assert RedactingFilter([]).filter(record)
    assert record.getMessage() == "hello world"


CANARY = "canary-1234567890abcdef"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (f"key {CANARY} refused", "key *** refused"),
        ("key cana****cdef refused", "key *** refused"),
        ("key canary-12…ef refused", "key *** refused"),
        ('{"code":"canary-1234567890abcdef"}', '{"code":"***"}'),
        ("cana is a word, so is cdef", "cana is a word, so is cdef"),
    ],
)
def test_configured_key_of_any_shape_and_its_masked_forms(text: str, expected: str) -> None:
    assert Redactor([CANARY])(text) == expected


def test_json_escaped_key_is_scrubbed_from_bodies() -> None:
    key = 'odd"key\\value-123'
    body = orjson.dumps({"echo": key})
    assert key.encode() not in body
    assert Redactor([key]).body(body) == b'{"echo":"***"}'


def test_success_bodies_keep_other_sk_text() -> None:
    redactor = Redactor([CANARY])
    assert redactor.secrets_only("an example: sk-0123456789abcdef") == "an example: sk-0123456789abcdef"
    assert redactor.body(b"plain answer") == b"plain answer"
