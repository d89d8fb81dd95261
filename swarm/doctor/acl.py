"""May the Redis user run every command the daemon runs, on the swarm's keys and channel?

The list below is the ACL of docs/security.md (a test keeps the two equal). How it is checked,
best first, without running any of the commands:

- Redis 7+: a Lua script asks `redis.acl_check_cmd` for each command with its real keys and
  channel. It needs only EVAL, which the daemon needs anyway.
- Redis 7+ with EVAL refused: `ACL DRYRUN` for each command, if this user may run it.
- Redis 6: `ACL WHOAMI` + `ACL GETUSER`: a user with every command, key and channel is fine;
  one with narrower rules cannot be checked command by command (a warning says so).
"""

from __future__ import annotations

from typing import Any

from redis.asyncio import Redis
from redis.exceptions import NoPermissionError, ResponseError

from swarm.doctor.checks import Check, Status, one_line
from swarm.transport.redis_keys import SwarmKeys

_SHA = "0" * 40
_ACL_DOC = "docs/security.md lists the whole ACL"

# For each entry of ARGV: a count, then the command and its arguments. Returns, per entry, 1 if
# allowed, 0 if refused, -1 if the command is unknown to this server.
_CHECK_LUA = """
if redis.acl_check_cmd == nil then return 'unsupported' end
local result, i = {}, 1
while i <= #ARGV do
  local n = tonumber(ARGV[i])
  local ok, allowed = pcall(redis.acl_check_cmd, unpack(ARGV, i + 1, i + n))
  if not ok then table.insert(result, -1)
  elseif allowed then table.insert(result, 1)
  else table.insert(result, 0) end
  i = i + n + 1
end
return result
"""


def needed_commands(swarm: str, cluster: bool = False) -> list[tuple[str, tuple[str, ...]]]:
    """(ACL name, a call as the daemon makes it) for every command the daemon runs; on a
    cluster also those of docs/deploy.md (the slot map, sharded pub/sub)."""
    keys = SwarmKeys.for_swarm(swarm)
    calls: list[tuple[str, tuple[str, ...]]] = [
        ("ping", ("PING",)),
        ("client|setname", ("CLIENT", "SETNAME", "swarm:doctor")),
        ("subscribe", ("SUBSCRIBE", keys.bus)),
        ("unsubscribe", ("UNSUBSCRIBE", keys.bus)),
        ("publish", ("PUBLISH", keys.bus, "x")),
        ("eval", ("EVAL", "return 1", "0")),
        ("evalsha", ("EVALSHA", _SHA, "0")),
        ("script|load", ("SCRIPT", "LOAD", "return 1")),
        ("script|exists", ("SCRIPT", "EXISTS", _SHA)),
        ("xadd", ("XADD", keys.log, "*", "e", "x")),
        ("xrange", ("XRANGE", keys.log, "-", "+")),
        ("xrevrange", ("XREVRANGE", keys.log, "+", "-")),
        ("xlen", ("XLEN", keys.log)),
        ("xinfo|stream", ("XINFO", "STREAM", keys.log)),
        ("xtrim", ("XTRIM", keys.log, "MAXLEN", "0")),
        ("exists", ("EXISTS", keys.log)),
        ("time", ("TIME",)),
        ("cluster|info", ("CLUSTER", "INFO")),  # is it a cluster node? (asked once)
    ]
    if cluster:
        calls += [
            ("cluster|slots", ("CLUSTER", "SLOTS")),
            ("cluster|shards", ("CLUSTER", "SHARDS")),
            ("command", ("COMMAND",)),
            ("ssubscribe", ("SSUBSCRIBE", keys.bus)),
            ("sunsubscribe", ("SUNSUBSCRIBE", keys.bus)),
            ("spublish", ("SPUBLISH", keys.bus, "x")),
        ]
    for key in (keys.snap, keys.nodes, keys.files):
        calls += [
            ("hset", ("HSET", key, "f", "v")),
            ("hget", ("HGET", key, "f")),
            ("hmget", ("HMGET", key, "f")),
            ("hexists", ("HEXISTS", key, "f")),
            ("hgetall", ("HGETALL", key)),
            ("hdel", ("HDEL", key, "f")),
        ]
    for key in (keys.lease, keys.epoch):
        calls += [
            ("set", ("SET", key, "v")),
            ("get", ("GET", key)),
            ("del", ("DEL", key)),
            ("pexpire", ("PEXPIRE", key, "1000")),
            ("exists", ("EXISTS", key)),
        ]
    return calls


def _refused_check(user: str, swarm: str, refused: list[tuple[str, tuple[str, ...]]]) -> Check:
    if not refused:
        return Check(
            "acl", Status.OK, f"user {user} may run every command the daemon needs on swarm {swarm}"
        )
    patterns = f"~swarm:{{{swarm}}}:* &swarm:{{{swarm}}}:bus"
    # Every command that names a key or the channel refused, and only those: the commands are
    # granted, the names are not. (Redis checks no channel rule for UNSUBSCRIBE.)
    on_swarm = {
        name for name, call in needed_commands(swarm) if any("{" in arg for arg in call[1:])
    } - {"unsubscribe"}
    if {name for name, _ in refused} == on_swarm:
        return Check(
            "acl",
            Status.FAIL,
            f"user {user} may not use the keys and channel of swarm {swarm}",
            f"ACL SETUSER {user} {patterns} ({_ACL_DOC})",
        )
    names = sorted({name for name, _ in refused})
    grant = " ".join(f"+{name}" for name in names)
    return Check(
        "acl",
        Status.FAIL,
        f"user {user} may not run {', '.join(names)}",
        f"ACL SETUSER {user} {grant} {patterns} ({_ACL_DOC})",
    )


async def check_acl(client: Redis, user: str, swarm: str, cluster: bool = False) -> Check:
    calls = needed_commands(swarm, cluster)
    argv: list[str] = []
    for _, call in calls:
        argv += [str(len(call)), *call]
    try:
        reply = await client.eval(_CHECK_LUA, 0, *argv)
    except NoPermissionError:
        return await _dry_run(client, user, swarm, calls)
    except ResponseError as exc:
        return Check("acl", Status.WARN, f"could not check permissions: {one_line(exc)}")
    if isinstance(reply, bytes | str):  # Redis 6: no acl_check_cmd
        return await _by_user_rules(client, user)
    unknown = [name for (name, _), allowed in zip(calls, reply, strict=True) if allowed == -1]
    if unknown:
        return Check(
            "acl",
            Status.FAIL,
            f"this Redis does not know {', '.join(sorted(set(unknown)))}",
            "use Redis 6.2 or later",
        )
    refused = [call for call, allowed in zip(calls, reply, strict=True) if allowed == 0]
    return _refused_check(user, swarm, refused)


async def _dry_run(
    client: Redis, user: str, swarm: str, calls: list[tuple[str, tuple[str, ...]]]
) -> Check:
    """EVAL is refused: that alone breaks the daemon. `ACL DRYRUN` (admin rights) tells the rest."""
    refused: list[tuple[str, tuple[str, ...]]] = []
    try:
        for name, call in calls:
            reply = await client.execute_command("ACL", "DRYRUN", user, *call)  # type: ignore[no-untyped-call]
            if reply not in (b"OK", "OK", True):
                refused.append((name, call))
    except ResponseError:  # no ACL rights either (or Redis 6)
        return Check(
            "acl",
            Status.FAIL,
            f"user {user} may not run eval (the daemon needs it); the other commands could"
            " not be checked without ACL rights",
            f"ACL SETUSER {user} +eval +evalsha +script|load +script|exists ({_ACL_DOC})",
        )
    return _refused_check(user, swarm, refused)


async def _by_user_rules(client: Redis, user: str) -> Check:
    try:
        me = await client.execute_command("ACL", "WHOAMI")  # type: ignore[no-untyped-call]
        rules = await client.execute_command("ACL", "GETUSER", _text(me))  # type: ignore[no-untyped-call]
    except ResponseError:
        return Check(
            "acl",
            Status.WARN,
            f"not checked: Redis before 7 cannot test commands one by one, and user {user} may"
            " not read its ACL rules; compare them with docs/security.md",
        )
    return judge_user_rules(_text(me), rules)


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def judge_user_rules(user: str, rules: Any) -> Check:
    """The verdict on an `ACL GETUSER` reply (Redis 6: flat [name, value, ...] pairs)."""
    if isinstance(rules, list):
        rules = dict(zip(rules[::2], rules[1::2], strict=False))
    fields = {_text(k): v for k, v in (rules or {}).items()}
    flags = {_text(flag) for flag in fields.get("flags") or []}
    commands = _text(fields.get("commands") or "")
    keys = [_text(k) for k in fields.get("keys") or []]
    channels = [_text(c) for c in fields.get("channels") or []]
    every_command = "allcommands" in flags or commands.startswith("+@all")
    every_key = "allkeys" in flags or "*" in keys or "~*" in keys
    every_channel = "allchannels" in flags or "*" in channels or "&*" in channels
    if every_command and every_key and every_channel:
        return Check("acl", Status.OK, f"user {user} may run every command on every key")
    return Check(
        "acl",
        Status.WARN,
        f"not checked: user {user} has narrower rules ({commands or 'no commands'}) and Redis"
        " before 7 cannot test them command by command; compare them with docs/security.md",
    )
