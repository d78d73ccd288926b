"""What an endpoint family is: the one place that knows one kind of API call.

A family declares the routes it serves (``paths``, or ``accepts`` for a pattern), how a line's
body is validated, how its tokens (or characters) are estimated before the call, how the request
is built, how an OK answer becomes the body and usage the store keeps, and what the exports show
of it. The reader, the estimator, the
budget, the executor and the exporters ask the family (``workers.endpoints.family_of``) and never
compare endpoint paths themselves.

The defaults here fit a JSON API billed in tokens; a family overrides what differs.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

import orjson

from jobs.records import Usage
from jobs.vectors import Vectors
from workers.endpoints.filefields import FileRule
from workers.endpoints.sse import StreamCut, is_stream
from workers.tokens import DEFAULT_COMPLETION, estimate_text_tokens

JSON = "application/json"

Body = Mapping[str, Any]


class BodyError(ValueError):
    """Raised when a request body does not fit its endpoint; the message says what to fix."""


@dataclass(frozen=True, slots=True)
class ParsedAnswer:
    """An OK answer, ready to store: the body as JSON text and what the call used.

    An embedding answer's vectors travel apart, as float32 (``jobs.vectors``), and its parsed
    ``body`` too, so a packed answer is split without parsing it again.
    """

    body_json: str
    usage: Usage
    vectors: Vectors | None = None
    body: dict[str, Any] | None = None


@dataclass(frozen=True, slots=True)
class RequestContent:
    """The bytes a call sends, their content type, and the headers the family's route needs.

    ``headers`` are plain headers (Claude's ``anthropic-version``; settings may give another
    value, ``ClientConfig.header_values``). ``key_headers`` name the headers that carry the API key
    besides ``Authorization`` (``x-api-key``, ``x-goog-api-key``): the client fills them in, so a
    family never holds the key, and it goes only to the configured host like the Bearer header.
    """

    content: bytes
    content_type: str = JSON
    headers: tuple[tuple[str, str], ...] = ()
    key_headers: tuple[str, ...] = ()


class Family:
    """One endpoint family; see the module docstring. Subclasses set ``paths`` and ``name``.

    The registry (``workers.endpoints.registry``) finds every ``Family`` subclass defined in a
    module of this package: a new family is one module and nothing else.
    """

    paths: ClassVar[tuple[str, ...]] = ()  # the exact routes served, as a line's "url" names them
    name: ClassVar[str]  # short: queue names, tables, messages
    binary_answer: ClassVar[bool] = False  # the answer is a file (audio), not JSON
    can_stream: ClassVar[bool] = False  # lines may ask for a streamed answer ("stream": true)
    billed_in: ClassVar[str] = "tokens"  # the unit reports show the family's usage in
    packable: ClassVar[bool] = False  # several lines may share one call (``workers.packing``)
    # Fields that name a file to upload: the call is multipart (``workers.endpoints.filefields``).
    file_fields: ClassVar[Mapping[str, FileRule]] = {}

    # --- a line ---------------------------------------------------------------------------------

    def accepts(self, path: str) -> bool:
        """Whether this family serves the route ``path`` (a family of patterned routes overrides)."""
        return path in self.paths

    def route_names(self) -> tuple[str, ...]:
        """The routes as messages list them (a patterned family shows its pattern)."""
        return self.paths

    def check(self, body: Body) -> None:
        """Raise ``BodyError`` when the body is not a request this endpoint takes."""

    def prepare(self, body: dict[str, Any]) -> None:
        """Complete a valid body before it is stored (a streamed OpenAI call asks for its usage)."""

    def streamed(self, body: Body) -> bool:
        """Whether a call of this body answers with an event stream (``workers.endpoints.sse``)."""
        return self.can_stream and body.get("stream") is True

    def path_model(self, path: str) -> str | None:
        """The model a route names itself (Gemini's ``/v1beta/models/{model}:...``), else None."""
        return None

    def line_model(self, path: str, body: Body) -> str | None:
        """The model a line is counted and priced by when not its body's ``model`` (else None)."""
        return self.path_model(path)

    def price_key(self, model: str, body: Body) -> str | None:
        """The price table's name for this line when its cost is not its model's alone, else None."""
        return None

    # --- before the call --------------------------------------------------------------------------

    def prompt_tokens(self, body: Body) -> int:
        """The estimated prompt tokens of a request (``workers.tokens``' rule)."""
        return 0

    def completion_tokens(self, body: Body, *, default: int | None = DEFAULT_COMPLETION) -> int | None:
        """The completion tokens to expect; None when the body sets no limit and ``default`` is None."""
        return 0

    def expected_usage(self, body: Body, *, default: int | None = DEFAULT_COMPLETION) -> Usage:
        """What one call of this body is expected to use: what the budget and the estimate price."""
        return Usage(
            prompt_tokens=self.prompt_tokens(body),
            completion_tokens=self.completion_tokens(body, default=default) or 0,
        )

    def reservation_tokens(self, body: Body) -> int:
        """What a TPM limiter reserves before the call: prompt estimate + expected completion."""
        return self.prompt_tokens(body) + (self.completion_tokens(body) or 0)

    def request(self, content: bytes) -> RequestContent:
        """The request to send for a body (JSON by default; a file upload would be multipart)."""
        return RequestContent(content)

    def repeatable(self, body: Body) -> bool | None:
        """Whether the same request gets the same answer, for the response cache (``workers.cache``).

        True: cached by default; False: a sampled request, cached only with ``--cache-all``;
        None: never cached. By default the OpenAI sampling rule (``fixed_sampling``).
        """
        return fixed_sampling(body)

    # --- the answer -------------------------------------------------------------------------------

    def answer_body(self, request: Body, content: bytes) -> dict[str, Any]:
        """An OK answer as JSON: a streamed one assembled from its events (``StreamCut`` if cut)."""
        if self.streamed(request) and is_stream(content):
            return self.assemble(content)
        body: dict[str, Any] = orjson.loads(content)
        return body

    def assemble(self, content: bytes) -> dict[str, Any]:
        """The answer a non-streamed call gives, from a streamed answer's events."""
        raise StreamCut(f"{self.name} answers are not streamed")

    def parse(self, request: Body, content: bytes) -> ParsedAnswer:
        """An OK JSON answer as the store keeps it; the usage is estimated when the answer has none."""
        body = self.answer_body(request, content)
        usage = answered_usage(body) or self.estimated_usage(request, body)
        return ParsedAnswer(orjson.dumps(body).decode(), usage)

    def text_answer(self, request: Body) -> bool:
        """Whether the OK answer to this request is plain text, not JSON (a transcript as SRT)."""
        return False

    def file_format(self, request: Body) -> str:
        """The file extension of an answer that is a file (``binary_answer`` families)."""
        raise NotImplementedError(f"{self.name} answers are JSON, not files")

    def file_usage(self, request: Body) -> Usage:
        """What a call whose answer is a file used (``binary_answer`` families)."""
        raise NotImplementedError(f"{self.name} answers are JSON, not files")

    def estimated_usage(self, request: Body, answer: Body) -> Usage:
        """The usage of an answer that reported none: the prompt estimate and the answer's text."""
        prompt = self.prompt_tokens(request)
        completion = estimate_text_tokens(self.answer_text(answer) or "")
        return Usage(prompt, completion, prompt + completion, estimated=True)

    # --- exports ----------------------------------------------------------------------------------

    def answer_text(self, answer: Body) -> str | None:
        """The text an export shows for a stored answer (the first choice's), or None."""
        return None

    def vectors(self, answer: Body) -> list[list[float]]:
        """The embedding vectors of a stored answer (none for families that return text)."""
        return []


def fixed_sampling(options: Body) -> bool:
    """``temperature`` 0, or no ``temperature`` and a ``seed``: a request asking for one answer.

    Without either the API's default temperature (1) draws a fresh sample each call.
    """
    if "temperature" in options:
        t = options["temperature"]
        return isinstance(t, int | float) and not isinstance(t, bool) and t == 0
    return options.get("seed") is not None


def reported_usage(answer: Body) -> dict[str, Any] | None:
    """The answer's ``usage`` when it reports some; None when missing, malformed or all zeros."""
    usage = answer.get("usage")
    if not isinstance(usage, dict) or not isinstance(usage.get("prompt_tokens"), int):
        return None
    counts = (usage.get(k) for k in ("prompt_tokens", "completion_tokens", "total_tokens"))
    if not any(isinstance(n, int) and n > 0 for n in counts):
        return None
    return usage


def answered_usage(answer: Body) -> Usage | None:
    """The usage an answer reports, or None when it has none (relays drop it, or send zeros)."""
    usage = reported_usage(answer)
    if usage is None:
        return None
    prompt = int(usage["prompt_tokens"])
    completion = int(usage.get("completion_tokens") or 0)
    return Usage(
        prompt,
        completion,
        int(usage.get("total_tokens") or prompt + completion),
        cached_tokens=_detail(usage, "prompt_tokens_details", "cached_tokens", "prompt_cache_hit_tokens"),
        reasoning_tokens=_detail(usage, "completion_tokens_details", "reasoning_tokens"),
    )


def _detail(usage: Body, group: str, key: str, flat: str | None = None) -> int:
    """A nested usage detail (``prompt_tokens_details.cached_tokens``), or a flat alias (DeepSeek)."""
    details = usage.get(group)
    value = details.get(key) if isinstance(details, dict) else None
    if value is None and flat is not None:
        value = usage.get(flat)
    return int(value) if isinstance(value, int) else 0


def positive_int(value: Any) -> int | None:
    """A count given in a body: a positive int, never a bool (``True`` is not 1 choice)."""
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else None


def limit_times_choices(body: Body, choices: int, *, default: int | None) -> int | None:
    """``max_completion_tokens`` / ``max_tokens`` (else ``default``) × the answers asked for."""
    limit = positive_int(body.get("max_completion_tokens")) or positive_int(body.get("max_tokens")) or default
    return None if limit is None else limit * choices


def type_name(value: Any) -> str:
    """How a message names a JSON value's type."""
    names = {dict: "an object", list: "an array", str: "a string", bool: "a boolean", type(None): "null"}
    return names.get(type(value), "a number")


def first_choice(answer: Body) -> dict[str, Any]:
    """The first element of ``choices``, or an empty object."""
    choices = answer.get("choices") or []
    return choices[0] if choices and isinstance(choices[0], dict) else {}
