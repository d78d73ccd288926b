"""Embedding packing: many one-input lines travel in one upstream call, and come back apart.

Lines for ``/v1/embeddings`` whose bodies are equal except for ``input`` (same model,
``dimensions``, ``encoding_format``, ``user``) share a *pack key*. A pack joins their inputs into
one list, up to a number of inputs and an estimated-token budget per call. The answer's ``data``
items come back in input order (by ``index``); each line gets its own slice, re-indexed from 0,
in a body shaped exactly as if it had been called alone.

Usage attribution rule (so per-line numbers add up exactly to the call's total): the call's
``prompt_tokens`` are split in proportion to each line's estimated tokens by the largest
remainder method: every line gets the floor of its share, and the tokens left over go one each
to the lines with the largest fractional remainders (earlier lines first on ties). ``total`` is
attributed the same way. An answer without usage is attributed from the estimates, flagged.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import orjson

from jobs.options import JobOptions
from jobs.records import Usage
from workers.endpoints.base import reported_usage


@dataclass(frozen=True, slots=True)
class PackLimits:
    """How big one packed call may get."""

    max_inputs: int = 256
    max_tokens: int = 100_000


def pack_limits(options: JobOptions) -> PackLimits | None:
    """The packing a job asks for: ``pack_size`` inputs a call, or None when packing is off."""
    return PackLimits(max_inputs=options.pack_size) if options.pack else None


def pack_key(body: Mapping[str, Any]) -> bytes:
    """Lines with equal keys may share a call: the body without its ``input``, canonically."""
    rest = dict(body)  # a copy less its input: a comprehension cost a packed line 0.5 us more
    rest.pop("input", None)
    return orjson.dumps(rest, option=orjson.OPT_SORT_KEYS)


def inputs_of(body: Mapping[str, Any]) -> list[Any]:
    """A line's inputs as a list: a string or one token array is one input."""
    value = body.get("input")
    if isinstance(value, str):
        return [value]
    if isinstance(value, list) and value and all(isinstance(x, int) for x in value):
        return [value]
    return list(value) if isinstance(value, list) else [value]


def merge_bodies(bodies: Sequence[Mapping[str, Any]]) -> tuple[dict[str, Any], list[tuple[int, int]]]:
    """One request body for a pack, and each line's (start, end) span in its ``input`` list."""
    merged = dict(bodies[0])
    inputs: list[Any] = []
    spans = []
    for body in bodies:
        own = inputs_of(body)
        spans.append((len(inputs), len(inputs) + len(own)))
        inputs.extend(own)
    merged["input"] = inputs
    return merged, spans


def split_answer(answer: Mapping[str, Any], spans: Sequence[tuple[int, int]]) -> list[dict[str, Any]]:
    """Each line's own answer body (without usage: see ``attribute_usage``)."""
    data = sorted(answer.get("data") or [], key=lambda d: d.get("index", 0))
    if len(data) != spans[-1][1]:
        raise ValueError(f"the answer has {len(data)} embeddings for {spans[-1][1]} inputs")
    rest = {k: v for k, v in answer.items() if k not in ("data", "usage")}
    parts = []
    for start, end in spans:
        items = [dict(item, index=i) for i, item in enumerate(data[start:end])]
        parts.append(rest | {"data": items})
    return parts


def line_bodies(
    answer: Mapping[str, Any], spans: Sequence[tuple[int, int]], usages: Sequence[Usage]
) -> list[str]:
    """Each line's answer body as JSON text, with its usage: ``with_usage(split_answer(...)[i])``
    as orjson writes it, without building a dict per line.

    The answer's members other than ``data`` and ``usage`` are written once; when its ``data``
    items differ only by ``index`` (an embedding answer whose vectors were taken out), each
    line's items are the same text for the same number of inputs, written once per count.
    """
    parts: list[dict[str, Any]] | None = None
    data = sorted(answer.get("data") or [], key=lambda d: d.get("index", 0))
    if len(data) != spans[-1][1]:
        raise ValueError(f"the answer has {len(data)} embeddings for {spans[-1][1]} inputs")
    rest = {k: v for k, v in answer.items() if k not in ("data", "usage")}
    head = orjson.dumps(rest).decode()[:-1] + ("," if rest else "")
    first = dict(data[0], index=0) if data else {}
    same = bool(data) and all(dict(item, index=0) == first for item in data)
    items_of: dict[int, str] = {}
    bodies: list[str] = []
    for (start, end), usage in zip(spans, usages, strict=True):
        n = end - start
        if same:
            items = items_of.get(n)
            if items is None:
                items = items_of[n] = orjson.dumps([dict(first, index=i) for i in range(n)]).decode()
        else:
            parts = parts or split_answer(answer, spans)
            items = orjson.dumps(parts[len(bodies)]["data"]).decode()
        bodies.append(
            f'{head}"data":{items},"usage":{{"prompt_tokens":{usage.prompt_tokens},'
            f'"total_tokens":{usage.total_tokens}}}}}'
        )
    return bodies


def largest_remainder(total: int, weights: Sequence[int]) -> list[int]:
    """Split ``total`` in proportion to ``weights`` into integers that sum to exactly ``total``."""
    weight_sum = sum(weights)
    if weight_sum <= 0:
        weights, weight_sum = [1] * len(weights), len(weights)
    if weights and min(weights) == max(weights):  # equal shares: the remainder goes to the first lines
        base, left = divmod(total, len(weights))
        return [base + 1] * left + [base] * (len(weights) - left)
    shares = [total * w / weight_sum for w in weights]
    floors = [int(s) for s in shares]
    left = total - sum(floors)
    order = sorted(range(len(shares)), key=lambda i: (-(shares[i] - floors[i]), i))
    for i in order[:left]:
        floors[i] += 1
    return floors


def attribute_usage(answer: Mapping[str, Any], estimates: Sequence[int]) -> list[Usage]:
    """Per-line usage that adds up to the call's usage (rule in the module docstring)."""
    usage = reported_usage(answer)
    if usage is not None:
        prompt = largest_remainder(int(usage["prompt_tokens"]), estimates)
        total = largest_remainder(int(usage.get("total_tokens") or usage["prompt_tokens"]), estimates)
        return [Usage(p, 0, t) for p, t in zip(prompt, total, strict=True)]
    return [Usage(e, 0, e, estimated=True) for e in estimates]


def with_usage(part: dict[str, Any], usage: Usage) -> dict[str, Any]:
    """A line's answer body with its attributed usage, as the API would have reported it."""
    return part | {"usage": {"prompt_tokens": usage.prompt_tokens, "total_tokens": usage.total_tokens}}
