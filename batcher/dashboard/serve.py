"""Running the dashboard: where it binds, which token it asks for, and uvicorn serving it."""

from __future__ import annotations

from dataclasses import dataclass

from batcher.dashboard.guard import Access, is_loopback, new_token
from jobs.errors import ConfigError

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8770


@dataclass(frozen=True)
class Binding:
    """Where the dashboard listens and the access rules that go with it."""

    host: str
    port: int
    access: Access
    generated: bool  # the token was made here (print it), not given

    @property
    def url(self) -> str:
        """The address to open (with the token, when one is needed)."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        base = f"http://{host}:{self.port}/"
        return base + (f"?token={self.access.token}" if self.access.token else "")


def binding(host: str, port: int, token: str | None) -> Binding:
    """Loopback needs no token (one given is still asked for); anywhere else needs one."""
    if token is not None and len(token) < 16:
        raise ConfigError("--token must be at least 16 characters; leave it out to get a generated one")
    if token is None and not is_loopback(host):
        return Binding(host, port, Access(new_token()), generated=True)
    return Binding(host, port, Access(token), generated=False)


def serve(bound: Binding, app: object) -> None:
    """Serve the app until interrupted."""
    import uvicorn

    uvicorn.run(app, host=bound.host, port=bound.port, log_level="warning")  # type: ignore[arg-type]
