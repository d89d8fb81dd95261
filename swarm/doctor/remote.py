"""Checks against Redis: reachable with these credentials, the swarm key matches what the swarm
sealed, and this machine's clock agrees with the server's. Nothing is written to Redis."""

from __future__ import annotations

import asyncio
import ipaddress
import json
import socket
import ssl
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from redis.asyncio import Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import (
    AuthenticationError,
    AuthenticationWrongNumberOfArgsError,
    NoPermissionError,
    RedisError,
    ResponseError,
)

from swarm.config import SwarmSettings
from swarm.doctor.checks import Check, Status, one_line
from swarm.runtime import redact
from swarm.transport.codec import (
    FORGED,
    MALFORMED,
    NO_KEY,
    UNAUTHENTICATED,
    WRONG_KEY,
    Codec,
    PlainCodec,
    Rejected,
)
from swarm.transport.keyring import KeyFileError, Keyring, key_id
from swarm.transport.redis_client import RedisSecurity, make_client
from swarm.transport.redis_keys import SwarmKeys
from swarm.transport.sealed import make_codec
from swarm.transport.topology import PLAIN, ClientOptions, Deployment, node_url

TIMEOUT_S = 3.0
LOG_ENTRIES = 20  # newest log entries tried with the key
CLOCK_SKEW_LIMIT_S = 2.0
_CREDENTIALS = "SWARM_REDIS_USERNAME / SWARM_REDIS_PASSWORD (or user:password in the URL)"


def redis_user(settings: SwarmSettings) -> str:
    """The ACL user the daemon connects as: the URL's, else the setting's, else `default`."""
    return urlsplit(settings.redis_url).username or settings.redis_username or "default"


def _plain_remote(url: str) -> bool:
    """A redis:// URL to another machine: traffic and the password travel in clear text."""
    parts = urlsplit(url)
    if parts.scheme != "redis" or not parts.hostname or parts.hostname == "localhost":
        return False
    try:
        return not ipaddress.ip_address(parts.hostname).is_loopback
    except ValueError:  # a host name: not this machine
        return True


def _causes(exc: BaseException) -> list[BaseException]:
    chain: list[BaseException] = []
    current: BaseException | None = exc
    while current is not None and current not in chain:
        chain.append(current)
        current = current.__cause__ or current.__context__
    return chain


def _connection_problem(exc: BaseException, url: str) -> tuple[str, str]:
    """What went wrong connecting, and the fix, from redis-py's exception and its causes."""
    causes = _causes(exc)
    text = one_line(exc)
    lowered = " ".join(one_line(cause) for cause in causes).lower()
    tls = url.startswith("rediss://")

    def caused_by(*kinds: type[BaseException]) -> bool:
        return any(isinstance(cause, kinds) for cause in causes)

    if isinstance(exc, AuthenticationWrongNumberOfArgsError) or "without any password" in lowered:
        return "a password is set but this Redis has none", f"unset {_CREDENTIALS}"
    if "noauth" in lowered or "authentication required" in lowered:
        return "Redis requires a password", f"set {_CREDENTIALS}"
    if isinstance(exc, AuthenticationError):
        return "Redis refused the user name or password", f"check {_CREDENTIALS}"
    if caused_by(ssl.SSLCertVerificationError) or "certificate verify failed" in lowered:
        return "the server's TLS certificate is not trusted", (
            "set SWARM_REDIS_CA_FILE to the CA bundle that signed it"
        )
    if tls and caused_by(ssl.SSLError, asyncio.IncompleteReadError):
        return f"no TLS handshake ({text})", "this server may not speak TLS: use redis://"
    if caused_by(ConnectionRefusedError) or "error 111 " in lowered:
        return "nothing listens there", "start Redis, or correct the host and port in the URL"
    if caused_by(socket.gaierror) or "name or service not known" in lowered:
        return "host not found", "correct the host name in the URL"
    if caused_by(FileNotFoundError) and url.startswith("unix://"):
        return "no socket there", "correct the socket path in the unix:// URL"
    if caused_by(TimeoutError) or "timeout" in lowered or "timed out" in lowered:
        fix = "check the host, the port and firewalls"
        if tls:
            fix += "; if this server does not speak TLS, use redis://"
        return f"no answer within {TIMEOUT_S:.0f} s", fix
    if "protocol error" in lowered:
        return f"what answers there is not Redis ({text})", "check the host and port in the URL"
    if not tls and ("closed" in lowered or "reset" in lowered):
        return f"the server closed the connection ({text})", "if it expects TLS, use rediss://"
    return text, "check the Redis URL and that the server runs"


@dataclass
class Connection:
    check: Check
    client: Redis | None = None  # None when Redis cannot be used
    cluster: bool = False  # `client` is the master of the swarm's slot in a Redis Cluster


async def connect(settings: SwarmSettings) -> Connection:
    """A client as the daemon makes it (credentials, TLS), or the reason there is none."""
    url = settings.redis_url
    security = RedisSecurity(
        username=settings.redis_username,
        password=settings.redis_password.get_secret_value() if settings.redis_password else None,
        ca_file=settings.redis_ca_file,
    )
    shown = redact(url)
    try:
        client, cluster = await _client_for_swarm(url, settings.swarm, security)
    except (RedisError, OSError, TimeoutError) as exc:
        problem, fix = _connection_problem(exc, url)
        return Connection(Check("redis", Status.FAIL, f"{shown}: {problem}", fix))
    except ValueError as exc:
        return Connection(
            Check(
                "redis",
                Status.FAIL,
                f"bad Redis URL: {one_line(exc)}",
                "use redis://HOST:PORT/DB, rediss://..., unix://PATH or redis+sentinel://...",
            )
        )
    try:
        async with asyncio.timeout(TIMEOUT_S):
            # HELLO is allowed to every user (PING may not be), and says which Redis this is.
            reply = await client.execute_command("HELLO")  # type: ignore[no-untyped-call]
    except (RedisError, OSError, TimeoutError) as exc:
        if isinstance(exc, ResponseError) and "unknown command" in str(exc).lower():
            reply = {}  # Redis 5: no HELLO, but it answered
        else:
            await client.aclose()
            problem, fix = _connection_problem(exc, url)
            return Connection(Check("redis", Status.FAIL, f"{shown}: {problem}", fix))
    info = _pairs(reply)
    version = info.get("version", "before 6")
    found = f"{shown} answers (Redis {version}, user {redis_user(settings)})"
    if _plain_remote(url):
        check = Check(
            "redis",
            Status.WARN,
            found + ", but without TLS to another machine",
            "use rediss:// so memory and password do not cross the network in clear",
        )
    else:
        check = Check("redis", Status.OK, found)
    return Connection(check, client, cluster)


async def _client_for_swarm(
    url: str, swarm: str, security: RedisSecurity
) -> tuple[Redis, bool]:
    """A client to the server that holds `swarm` (the one the URL names, Sentinel's master, or on
    a cluster the master of the swarm's slot: its keys and ACL are checked there), and whether it
    is a cluster's."""
    deployment = Deployment(url, ClientOptions(security=security))
    if deployment.kind == PLAIN:
        target = url
        try:
            async with asyncio.timeout(TIMEOUT_S):
                try:
                    await deployment.resolve()
                except NoPermissionError:
                    if not deployment.cluster_node:
                        raise
                    # A cluster this user may not map: the ACL check below names what it lacks.
                    client = make_client(url, retry=Retry(NoBackoff(), 0), security=security)
                    return client, True
            if deployment.cluster is not None:
                node = deployment.cluster.get_node_from_key(SwarmKeys.for_swarm(swarm).log)
                if node is not None:
                    target = node_url(url, node.host, int(node.port))
        finally:
            await deployment.aclose()
        client = make_client(target, retry=Retry(NoBackoff(), 0), security=security)
        return client, deployment.cluster is not None
    async with asyncio.timeout(TIMEOUT_S):
        await deployment.resolve()  # Sentinel: says what is wrong with the service in one line
    assert isinstance(deployment.client, Redis)
    return deployment.client, False


def _pairs(reply: Any) -> dict[str, Any]:
    if isinstance(reply, list):
        reply = dict(zip(reply[::2], reply[1::2], strict=False))
    if not isinstance(reply, dict):
        return {}
    return {_text(k): _text(v) if isinstance(v, bytes) else v for k, v in reply.items()}


def _text(value: Any) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)


# -- the swarm key -------------------------------------------------------------------------------


def load_key(settings: SwarmSettings) -> tuple[Check, Codec | None]:
    """The key as the daemon reads it (a readable, valid file or $SWARM_KEY), or why not."""
    try:
        text = settings.key.get_secret_value() if settings.key is not None else None
        keyring = Keyring.load(settings.key_file, text)
    except KeyFileError as exc:
        return Check(
            "key",
            Status.FAIL,
            one_line(exc),
            "create one with `swarm keygen PATH`,"
            " or copy the swarm's key file and make it readable by this user",
        ), None
    codec = make_codec(settings.swarm, keyring, encrypt=settings.encrypt)
    if keyring is None:
        return Check(
            "key",
            Status.WARN,
            "no swarm key: Redis can read the memory",
            "see docs/security.md (swarm keygen)",
        ), codec
    where = settings.key_file or "SWARM_KEY"
    return Check("key", Status.OK, f"key id {key_id(keyring.current).hex()} from {where}"), codec


async def sealed_items(client: Redis, swarm: str) -> list[tuple[str, str, Any]]:
    """(kind, whose, raw) of the swarm's heartbeats and newest log entries."""
    keys = SwarmKeys.for_swarm(swarm)
    items: list[tuple[str, str, Any]] = []
    async with asyncio.timeout(TIMEOUT_S):
        for node, raw in (await client.hgetall(keys.nodes)).items():
            items.append(("heartbeat", _text(node), raw))
        for entry_id, fields in await client.xrevrange(keys.log, count=LOG_ENTRIES) or []:
            items.append(("log entry", _text(entry_id), (fields or {}).get(b"e", b"")))
    return items


def _open(codec: Codec, kind: str, whose: str, raw: Any) -> str | None:
    """None if the item opens with this codec, else why not (a codec rejection reason)."""
    try:
        if kind == "log entry":
            codec.open(raw)
            return None
        info = json.loads(raw)["info"]
        if isinstance(codec, PlainCodec) and isinstance(info, dict) and "sealed" in info:
            return NO_KEY  # a keyless node would take the sealed box for plain presence
        codec.open_info(whose, info)
    except Rejected as exc:
        return exc.reason
    except (ValueError, KeyError, TypeError):
        return MALFORMED
    return None


_MISMATCH = {
    NO_KEY: (
        "sealed with a swarm key, and none is set here",
        "set SWARM_KEY_FILE (or key_file) to the swarm's key",
    ),
    WRONG_KEY: (
        "sealed with a key this node does not hold",
        "give every node the same key file (the key ids must match)",
    ),
    FORGED: ("not authentic with this key", "give every node the same key file"),
    UNAUTHENTICATED: (
        "plain (written without a key), and a key is set here",
        "switch the whole swarm to the key at once (docs/security.md)",
    ),
}


async def check_key_match(client: Redis, swarm: str, codec: Codec, key: Check) -> Check:
    """Whether what the swarm's nodes sealed in Redis opens with this node's key."""
    try:
        items = await sealed_items(client, swarm)
    except (RedisError, OSError, TimeoutError) as exc:
        return Check(
            "key",
            Status.WARN,
            f"{key.message}; not compared with the swarm: could not read it ({one_line(exc)})",
        )
    if not items:
        return Check("key", key.status, f"{key.message}; nothing in Redis yet to compare", key.fix)
    refused: dict[str, list[str]] = {}
    for kind, whose, raw in items:
        reason = _open(codec, kind, whose, raw)
        if reason is not None:
            whom = refused.setdefault(reason, [])
            label = f"node {whose}" if kind == "heartbeat" else "log entries"
            if label not in whom:
                whom.append(label)
    for reason, (what, fix) in _MISMATCH.items():
        if reason in refused:
            return Check(
                "key",
                Status.FAIL,
                f"{key.message}; the swarm's data ({', '.join(refused[reason])}) is {what}",
                fix,
            )
    if refused:
        return Check(
            "key",
            Status.WARN,
            f"{key.message}; some of the swarm's data is damaged ({', '.join(sorted(refused))})",
        )
    return Check(
        "key",
        key.status,
        f"{key.message}; matches the swarm ({len(items)} items open with it)",
        key.fix,
    )


# -- clock ----------------------------------------------------------------------------------------


async def check_clock(client: Redis, clock: Callable[[], float] = time.time) -> Check:
    """This machine's clock against Redis's, which stamps heartbeats and log entries."""
    try:
        async with asyncio.timeout(TIMEOUT_S):
            before = clock()
            seconds, micros = await client.time()
            after = clock()
    except (RedisError, OSError, TimeoutError) as exc:
        return Check("clock", Status.WARN, f"could not read Redis TIME: {one_line(exc)}")
    skew = (int(seconds) + int(micros) / 1e6) - (before + after) / 2
    found = f"this clock is {abs(skew):.2f} s {'behind' if skew > 0 else 'ahead of'} Redis's"
    if abs(skew) > CLOCK_SKEW_LIMIT_S + (after - before):
        return Check(
            "clock",
            Status.FAIL,
            found + ": last-seen times and TLS checks go wrong",
            "synchronise the clock (timedatectl set-ntp true, or chrony / ntpd)",
        )
    return Check("clock", Status.OK, found)
