"""Redis clients with explicit timeouts and retries, and the reconnect backoff.

redis-py 8's defaults (5 s socket timeouts, 10 retries) take seconds to report a dead server; a
sidecar must notice quickly so its outbox keeps the update and the subscriber starts reconnecting.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from redis.asyncio import Redis
from redis.asyncio.retry import Retry
from redis.backoff import EqualJitterBackoff, ExponentialWithJitterBackoff
from redis.exceptions import ConnectionError as RedisConnectionError

SOCKET_TIMEOUT_S = 2.0
CONNECT_TIMEOUT_S = 2.0
# One quick retry on a broken connection covers a pooled socket that died with a restarted server.
# Timeouts are not retried: a server that does not answer in 2 s is reported at once.
COMMAND_RETRIES = 1
RECONNECT_BASE_S = 0.05
RECONNECT_CAP_S = 5.0


def command_retry() -> Retry:
    return Retry(
        ExponentialWithJitterBackoff(cap=0.2, base=0.05),
        COMMAND_RETRIES,
        supported_errors=(RedisConnectionError,),
    )


@dataclass(frozen=True)
class RedisSecurity:
    """Credentials and TLS trust kept out of the URL (so logs and `ps` never show them).

    A username or password in the URL wins over these.
    """

    username: str | None = None
    password: str | None = None
    ca_file: Path | None = None  # for rediss://: the CA that signs the server's certificate

    def client_options(self, url: str) -> dict[str, Any]:
        options: dict[str, Any] = {}
        if self.username is not None:
            options["username"] = self.username
        if self.password is not None:
            options["password"] = self.password
        if self.ca_file is not None:
            if not url.startswith("rediss://"):
                raise ValueError("a CA file needs a rediss:// URL")
            options["ssl_ca_certs"] = str(self.ca_file)
        return options


def make_client(
    url: str,
    *,
    socket_timeout: float = SOCKET_TIMEOUT_S,
    connect_timeout: float = CONNECT_TIMEOUT_S,
    retry: Retry | None = None,
    client_name: str | None = None,
    security: RedisSecurity | None = None,
) -> Redis:
    """A client for commands (bytes in, bytes out); `retry=Retry(NoBackoff(), 0)` disables retry."""
    client: Redis = Redis.from_url(
        url,
        socket_timeout=socket_timeout,
        socket_connect_timeout=connect_timeout,
        retry=retry if retry is not None else command_retry(),
        decode_responses=False,
        client_name=client_name,
        **(security or RedisSecurity()).client_options(url),
    )
    return client


class ReconnectBackoff:
    """Capped exponential delays with jitter: half fixed, half random, so peers spread out."""

    def __init__(self, base: float = RECONNECT_BASE_S, cap: float = RECONNECT_CAP_S) -> None:
        self._backoff = EqualJitterBackoff(cap=cap, base=base)
        self.failures = 0

    def next_delay(self) -> float:
        self.failures += 1
        return float(self._backoff.compute(self.failures))

    def reset(self) -> None:
        self.failures = 0
