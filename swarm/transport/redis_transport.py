"""Redis transport: live pub/sub for speed, a stream for history, snapshots to keep it short.

Every publish is one Lua call that appends the envelope to the swarm log (XADD) and publishes
"<stream id> <envelope>" on the swarm channel, so a live receiver learns the log position of what
it got and both happen or neither does. Pub/sub loses messages while a subscriber is away; after
every reconnect `messages()` yields a gap marker and the node re-reads the log tail.

The log is only ever trimmed behind snapshots (`trim_log`), so snapshots + log tail is always the
whole history of the swarm.

The parts: the shared connection (`redis_connection.py`), the subscription (`redis_subscriber.py`),
the log with its snapshots and lease (`redis_log.py`), presence (`redis_presence.py`), and the Lua
scripts (`redis_lua.py`).
"""

from __future__ import annotations

from swarm.transport.redis_log import RedisLog
from swarm.transport.redis_presence import RedisPresence
from swarm.transport.redis_subscriber import RedisSubscriber


class RedisTransport(RedisSubscriber, RedisLog, RedisPresence):
    """One node's connection to one swarm on one Redis: `SwarmTransport` (transport/base.py)."""
