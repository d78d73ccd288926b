"""Whose fault an error is: one input of a call, or the call as a whole (its model, key or route).

A pack of embedding lines that the API refuses is bisected to find the bad input, but only when
the error can be about one input. An unknown model, a missing route or a refused key fails every
line of the pack in one call: bisecting 200 lines that name a missing model cost 398 calls and
ended the same way. "This model's maximum context length is …" names the model but is about an
input, so only messages that say the model is missing or invalid count.
"""

from __future__ import annotations

import re

from workers.retry import Classification

_CALL_STATUSES = frozenset({401, 403, 404, 405})
_MODEL_CODES = frozenset({"model_not_found", "invalid_model", "model_not_available", "no_available_channel"})
_ABOUT_THE_CALL = re.compile(
    r"invalid model|unknown model|no such model|model_not_found"
    r"|model\W.{0,80}?(does not exist|not exist|not found|is not supported|not available|no access)"
    r"|模型.{0,20}(不存在|无效|不支持)|无可用渠道|no available channel|invalid url|unknown url",
    re.IGNORECASE,
)


def blames_the_call(c: Classification, status: int | None) -> bool:
    """True when a refusal is about the call itself (model, route, key), not one of its inputs."""
    if status in _CALL_STATUSES or c.code in _MODEL_CODES:
        return True
    return bool(_ABOUT_THE_CALL.search(c.message))
