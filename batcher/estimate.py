"""Estimate: the tokens and cost of an input file before any call is made.

Streams the file with the reader; per line, the expected usage is the line's endpoint family's
(``workers.endpoints``: the same numbers the budget and the rate limiter use): the prompt is
batcher's own token estimate and the output the line's ``max_completion_tokens`` or
``max_tokens`` times ``n`` (``best_of`` for completions; an upper bound: answers often stop
sooner), else a stated typical output. Speech is counted in input characters. Each line is
priced as one call (a relay's quota is rounded up per call), so the total is what the lines
cost if each is called exactly once: retries and duplicate calls come on top, and ``batcher
usage`` reports them afterwards.

``EstimateBuilder`` is the pure core, fed one parsed line at a time (ingest feeds it as it stores
the lines); ``estimate_lines`` feeds it an iterable and ``estimate_file`` a file.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, fields, replace
from decimal import Decimal
from operator import attrgetter
from pathlib import Path
from typing import Any, Protocol

from batcher.reader import ReadOptions, read_requests
from batcher.usage import unpriced_hint
from jobs.endpoints import Endpoint
from jobs.errors import Problem
from jobs.records import Usage
from workers.cost import cost_of_attempt
from workers.endpoints import Family, family_of
from workers.prices import PriceBook
from workers.tokens import estimate_prompt_tokens

PromptCounter = Callable[[Endpoint, Mapping[str, Any]], int]


class Line(Protocol):
    """What the estimate reads of a parsed line (``batcher.reader.ParsedLine``)."""

    @property
    def endpoint(self) -> Endpoint: ...
    @property
    def model(self) -> str: ...
    @property
    def body(self) -> Mapping[str, Any]: ...


@dataclass
class ModelEstimate:
    """Expected usage and cost of the lines naming one model."""

    model: str
    lines: int = 0
    prompt_tokens: int = 0
    output_tokens: int = 0
    characters: int = 0
    seconds: Decimal = Decimal(0)  # audio to transcribe, billed in whole seconds a line
    images: int = 0  # images to make
    cost: Decimal = Decimal(0)
    priced: bool = True
    without_max: int = 0  # chat/completion lines that set no max tokens


@dataclass
class FamilyEstimate:
    """Lines of one endpoint family and what they are billed in (``Family.billed_in``)."""

    family: str
    billed_in: str
    lines: int = 0
    quantity: int = 0  # tokens (prompt + output), or characters for speech


@dataclass
class Estimate:
    """The file's expected usage and cost per model, and the assumptions behind the numbers."""

    models: list[ModelEstimate]
    prices: PriceBook
    group: str | None
    typical_output: int | None
    invalid_lines: int = 0
    assumptions: list[str] = field(default_factory=list)
    families: list[FamilyEstimate] = field(default_factory=list)

    @property
    def cost(self) -> Decimal:
        """USD of the priced lines."""
        return sum((m.cost for m in self.models), Decimal(0))

    @property
    def unpriced_models(self) -> set[str]:
        """Models with no price: their lines are not in ``cost``."""
        return {m.model for m in self.models if not m.priced}


def output_tokens(endpoint: Endpoint, body: Mapping[str, Any], typical_output: int | None) -> int | None:
    """Tokens a line may produce: max tokens × choices, else the typical output × choices, else None."""
    return family_of(endpoint).completion_tokens(body, default=typical_output)


def line_usage(
    line: Line, typical_output: int | None, count_prompt: PromptCounter, *, family: Family | None = None
) -> tuple[Usage, bool]:
    """The usage one line is expected to have, and whether it set its own output limit (``family``:
    the line's, when the caller already has it)."""
    family = family or family_of(line.endpoint)
    usage = family.expected_usage(line.body, default=typical_output)
    has_max = family.completion_tokens(line.body, default=None) is not None
    if usage.characters or usage.seconds or usage.images or family.binary_answer:
        return usage, has_max
    if count_prompt is estimate_prompt_tokens:  # the family's own count: already in its usage
        return usage, has_max
    return replace(usage, prompt_tokens=count_prompt(line.endpoint, line.body)), has_max


_usage_values = attrgetter(*(f.name for f in fields(Usage)))
# Lines priced alike and expected to use alike (the same model and token counts: most lines of a
# dataset) cost alike: their cost is worked out once. Bounded, so memory stays flat.
_COSTS_KEPT = 4096


class EstimateBuilder:
    """Adds up lines one at a time, so a command that already reads the file (ingest) estimates
    it in the same pass instead of reading it again."""

    def __init__(
        self,
        prices: PriceBook,
        *,
        group: str | None = None,
        typical_output: int | None = None,
        count_prompt: PromptCounter = estimate_prompt_tokens,
    ) -> None:
        self.prices, self.group, self.typical_output = prices, group, typical_output
        self._count_prompt = count_prompt
        self._ratio = prices.group_ratio(group)
        self._models: dict[str, ModelEstimate] = {}
        self._families: dict[str, FamilyEstimate] = {}
        self._invalid = 0
        self._costs: dict[tuple[Any, ...], Decimal | None] = {}

    def add(self, line: Line | Problem) -> None:
        """Count one parsed line (an invalid one is only counted as invalid)."""
        if isinstance(line, Problem):
            self._invalid += 1
            return
        family = family_of(line.endpoint)
        usage, has_max = line_usage(line, self.typical_output, self._count_prompt, family=family)
        self._add_family(family, usage)
        row = self._models.get(line.model) or self._models.setdefault(line.model, ModelEstimate(line.model))
        _add(row, usage, has_max)
        priced_as = family.price_key(line.model, line.body) or line.model
        cost = self._cost(priced_as, usage)
        row.priced &= cost is not None
        row.cost += cost or Decimal(0)

    def _cost(self, priced_as: str, usage: Usage) -> Decimal | None:
        """``cost_of_attempt`` of the usage under the model's price, remembered (see ``_COSTS_KEPT``)."""
        key = (priced_as, _usage_values(usage))
        if key not in self._costs:
            if len(self._costs) >= _COSTS_KEPT:
                self._costs.clear()
            price = self.prices.lookup(priced_as)
            self._costs[key] = cost_of_attempt(usage, price, group_ratio=self._ratio)
        return self._costs[key]

    def _add_family(self, family: Family, usage: Usage) -> None:
        row = self._families.get(family.name) or self._new_family(family)
        row.lines += 1
        row.quantity += 1 if family.billed_in == "tasks" else usage.characters or usage.tokens

    def _new_family(self, family: Family) -> FamilyEstimate:
        return self._families.setdefault(family.name, FamilyEstimate(family.name, family.billed_in))

    def result(self) -> Estimate:
        """The estimate of every line added so far."""
        models = sorted(self._models.values(), key=lambda m: m.model)
        estimate = Estimate(models, self.prices, self.group, self.typical_output, self._invalid)
        estimate.families = sorted(self._families.values(), key=lambda f: f.family)
        estimate.assumptions = assumptions(estimate)
        return estimate


def estimate_lines(
    lines: Iterable[Line | Problem],
    prices: PriceBook,
    *,
    group: str | None = None,
    typical_output: int | None = None,
    count_prompt: PromptCounter,
) -> Estimate:
    """Add up the expected usage and cost of parsed lines (invalid lines are only counted)."""
    builder = EstimateBuilder(prices, group=group, typical_output=typical_output, count_prompt=count_prompt)
    for line in lines:
        builder.add(line)
    return builder.result()


def _add(row: ModelEstimate, usage: Usage, has_max: bool) -> None:
    row.lines += 1
    row.prompt_tokens += usage.prompt_tokens
    row.output_tokens += usage.completion_tokens
    row.characters += usage.characters
    row.seconds += usage.seconds
    row.images += usage.images
    row.without_max += not has_max


def assumptions(estimate: Estimate) -> list[str]:
    """The assumptions behind an estimate, in words, for the report."""
    out = [
        "prompt tokens: batcher's estimate (ASCII text 4 characters per token, any other character "
        "1 token): slightly high",
        "output tokens: max_completion_tokens or max_tokens × n (best_of for completions) where a "
        "line sets them: an upper bound, answers often stop sooner",
        "each line called once: retries and duplicate calls cost extra (see `batcher usage` afterwards)",
    ]
    missing = sum(m.without_max for m in estimate.models)
    if missing and estimate.typical_output is not None:
        out.append(
            f"{missing} lines set no max tokens: counted at --typical-output {estimate.typical_output}"
        )
    elif missing:
        out.append(
            f"{missing} lines set no max tokens: their output is counted as 0, so the cost is too low; "
            "pass --typical-output N (tokens per answer)"
        )
    if any(m.characters for m in estimate.models):
        out.append("speech: billed per input character")
    if any(m.seconds for m in estimate.models):
        out.append(
            "transcription: billed per second of audio (the duration in each file, rounded up per "
            "file; relays: ceil(seconds) / 60 × 1000 tokens × the model ratio)"
        )
    if any(m.images for m in estimate.models):
        out.append("images: billed per image by model, size and quality (n per line)")
    if estimate.unpriced_models:
        out.append(unpriced_hint(estimate.unpriced_models))
    return out


def estimate_file(
    path: Path,
    read_options: ReadOptions,
    prices: PriceBook,
    group: str | None = None,
    typical_output: int | None = None,
) -> Estimate:
    """Estimate a JSONL input file, read with ``read_options``."""
    lines = read_requests(path, read_options)
    return estimate_lines(
        lines, prices, group=group, typical_output=typical_output, count_prompt=estimate_prompt_tokens
    )
