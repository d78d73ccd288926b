"""The streaming reader: every hostile line reported with its number and what to do."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import orjson
import pytest

from batcher.reader import FirstUse, ParsedLine, ReadOptions, file_sha256, read_requests
from jobs.errors import Problem
from workers.endpoints import family_of
from workers.endpoints.chat import CHAT
from workers.endpoints.completions import COMPLETIONS
from workers.endpoints.embeddings import EMBEDDINGS
from workers.endpoints.speech import SPEECH


def line(custom_id: Any = "a", url: Any = "/v1/embeddings", body: Any = None, **extra: Any) -> str:
    data = {
        "custom_id": custom_id,
        "method": "POST",
        "url": url,
        "body": body or {"model": "m", "input": "x"},
    }
    return json.dumps(data | extra, ensure_ascii=False)


def read(
    tmp_path: Path, content: bytes | str, options: ReadOptions | None = None
) -> list[ParsedLine | Problem]:
    path = tmp_path / "in.jsonl"
    path.write_bytes(content.encode() if isinstance(content, str) else content)
    return list(read_requests(path, options or ReadOptions()))


def chat(messages: Any) -> str:
    return line(url="/v1/chat/completions", body={"model": "m", "messages": messages})


HOSTILE = [
    ("{not json", "invalid JSON"),
    ('{"custom_id": "a", "url": "/v1/embeddings", "body": {"model": "m", "input": NaN}}', "NaN and Infinity"),
    (
        '{"custom_id": "a", "url": "/v1/embeddings", "body": {"model": "m", "input": [-Infinity]}}',
        "NaN and Infinity",
    ),
    ("[1, 2]", "must be a JSON object"),
    (line(custom_id=None).replace('"custom_id": null, ', ""), '"custom_id" is missing'),
    (line(custom_id=7), '"custom_id" must be a string'),
    (line(custom_id="  "), '"custom_id" is empty'),
    (line(method="GET"), '"method" must be "POST"'),
    (line(url="/v1/chat"), '"url" must be one of'),
    (line(url="https://evil.example.com/v1/embeddings"), "never from the file"),
    (line(url="//evil.example.com/v1/embeddings"), "must be a path"),
    (line(url="/v1/../admin"), 'without ".."'),
    (line(url="/v1/embeddings?x=1"), "a query"),
    (line(body=[1]), '"body" must be a JSON object'),
    ('{"custom_id": "a", "url": "/v1/embeddings"}', '"body" must be a JSON object'),
    (line(body={"input": "x"}), '"model" is missing'),
    (line(body={"model": "", "input": "x"}), '"model" must be a non-empty string'),
    (line(body={"model": "m", "input": "x", "stream": True}), '"stream": true'),
    (chat([]), 'non-empty list of {"role", "content"}'),
    (chat([{"content": "hi"}]), 'string "role"'),
    (chat([{"role": "user"}]), 'needs "content"'),
    (chat([{"role": "user", "content": None}]), '"content": null'),
    (chat(["hi"]), "must be an object"),
    (line(url="/v1/completions", body={"model": "m"}), 'need "prompt"'),
    (line(body={"model": "m", "input": ""}), 'need "input"'),
    (line(body={"model": "m", "input": []}), 'need "input"'),
    (line(body={"model": "m", "input": {"a": 1}}), 'need "input"'),
    (line(url="/v1/audio/speech", body={"model": "tts", "voice": "alloy"}), 'needs "input"'),
    (line(url="/v1/audio/speech", body={"model": "tts", "input": "hi"}), 'needs "voice"'),
    ('{"model": "m", "input": "bare without endpoint"}', "--endpoint"),
]


@pytest.mark.parametrize(("text", "message"), HOSTILE)
def test_hostile_line_table(tmp_path: Path, text: str, message: str) -> None:
    [problem] = read(tmp_path, text + "\n")
    assert isinstance(problem, Problem)
    assert problem.line == 1
    assert message in problem.message


def test_every_bad_line_of_a_hostile_file_is_reported_in_order(tmp_path: Path) -> None:
    good = line(custom_id="good")
    lines = [good] + [text for text, _ in HOSTILE] + [line(custom_id="good")]  # the last repeats an id
    items = read(tmp_path, "\n".join(lines) + "\n")
    problems = [i for i in items if isinstance(i, Problem)]
    assert [p.line for p in problems] == list(range(2, len(lines) + 1))
    assert 'custom_id "good" is used by line 1 already' in problems[-1].message
    assert all(str(p).startswith(f"{tmp_path / 'in.jsonl'}:{p.line}: ") for p in problems)


def test_invalid_utf8_names_the_byte(tmp_path: Path) -> None:
    [problem] = read(tmp_path, b'{"custom_id": "a\xff"}\n')
    assert isinstance(problem, Problem)
    assert "invalid UTF-8 at byte 17" in problem.message  # 1-based: the 17th byte is \xff


@pytest.mark.parametrize(
    "raw",
    [
        b'{"custom_id": "a", "url": "/v1/embeddings", "body": {"model": "m", "input": "\xed\xa0\x80"}}',
        b'{"custom_id": "a\xc0\xaf", "url": "/v1/embeddings", "body": {"model": "m", "input": "x"}}',
        b'{"custom_id": "a\xff", oops',
    ],
    ids=["surrogate", "overlong", "bad-json-too"],
)
def test_invalid_utf8_in_otherwise_valid_json_names_the_utf8(tmp_path: Path, raw: bytes) -> None:
    """The bytes are decoded only when the JSON parser refuses them: the UTF-8 message still wins."""
    [problem] = read(tmp_path, raw + b"\n")
    assert isinstance(problem, Problem)
    assert "invalid UTF-8 at byte" in problem.message


def test_a_parsed_line_carries_its_endpoint_family(tmp_path: Path) -> None:
    [parsed] = read(tmp_path, line() + "\n")
    assert isinstance(parsed, ParsedLine)
    assert parsed.family is family_of(EMBEDDINGS)


def test_bom_and_blank_lines_are_tolerated(tmp_path: Path) -> None:
    items = read(tmp_path, "\ufeff" + line() + "\n\n   \n" + line(custom_id="b") + "\n")
    assert [(i.line_no, i.custom_id) for i in items if isinstance(i, ParsedLine)] == [(1, "a"), (4, "b")]


def test_line_over_the_cap_is_skipped_without_reading_it_whole(tmp_path: Path) -> None:
    huge = line(body={"model": "m", "input": "x" * 5000})
    items = read(tmp_path, huge + "\n" + line(custom_id="ok") + "\n", ReadOptions(max_line_bytes=1000))
    assert isinstance(items[0], Problem)
    assert "--max-line-bytes" in items[0].message
    assert isinstance(items[1], ParsedLine) and items[1].line_no == 2


def test_openai_batch_lines_for_all_four_endpoints(tmp_path: Path) -> None:
    rows = [
        line("c", "/v1/chat/completions", {"model": "m", "messages": [{"role": "user", "content": "hi"}]}),
        line("p", "/v1/completions", {"model": "m", "prompt": [[1, 2], [3]]}),
        line("e", "/v1/embeddings", {"model": "m", "input": ["a", "b"]}),
        line("s", "/v1/audio/speech", {"model": "tts", "input": "hi", "voice": "alloy"}),
        json.dumps({"custom_id": "nomethod", "url": "/v1/embeddings", "body": {"model": "m", "input": "x"}}),
    ]
    items = read(tmp_path, "\n".join(rows))
    assert all(isinstance(i, ParsedLine) for i in items)
    parsed = [i for i in items if isinstance(i, ParsedLine)]
    assert [i.endpoint for i in parsed] == [
        CHAT,
        COMPLETIONS,
        EMBEDDINGS,
        SPEECH,
        EMBEDDINGS,
    ]
    assert json.loads(parsed[0].body_json) == parsed[0].body


def test_bare_bodies_with_endpoint_and_default_model(tmp_path: Path) -> None:
    content = '{"input": "a"}\n{"model": "other", "input": "b"}\n'
    items = read(tmp_path, content, ReadOptions(endpoint=EMBEDDINGS, model="default-model"))
    assert [(i.custom_id, i.model) for i in items if isinstance(i, ParsedLine)] == [
        ("line-1", "default-model"),
        ("line-2", "other"),
    ]
    assert isinstance(items[0], ParsedLine) and items[0].body["model"] == "default-model"


def test_reader_is_lazy(tmp_path: Path) -> None:
    path = tmp_path / "in.jsonl"
    path.write_text(line() + "\n" + "{broken\n" * 1000)
    first = next(read_requests(path, ReadOptions()))
    assert isinstance(first, ParsedLine)


def test_file_sha256_matches_hashlib(tmp_path: Path) -> None:
    import hashlib

    path = tmp_path / "x.jsonl"
    path.write_bytes(b"abc" * 1_000_000)
    assert file_sha256(path) == hashlib.sha256(b"abc" * 1_000_000).hexdigest()


def test_deep_nesting_is_a_line_error(tmp_path: Path) -> None:
    """orjson refuses to encode 255+ levels with a TypeError; it must be a problem of its line."""
    deep = '{"custom_id": "d", "url": "/v1/embeddings", "body": {"model": "m", "input": "x", "extra": '
    lines = [
        '{"custom_id": "ok", "url": "/v1/embeddings", "body": {"model": "m", "input": "x"}}',
        deep + "[" * 300 + "]" * 300 + "}}",
        deep + "[" * 1100 + "]" * 1100 + "}}",
    ]
    path = tmp_path / "deep.jsonl"
    path.write_text("\n".join(lines) + "\n")
    items = list(read_requests(path, ReadOptions()))
    assert [type(i).__name__ for i in items] == ["ParsedLine", "Problem", "Problem"]
    assert [(p.line, "nested more than 255 levels" in p.message) for p in items[1:]] == [(2, True), (3, True)]


@pytest.mark.parametrize(
    ("value", "ok"),
    [
        ("123456789012345678901234567890", False),
        ("-123456789012345678901234567890", False),
        ("18446744073709551616", False),
        ("18446744073709551615", True),
        ("-9223372036854775808", True),
        ('"123456789012345678901234567890"', True),
    ],
)
def test_integers_beyond_64_bits_are_refused(tmp_path: Path, value: str, ok: bool) -> None:
    path = tmp_path / "big.jsonl"
    path.write_text(
        '{"custom_id": "a", "url": "/v1/chat/completions", "body": {"model": "m", '
        f'"messages": [{{"role": "user", "content": "x"}}], "seed": {value}}}}}\n'
    )
    [item] = list(read_requests(path, ReadOptions()))
    if ok:
        assert isinstance(item, ParsedLine)
        assert orjson.loads(item.body_json)["seed"] == orjson.loads(value)
    else:
        assert isinstance(item, Problem)
        assert item.line == 1 and "does not fit in 64 bits" in item.message


def test_a_repeated_custom_id_names_the_line_that_used_it_first(tmp_path: Path) -> None:
    rows = [line(custom_id=c) for c in ("a", "é-1", "b", "é-1", "a")]
    problems = [i for i in read(tmp_path, "\n".join(rows) + "\n") if isinstance(i, Problem)]
    assert [(p.line, p.message.split(";")[0]) for p in problems] == [
        (4, 'custom_id "é-1" is used by line 2 already'),
        (5, 'custom_id "a" is used by line 1 already'),
    ]


def test_repeats_past_the_lookup_cap_say_an_earlier_line(tmp_path: Path) -> None:
    """Each lookup reads the file again, so only the first few repeats are looked up."""
    n = FirstUse.MAX_LOOKUPS + 2
    rows = [line(custom_id=f"id{i}") for i in range(n)] * 2
    problems = [i for i in read(tmp_path, "\n".join(rows) + "\n") if isinstance(i, Problem)]
    assert len(problems) == n
    assert [p.message.split(" already")[0].rsplit(" ", 2)[-2:] for p in problems[:2]] == [
        ["line", "1"],
        ["line", "2"],
    ]
    assert all("used by an earlier line already" in p.message for p in problems[-2:])
