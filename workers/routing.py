"""Routing calls across providers and keys: by model, spread by the keys' limits, with failover.

A ``Router`` stands where one provider's ``ApiClient`` stood: the executor hands it a body and
gets an answer. Inside, each call goes to a *route* (one key of one provider) that serves the
body's model (``workers.catalog``: names and globs; a provider that lists none serves any):

- **spread**: among the routes that serve the model, by smooth weighted round robin on each key's
  configured ``rpm`` (1 each when none is known), so each key's share of the calls is its share
  of the limits; a key with a configured limit also waits for its own limiter (``Limits`` of that
  key, in Redis for workers), so no key is pushed past what it was given;
- **failover**: an answer that says this route cannot serve the call (the model missing there,
  "no available channel", the key out of quota or refused, the relay not reachable: nothing was
  sent) sends the same call to the next route that serves the model at once, and benches the
  route for ``BENCH_S`` (a quota or key refusal: for every model; a missing model: for that
  model), so later calls skip it. No route is tried twice for one call, and an answer that may
  have been billed (a timeout, a 5xx) is never re-sent here: the retry policy decides.

When every route failed over, the last answer is returned as it was (a missing model fails the
line, an exhausted quota stops the job, an unreachable relay is retried later). Each answer
names its route (``RawResponse.route``: provider and key label), which the attempt records.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace

import httpx
import orjson

from jobs.endpoints import Endpoint
from jobs.errors import ConfigError
from jobs.providers import KeyRef, Provider
from workers.blame import blames_the_call
from workers.catalog import ModelCatalog
from workers.client import JSON, ApiClient, ClientConfig, NoAnswer, RawResponse, normalize_base_url
from workers.endpoints.base import RequestContent
from workers.ratelimit import Limiter, Limits
from workers.retry import Verdict, classify_response

BENCH_S = 60.0  # how long a route that failed over is skipped
ANY_MODEL = "*"


@dataclass(eq=False)
class Route:
    """One key of one provider: where a call can go."""

    provider: str
    key_label: str
    client: ApiClient
    catalog: ModelCatalog | None = None  # None: the provider serves any model
    weight: float = 1.0
    limiter: Limiter | None = None  # the key's own limits, when configured
    current: float = field(default=0.0, repr=False)  # smooth weighted round robin
    benched: dict[str, float] = field(default_factory=dict, repr=False)  # model (or *) → until

    @property
    def name(self) -> str:
        """Provider and key, as attempts and reports show them."""
        return f"{self.provider}/{self.key_label}"

    def serves(self, model: str) -> bool:
        """Whether the provider serves the model."""
        return self.catalog is None or self.catalog.serves(model)

    def on_bench(self, model: str, now: float) -> bool:
        """Whether the route is skipped for this model now."""
        return any(self.benched.get(m, 0.0) > now for m in (model, ANY_MODEL))


def failover_scope(answer: RawResponse | NoAnswer) -> str | None:
    """Why another route should take this call: ``*`` (the key or relay), ``model``, or None."""
    if isinstance(answer, NoAnswer):
        return ANY_MODEL if answer.classification.sent is False else None
    c = classify_response(answer.status, answer.headers, answer.content, now=time.time())
    if c.verdict == Verdict.FATAL:  # out of quota, key refused: another key may do
        return ANY_MODEL
    if c.verdict == Verdict.PERMANENT and answer.status in (400, 404) and blames_the_call(c, None):
        return "model"
    return None


def body_model(body: bytes) -> str:
    """The model a JSON request body names ('' when it names none)."""
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError:
        return ""
    model = data.get("model") if isinstance(data, dict) else None
    return model if isinstance(model, str) else ""


def _unserved(model: str) -> RawResponse:
    body = {"error": {"message": f"no configured provider serves model {model!r}", "code": "model_not_found"}}
    return RawResponse(404, httpx.Headers({"content-type": JSON}), orjson.dumps(body), route=None)


class Router:
    """Calls routed by model across providers and keys; see the module docstring."""

    def __init__(self, routes: Sequence[Route], *, clock: Callable[[], float] = time.monotonic) -> None:
        if not routes:
            raise ValueError("a router needs at least one route")
        self.routes = list(routes)
        self.config: ClientConfig = routes[0].client.config  # names the pace and the breaker
        self._clock = clock

    def pick(self, model: str, *, tried: Sequence[Route] = ()) -> Route | None:
        """The next route for the model (smooth weighted round robin), skipping benched ones if it can.

        A body that names no model (a multipart upload) may go to any route.
        """
        now = self._clock()
        able = [r for r in self.routes if (not model or r.serves(model)) and r not in tried]
        fresh = [r for r in able if not r.on_bench(model, now)] or able
        if not fresh:
            return None
        total = sum(r.weight for r in fresh)
        for r in fresh:
            r.current += r.weight
        best = max(fresh, key=lambda r: r.current)
        best.current -= total
        return best

    async def send(
        self, endpoint: Endpoint, request: RequestContent, *, model: str = ""
    ) -> RawResponse | NoAnswer:
        """Send the request through a route serving the line's model (or the one its JSON body
        names); fail over while routes say they cannot."""
        model = model or (body_model(request.content) if request.content_type == JSON else "")
        tried: list[Route] = []
        answer: RawResponse | NoAnswer | None = None
        while (route := self.pick(model, tried=tried)) is not None:
            tried.append(route)
            if route.limiter is not None:
                await route.limiter.acquire(f"{route.name}|{model}", 0)
            answer = _named(await route.client.send(endpoint, request), route)
            scope = failover_scope(answer)
            if scope is None:
                return answer
            route.benched[ANY_MODEL if scope == ANY_MODEL else model] = self._clock() + BENCH_S
        return answer if answer is not None else _unserved(model)

    async def aclose(self) -> None:
        """Close every route's client."""
        for route in self.routes:
            await route.client.aclose()

    async def __aenter__(self) -> Router:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()


def _named(answer: RawResponse | NoAnswer, route: Route) -> RawResponse | NoAnswer:
    return replace(answer, route=route.name)


ClientFactory = Callable[[ClientConfig], ApiClient]
LimiterFactory = Callable[[Limits], Limiter]


def route_configs(provider: Provider, base: ClientConfig) -> list[tuple[KeyRef, ClientConfig]]:
    """Each present key of the provider as a client configuration (timeouts and proxy from ``base``)."""
    url = normalize_base_url(provider.config.base_url)
    headers = tuple(sorted(provider.config.headers.items()))
    return [
        (
            key,
            replace(
                base,
                base_url=url,
                api_key=key.value.get_secret_value() if key.value else None,
                headers=headers,
            ),
        )
        for key in provider.present_keys()
    ]


def build_router(
    providers: Sequence[Provider], base: ClientConfig, *, client: ClientFactory, limiter: LimiterFactory
) -> Router:
    """A router over every present key of every configured provider."""
    routes = []
    for provider in providers:
        catalog = ModelCatalog.of(provider.config.models) if provider.config.models else None
        for key, config in route_configs(provider, base):
            limits = provider.limits_for(key)
            own = limiter(Limits(rpm=limits.rpm, tpm=limits.tpm)) if limits.rpm or limits.tpm else None
            routes.append(
                Route(
                    provider.name, key.label, client(config), catalog, weight=limits.rpm or 1.0, limiter=own
                )
            )
    if not routes:
        names = ", ".join(k.env for p in providers for k in p.keys) or "none configured"
        raise ConfigError(
            f"no provider has a key in the environment (variables: {names}); set them and retry"
        )
    return Router(routes)
