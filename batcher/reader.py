"""Reading and validating input files: a stream of valid lines and problems, never the whole file.

Two line formats are accepted:

- the **OpenAI Batch input format** ``{"custom_id", "method", "url", "body"}`` (a line is in it
  when it has ``body`` or ``url``, or ``custom_id`` with ``method``); a missing ``method`` counts
  as POST;
- **bare request bodies** ``{"model": ..., "messages": [...]}`` when an endpoint is given
  (``--endpoint``); their ``custom_id`` is ``line-<n>``.

Every invalid line yields a ``Problem`` naming the line, what is wrong and what to do; reading
goes on, so one pass reports every problem. Lines are read with a bounded ``readline``, so a huge
line never sits in memory. The only state that grows with the file is the duplicate check: a
compact set of ``hash(custom_id)`` (``batcher.idset``: 64-bit, about 14 bytes a line; at a
million lines the odds of a false "duplicate" are about 3 in 10^8), not the ids themselves.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

import orjson

from batcher.idset import HashSet
from batcher.inputfiles import FileResolver, LocalFile
from jobs.endpoints import Endpoint
from jobs.errors import Problem
from workers.endpoints import BodyError, Family, by_path, families, family_of, route_list
from workers.endpoints.taskfamily import TaskFamily

BOM = b"\xef\xbb\xbf"
DEFAULT_MAX_LINE_BYTES = 8 * 1024 * 1024
_SKIP_CHUNK = 1024 * 1024
_NAN = re.compile(r"(?<![\w\"])-?(NaN|Infinity)(?![\w\"])")
# 2**64 has 20 digits: a shorter integer always fits. The regex is only a first look, and not a
# cheap one on every line (it tries its lookbehind at each byte): a line whose digits, each mapped
# to "0" by one translate, hold no run of twenty is passed without it.
_LONG_INT = re.compile(rb"(?<![\w.])-?\d{20,}(?![\w.])")
_DIGITS_AS_ZERO = bytes(ord("0") if c in b"0123456789" else ord(" ") for c in range(256))
_TWENTY_DIGITS = b"0" * 20
INT_RANGE = (-(2**63), 2**64 - 1)  # what orjson (and most JSON stacks upstream) keep exact
MAX_DEPTH = 255  # orjson's encoder refuses deeper nesting; so would the API's
_TOO_DEEP = (
    f"the JSON is nested more than {MAX_DEPTH} levels deep; flatten it (no API request needs that depth)"
)


@dataclass(frozen=True)
class ReadOptions:
    """How to read a file: the endpoint and model for bare bodies, and the line size cap."""

    endpoint: Endpoint | None = None
    model: str | None = None
    max_line_bytes: int = DEFAULT_MAX_LINE_BYTES
    stream: bool = False  # --stream: every line of a family that can stream asks for a stream


@dataclass(frozen=True, slots=True)
class ParsedLine:
    """One valid request line."""

    line_no: int
    custom_id: str
    endpoint: Endpoint
    model: str
    body: dict[str, Any]
    body_json: bytes
    family: Family  # the endpoint's, looked up once: ingest and the estimate ask it too
    files: tuple[LocalFile, ...] = ()  # input files the line sends, to store before the line


class LineError(ValueError):
    """A line is invalid; the message says why and what to do."""


def file_sha256(path: Path) -> str:
    """The file's sha256, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(_SKIP_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


OnReject = Callable[[Problem, bytes], None]
REJECT_RAW_BYTES = 1_000_000  # how much of a rejected line a rejects file keeps


def read_requests(
    path: Path, options: ReadOptions, *, on_reject: OnReject | None = None
) -> Iterator[ParsedLine | Problem]:
    """Yield each line of the file as a ``ParsedLine`` or a ``Problem``, in order.

    ``on_reject`` gets each problem with the start of its line's bytes (at most
    ``REJECT_RAW_BYTES``), so a rejects file can be written as the file is read.
    """
    seen = HashSet()  # 14 bytes a line, not a set's 85: ten million lines in 140 MB
    lookups = FirstUse(path, options.max_line_bytes)
    kinds = RouteKinds()
    resolver = FileResolver(path.parent)
    name = str(path)
    with path.open("rb") as f:
        for line_no, raw, size in _raw_lines(f, options.max_line_bytes):
            if size is not None:
                problem = Problem(name, line_no, _too_long(size, options.max_line_bytes))
            elif not raw.strip():
                continue
            else:
                try:
                    parsed = parse_line(raw, line_no, options, files=resolver)
                    _check_unique(parsed.custom_id, seen, lookups, line_no)
                    kinds.check(parsed)
                except LineError as exc:
                    problem = Problem(name, line_no, str(exc))
                else:
                    yield parsed
                    continue
            if on_reject is not None:
                on_reject(problem, raw[:REJECT_RAW_BYTES])
            yield problem


def _raw_lines(f: BinaryIO, limit: int) -> Iterator[tuple[int, bytes, int | None]]:
    """(line number, bytes, None) per line; (line number, first bytes, size) for one over the limit."""
    line_no = 0
    while True:
        raw = f.readline(limit + 1)
        if not raw:
            return
        line_no += 1
        if line_no == 1 and raw.startswith(BOM):
            raw = raw[len(BOM) :]
        if len(raw) > limit and not raw.endswith(b"\n"):
            yield line_no, raw, len(raw) + _skip_rest(f)
            continue
        yield line_no, raw, None


def _skip_rest(f: BinaryIO) -> int:
    skipped = 0
    while True:
        chunk = f.readline(_SKIP_CHUNK)
        skipped += len(chunk)
        if not chunk or chunk.endswith(b"\n"):
            return skipped


class RouteKinds:
    """Task lines (Midjourney, Suno, video) and other lines never share a file.

    A task line is submitted, then polled for hours; the others are one call each: a job runs one
    kind or the other (``workers.taskbuild``). The file's first valid line decides its kind, and a
    line of the other kind is a problem naming both, so the file is refused before anything is
    stored (with ``--skip-invalid`` the other kind's lines go to the rejects file, ready to be
    submitted as their own file).
    """

    def __init__(self) -> None:
        self.first: tuple[int, str, bool] | None = None  # line number, route, is a task route

    def check(self, line: ParsedLine) -> None:
        task = isinstance(line.family, TaskFamily)
        if self.first is None:
            self.first = (line.line_no, line.endpoint.path, task)
            return
        first_no, first_route, first_task = self.first
        if task == first_task:
            return
        kind = "a task route (submitted, then polled)" if task else "not a task route"
        raise LineError(
            f'"url" {line.endpoint.path} is {kind}, but line {first_no} is {first_route}: a file holds '
            "task lines (Midjourney, Suno, video) or other lines, not both; submit the task lines as "
            "their own file"
        )


def _too_long(size: int, limit: int) -> str:
    return f"line is {size:,} bytes, over the limit of {limit:,}; shorten it or raise --max-line-bytes"


def _check_unique(custom_id: str, seen: HashSet, lookups: FirstUse, line_no: int) -> None:
    if not seen.add(hash(custom_id)):
        first = lookups.find(custom_id, before=line_no)
        where = f"line {first}" if first is not None else "an earlier line"
        raise LineError(
            f'custom_id "{_short(custom_id)}" is used by {where} already; custom_ids must be unique in a file'
        )


class FirstUse:
    """Finds the line that first used a repeated custom_id by reading the file again up to it.

    The duplicate check keeps only hashes (no line numbers: memory stays 14 bytes a line), so the
    earlier line is looked up when a repeat is found: a byte search of the lines before it, each
    candidate confirmed by parsing. Only the first ``MAX_LOOKUPS`` repeats of a file are looked
    up (each costs a read of the file so far); later ones say "an earlier line".
    """

    MAX_LOOKUPS = 10

    def __init__(self, path: Path, max_line_bytes: int) -> None:
        self.path, self.max_line_bytes, self.done = path, max_line_bytes, 0

    def find(self, custom_id: str, *, before: int) -> int | None:
        if self.done >= self.MAX_LOOKUPS:
            return None
        self.done += 1
        needles = {orjson.dumps(custom_id), json.dumps(custom_id).encode()}
        with self.path.open("rb") as f:
            for line_no, raw, size in _raw_lines(f, self.max_line_bytes):
                if line_no >= before:
                    return None
                if size is None and any(n in raw for n in needles) and _custom_id_of(raw) == custom_id:
                    return line_no
        return None


def _custom_id_of(raw: bytes) -> Any:
    try:
        value = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return None
    return value.get("custom_id") if isinstance(value, dict) else None


def _short(value: Any, limit: int = 60) -> str:
    text = value if isinstance(value, str) else orjson.dumps(value).decode(errors="replace")
    return text if len(text) <= limit else text[: limit - 1] + "…"


# --- one line ------------------------------------------------------------------------------------


def parse_line(
    raw: bytes, line_no: int, options: ReadOptions, *, files: FileResolver | None = None
) -> ParsedLine:
    """Validate one line; raise ``LineError`` with what is wrong and what to do.

    Paths in file fields are resolved by ``files`` (relative to the input file's folder); without
    it, relative to the current folder.
    """
    data = _decode(raw)
    if _is_batch_format(data):
        custom_id = _custom_id(data)
        _check_method(data)
        endpoint = _endpoint(data.get("url"))
        body = data.get("body")
        if not isinstance(body, dict):
            raise LineError(f'"body" must be a JSON object with the request (got {_type(body)})')
    elif options.endpoint is not None:
        custom_id, endpoint, body = f"line-{line_no}", options.endpoint, data
    else:
        raise LineError(
            "not an OpenAI Batch line (no custom_id/url/body); give the request as "
            '{"custom_id", "method", "url", "body"}, or pass --endpoint (e.g. --endpoint '
            "/v1/chat/completions) to submit bare request bodies"
        )
    family = family_of(endpoint)
    model = family.line_model(endpoint.path, body) or _model(body, options.model)
    _check_body(endpoint, family, body, stream=options.stream)
    local = _resolve_files(family, body, files) if family.file_fields else ()
    try:
        body_json = orjson.dumps(body)
    except orjson.JSONEncodeError:
        raise LineError(_TOO_DEEP) from None
    return ParsedLine(line_no, custom_id, endpoint, model, body, body_json, family, local)


def _resolve_files(family: Family, body: dict[str, Any], files: FileResolver | None) -> tuple[LocalFile, ...]:
    files = files or FileResolver(Path.cwd())
    try:
        return tuple(files.resolve(family, body))
    except BodyError as exc:
        raise LineError(str(exc)) from None


def _decode(raw: bytes) -> dict[str, Any]:
    try:
        data = orjson.loads(raw)  # refuses invalid UTF-8 too: the bytes are decoded only then
    except orjson.JSONDecodeError as exc:
        _check_utf8(raw)
        if _NAN.search(raw.decode("utf-8")):
            raise LineError("NaN and Infinity are not valid JSON; write null or a number") from None
        if "depth limit" in str(exc):
            raise LineError(_TOO_DEEP) from None
        raise LineError(f"invalid JSON ({exc}); each line must be one JSON object") from None
    if not isinstance(data, dict):
        raise LineError(f"each line must be a JSON object (got {_type(data)})")
    if _TWENTY_DIGITS in raw.translate(_DIGITS_AS_ZERO) and _LONG_INT.search(raw):
        _check_integers(raw)
    return data


def _check_utf8(raw: bytes) -> None:
    try:
        raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise LineError(
            f"invalid UTF-8 at byte {exc.start + 1} of the line; save the file as UTF-8"
        ) from None


def _check_integers(raw: bytes) -> None:
    """Refuse an integer beyond 64 bits: orjson would read it as a float and send it rounded."""

    def exact(text: str) -> int:
        value = int(text)
        if not INT_RANGE[0] <= value <= INT_RANGE[1]:
            raise LineError(
                f"the integer {_short(text, 30)} does not fit in 64 bits and would be sent rounded; "
                "write it as a string or use a smaller number"
            )
        return value

    try:
        json.loads(raw, parse_int=exact)
    except RecursionError:
        raise LineError(_TOO_DEEP) from None


def _type(value: Any) -> str:
    names = {dict: "an object", list: "an array", str: "a string", bool: "a boolean", type(None): "null"}
    return names.get(type(value), "a number")


def _is_batch_format(data: dict[str, Any]) -> bool:
    return "body" in data or "url" in data or ("custom_id" in data and "method" in data)


def _custom_id(data: dict[str, Any]) -> str:
    if "custom_id" not in data:
        raise LineError('"custom_id" is missing; give every line a unique string custom_id')
    value = data["custom_id"]
    if not isinstance(value, str):
        raise LineError(f'"custom_id" must be a string (got {_type(value)} {_short(value)})')
    if not value.strip():
        raise LineError('"custom_id" is empty; give every line a unique, non-empty custom_id')
    return value


def _check_method(data: dict[str, Any]) -> None:
    method = data.get("method", "POST")
    if method != "POST":
        raise LineError(f'"method" must be "POST" (got {_short(method)}); every endpoint here takes POST')


def _endpoint(url: Any) -> Endpoint:
    if not isinstance(url, str):
        raise LineError(f'"url" must be one of {route_list()} (got {_type(url)})')
    if by_path(url) is not None:
        return Endpoint(url)
    where = "the host comes from OPENAI_BASE_URL, never from the file"
    if "://" in url or url.startswith("//"):
        raise LineError(f'"url" must be a path, one of {route_list()} (got "{_short(url)}"); {where}')
    if ".." in url or "?" in url or "#" in url:
        raise LineError(
            f'"url" must be exactly one of {route_list()}, without "..", a query or a fragment '
            f'(got "{_short(url)}"); {where}'
        )
    raise LineError(f'"url" must be one of {route_list()} (got "{_short(url)}"); {where}')


def _model(body: dict[str, Any], default: str | None) -> str:
    if "model" not in body and default:
        body["model"] = default
    model = body.get("model")
    if model is None:
        raise LineError('"model" is missing from the body; add it, or pass --model for lines without one')
    if not isinstance(model, str) or not model.strip():
        raise LineError(f'"model" must be a non-empty string (got {_type(model)} {_short(model)})')
    return model


# --- endpoint shapes -----------------------------------------------------------------------------


def _check_body(endpoint: Endpoint, family: Family, body: dict[str, Any], *, stream: bool) -> None:
    if stream and family.can_stream:
        body["stream"] = True
    if body.get("stream") is True and not family.can_stream:
        can = ", ".join(r for f in families() if f.can_stream for r in f.route_names())
        raise LineError(f'"stream": true is not supported on {endpoint}; remove it (streamed routes: {can})')
    try:
        family.check(body)
    except BodyError as exc:
        raise LineError(str(exc)) from None
    family.prepare(body)
