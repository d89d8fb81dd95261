"""Presence on Redis: each node's heartbeat summary in one hash, stamped with the server's clock,
and its per-file facts in another, written only when they change."""

from __future__ import annotations

import asyncio
import json
from typing import Any

from redis.exceptions import ResponseError

from swarm.transport import codec
from swarm.transport.base import NodeRecord
from swarm.transport.codec import Rejected
from swarm.transport.redis_connection import RedisConnection, as_bytes

# A live heartbeat that cannot be opened for one of these: its node holds another swarm key.
_KEY_REASONS = (codec.NO_KEY, codec.WRONG_KEY, codec.UNAUTHENTICATED)


def _json(value: object) -> str:
    return json.dumps(value, separators=(",", ":"), allow_nan=False)


class RedisPresence(RedisConnection):
    """`Presence` on two Redis hashes."""

    async def heartbeat(self, info: dict[str, Any], ttl_s: float) -> None:
        """Announce this node for `ttl_s` seconds (stamped with the Redis server's clock).

        A `files` mapping (per-file facts) is stored apart from the summary, and only when it
        changed: every node reads every summary each beat, per-file facts only of a peer whose
        summary digest differs from its own."""
        if ttl_s <= 0:
            raise ValueError(f"heartbeat ttl must be positive, got {ttl_s} s")
        files = info.get("files")
        if isinstance(files, dict):
            info = {key: value for key, value in info.items() if key != "files"}
        try:
            info_json = _json(self.codec.seal_info(self.node, info))
            if not isinstance(files, dict):
                files_json = ""
            elif files is self._files_obj and self._files_json is not None:
                files_json = self._files_json  # the very same facts as last time: not re-encoded
            else:
                files_json = _json(self.codec.seal_info(self.node, {"files": files}))
        except (TypeError, ValueError) as exc:
            raise ValueError(f"heartbeat info is not JSON: {exc}") from None
        self._files_obj, self._files_json = files, files_json
        send = files_json if files_json != self._files_sent else ""
        with self._failures("heartbeat"):
            await self._resolve()
            async with asyncio.timeout(self._op_timeout):
                keys = [self.keys.nodes, self.keys.files]
                args: list[str | int] = [self.node, info_json, int(ttl_s * 1000), send]
                try:
                    stored = await self._heartbeat_script(keys=keys, args=args)
                except ResponseError as exc:
                    if "compil" not in str(exc).lower():  # a Redis before 7: no script flags
                        raise
                    self._heartbeat_script = self._heartbeat_fallback
                    stored = await self._heartbeat_script(keys=keys, args=args)
        self._files_sent = files_json if stored else None  # lost by Redis: send them again

    async def presence(self) -> dict[str, dict[str, Any]]:
        """node -> the summary of its last heartbeat, for nodes whose heartbeat has not expired
        (per-file facts: `files_of`)."""
        now_ms, records = await self.node_records(what="presence", live_only=True)
        return {r.node: r.info for r in records if r.seen_ms + r.ttl_ms >= now_ms}

    async def files_of(self, nodes: list[str]) -> dict[str, dict[str, Any]]:
        """node -> the per-file facts of its last heartbeat (nodes without any are left out)."""
        if not nodes:
            return {}
        with self._failures("files_of"):
            await self._resolve()
            async with asyncio.timeout(self._op_timeout):
                raw = await self._client.hmget(self.keys.files, nodes)
        found: dict[str, dict[str, Any]] = {}
        for node, value in zip(nodes, raw, strict=True):
            if value is None:
                continue
            try:
                files = self.codec.open_info(node, json.loads(value)).get("files")
            except Rejected as exc:
                self._reject(exc)
                continue
            except (ValueError, TypeError):
                self._reject(Rejected(codec.MALFORMED_PRESENCE, "undecodable file facts"))
                continue
            if isinstance(files, dict):
                found[node] = files
        return found

    async def forget_nodes(self, silent_for_ms: int) -> list[str]:
        """Drop the heartbeats of nodes silent for longer than `silent_for_ms` (nodes that left
        the swarm for good), so `swarm status` does not list them as offline forever."""
        now_ms, records = await self.node_records()
        gone = [r.node for r in records if now_ms - r.seen_ms > silent_for_ms]
        if gone:
            with self._failures("forget_nodes"):
                await self._resolve()
                async with asyncio.timeout(self._op_timeout):
                    await self._client.hdel(self.keys.nodes, *gone)
                    await self._client.hdel(self.keys.files, *gone)
        return gone

    async def node_records(
        self, *, what: str = "node_records", live_only: bool = False
    ) -> tuple[int, list[NodeRecord]]:
        """The server's time (ms) and every node's last heartbeat summary, expired ones
        included unless `live_only`; undecodable records are counted in `rejected` and
        skipped, and live ones sealed with another key are listed in `unreadable_nodes`."""
        with self._failures(what):
            await self._resolve()
            async with asyncio.timeout(self._op_timeout):
                seconds, micros = await self._client.time()
                raw_records = await self._client.hgetall(self.keys.nodes)
        now_ms = int(seconds) * 1000 + int(micros) // 1000
        records: list[NodeRecord] = []
        unreadable: dict[str, tuple[str, int]] = {}
        for raw_node, raw in raw_records.items():
            try:
                record = json.loads(raw)
                node = as_bytes(raw_node).decode("utf-8")
                seen_ms, ttl_ms = int(record["seen_ms"]), int(record["ttl_ms"])
                if live_only and seen_ms + ttl_ms < now_ms:
                    continue  # expired: not opened, not counted (an old key may have sealed it)
                info = self.codec.open_info(node, record["info"])
                records.append(NodeRecord(node, seen_ms, ttl_ms, info))
            except Rejected as exc:
                self._reject(exc)
                if exc.reason in _KEY_REASONS and seen_ms + ttl_ms >= now_ms:
                    unreadable[node] = (exc.reason, seen_ms)
            except (ValueError, KeyError, TypeError):
                self._reject(Rejected(codec.MALFORMED_PRESENCE, "undecodable heartbeat"))
        self.unreadable_nodes = unreadable
        return now_ms, sorted(records, key=lambda r: r.node)

    async def node_records_with_files(self) -> tuple[int, list[NodeRecord]]:
        """`node_records` with each summary's per-file facts put back under `files` (what
        `swarm status` shows)."""
        now_ms, records = await self.node_records()
        files = await self.files_of([r.node for r in records])
        for record in records:
            if record.node in files:
                record.info["files"] = files[record.node]
        return now_ms, records
