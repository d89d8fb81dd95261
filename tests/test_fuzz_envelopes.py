"""Fuzz: random and mutated envelopes through the real receive path never crash and never apply.

The path is the one a live message takes: `RedisTransport._parse_live` (stream ids, codec,
authentication, replay window) and, for whatever gets through, `Node.apply_remote` on a real node
with a real store and memory folder. A seeded loop keeps every run identical.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from pathlib import Path

import pytest

from swarm.node import Node, NodeOptions
from swarm.store import Store
from swarm.transport.codec import Codec, PlainCodec
from swarm.transport.keyring import Keyring, generate_key
from swarm.transport.redis_transport import RedisTransport
from swarm.transport.sealed import SealedCodec
from swarm.wire import Envelope, Kind

SWARM = "fuzz"
SEED = 20261125
CASES = 12_000
PATHS = ("MEMORY.md", "memory/2026-11-25.md")
HOSTILE_PATHS = ("../escape.md", "/etc/passwd.md", ".swarm/state.md", "memory/\x00.md", "x.txt")


async def make_node(root: Path, texts: dict[str, str]) -> Node:
    root.mkdir(parents=True)
    for rel, text in texts.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(text, encoding="utf-8")
    state = root.parent / f"{root.name}-state"
    node = Node(NodeOptions(root=root, state_dir=state), Store(state))
    node.load()
    for rel in texts:
        await node.ingest(rel)
    return node


def snapshot(node: Node) -> dict[str, tuple[str, bool]]:
    return {path: (doc.content, doc.exists) for path, doc in node.docs.items()}


def mutate(rng: random.Random, data: bytes) -> bytes:
    """`data` changed in 1-4 places (never returned unchanged)."""
    while (changed := _mutate_once(rng, data)) == data:
        pass
    return changed


def _mutate_once(rng: random.Random, data: bytes) -> bytes:
    buf = bytearray(data)
    for _ in range(rng.randint(1, 4)):
        op = rng.randrange(6)
        at = rng.randrange(len(buf) + 1)
        if op == 0 and buf:  # flip bits
            buf[min(at, len(buf) - 1)] ^= 1 << rng.randrange(8)
        elif op == 1:  # truncate
            del buf[at:]
        elif op == 2:  # insert random bytes
            buf[at:at] = rng.randbytes(rng.randint(1, 8))
        elif op == 3 and buf:  # delete a range
            del buf[at : at + rng.randint(1, 8)]
        elif op == 4 and buf:  # overwrite with a boundary value
            buf[min(at, len(buf) - 1)] = rng.choice((0x00, 0x01, 0x7F, 0x80, 0xFF))
        else:  # duplicate a slice (lengths that disagree with the content)
            buf[at:at] = buf[at : at + rng.randint(1, 16)]
    return bytes(buf)


def cases(rng: random.Random, sealer: Codec, foreign: bytes, own: bytes) -> Iterator[bytes]:
    """Envelope bytes an attacker with access to the Redis could publish."""
    genuine = [
        sealer.seal(Envelope(SWARM, path, "peer", kind, payload))
        for path, payload in ((PATHS[0], own), (PATHS[1], b"\x00\x00"))
        for kind in (Kind.UPDATE, Kind.STATE)
    ]
    plain_foreign = PlainCodec(SWARM).seal(Envelope(SWARM, PATHS[0], "peer", Kind.UPDATE, foreign))
    for index in range(CASES):
        family = index % 6
        if family == 0:  # random bytes, sometimes behind a plausible header
            prefix = rng.choice((b"", b"SW", b"SW\x01\x01\x03", b"SW\x01\x01\x00"))
            yield prefix + rng.randbytes(rng.randint(0, 300))
        elif family in (1, 2):  # mutated genuine sealed envelopes
            yield mutate(rng, rng.choice(genuine))
        elif family == 3:  # a valid seal around a malformed CRDT payload
            kind = rng.choice((Kind.UPDATE, Kind.STATE))
            if rng.random() < 0.5:  # random bytes as an update of any file
                path, payload = rng.choice(PATHS), rng.randbytes(rng.randint(0, 64))
            else:  # a cut-off copy of what the file already holds
                path, payload = PATHS[0], own[: rng.randrange(len(own))]
            yield sealer.seal(Envelope(SWARM, path, "peer", kind, payload))
        elif family == 4:  # a valid seal around a path this node must refuse
            path = rng.choice(HOSTILE_PATHS)
            yield sealer.seal(Envelope(SWARM, path, "peer", Kind.UPDATE, foreign))
        else:  # an unsealed, well-formed edit by someone without the key, mutated or not
            yield plain_foreign if rng.random() < 0.2 else mutate(rng, plain_foreign)


async def test_ten_thousand_hostile_envelopes_change_nothing(tmp_path: Path) -> None:
    rng = random.Random(SEED)
    node = await make_node(
        tmp_path / "memory", {PATHS[0]: "# Memory\n- keep me\n", PATHS[1]: "- today\n"}
    )
    peer = await make_node(tmp_path / "peer", {PATHS[0]: "- an injected instruction\n"})
    foreign = peer.docs[PATHS[0]].encode_state()  # a real edit: would apply if it got in
    own = node.docs[PATHS[0]].encode_state()
    keyring = Keyring((generate_key(),))
    transport = RedisTransport(
        "redis://127.0.0.1:1/0", SWARM, "me", codec=SealedCodec(keyring, SWARM)
    )
    sealer = SealedCodec(keyring, SWARM)
    before = snapshot(node)
    files_before = {rel: (node.root / rel).read_bytes() for rel in PATHS}
    fed = reached_node = 0
    for data in cases(rng, sealer, foreign, own):
        fed += 1
        message = transport._parse_live(b"1-0 2-0 " + data)
        if message is None:
            continue
        reached_node += 1
        env = message.envelope
        with node.store.batch():
            node.apply_remote(env.path, env.payload)
    assert fed >= 10_000
    assert snapshot(node) == before, "a hostile envelope changed a document"
    assert {rel: (node.root / rel).read_bytes() for rel in PATHS} == files_before
    assert set(node.docs) == set(PATHS)
    # Both layers were exercised: most inputs stop at the codec, sealed garbage at the node.
    assert transport.rejected >= fed - reached_node
    assert reached_node >= CASES // 6
    assert transport.rejected_by_reason.keys() >= {"forged", "unauthenticated", "garbage"}
    await transport.close()
    node.store.close()
    peer.store.close()


@pytest.mark.parametrize("keyed", [False, True])
def test_random_bytes_never_escape_the_codec(keyed: bool) -> None:
    """Whatever the bytes, decoding ends in a message or a counted rejection, never a crash."""
    rng = random.Random(SEED + keyed)
    codec = SealedCodec(Keyring((generate_key(),)), SWARM) if keyed else None
    transport = RedisTransport("redis://127.0.0.1:1/0", SWARM, "me", codec=codec)
    for _ in range(5_000):
        data = rng.randbytes(rng.randint(0, 64))
        assert transport._parse_live(data) is None or keyed is False
    assert transport.rejected == sum(transport.rejected_by_reason.values())


async def test_mutated_updates_from_a_keyed_peer_never_crash_the_node(tmp_path: Path) -> None:
    """A peer holding the key can still send a broken CRDT update (a bug, a bad disk): the node
    rejects or applies it, and never raises."""
    rng = random.Random(SEED + 7)
    node = await make_node(tmp_path / "memory", {PATHS[0]: "# Memory\n- keep me\n"})
    own = node.docs[PATHS[0]].encode_state()
    keyring = Keyring((generate_key(),))
    transport = RedisTransport(
        "redis://127.0.0.1:1/0", SWARM, "me", codec=SealedCodec(keyring, SWARM)
    )
    sealer = SealedCodec(keyring, SWARM)
    for _ in range(3_000):
        sealed = sealer.seal(Envelope(SWARM, PATHS[0], "peer", Kind.UPDATE, mutate(rng, own)))
        message = transport._parse_live(b"1-0 2-0 " + sealed)
        assert message is not None
        with node.store.batch():
            node.apply_remote(message.envelope.path, message.envelope.payload)
    await transport.close()
    node.store.close()
