"""The envelope: what goes in comes out, and anything else is a WireError, never a crash."""

from __future__ import annotations

import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from swarm.wire import (
    MAX_PAYLOAD,
    MAX_STRING,
    WIRE_VERSION,
    Envelope,
    Kind,
    WireError,
    decode,
    encode,
)


def envelope(**changes: object) -> Envelope:
    fields: dict[str, object] = {
        "swarm": "team",
        "path": "memory/2026-11-25.md",
        "sender": "node-a",
        "kind": Kind.UPDATE,
        "payload": b"\x01\x02\x03",
    }
    fields.update(changes)
    return Envelope(**fields)  # type: ignore[arg-type]


def test_round_trip_keeps_every_field() -> None:
    env = envelope(path="mémoire/日記 🧠.md", sender="nœud-β", kind=Kind.STATE)
    decoded = decode(encode(env))
    assert decoded == env
    assert decoded.kind is Kind.STATE
    assert decoded.version == WIRE_VERSION


def test_round_trip_empty_payload_and_strings() -> None:
    env = envelope(path="", sender="", payload=b"", kind=Kind.SYNC_REQUEST)
    assert decode(encode(env)) == env


def test_round_trip_at_the_size_limits() -> None:
    env = envelope(path="p" * MAX_STRING, payload=b"\xff" * MAX_PAYLOAD)
    assert decode(encode(env)) == env


def test_decode_checks_the_swarm_when_asked() -> None:
    data = encode(envelope(swarm="team"))
    assert decode(data, swarm="team").swarm == "team"
    with pytest.raises(WireError, match="swarm 'team', not 'other'"):
        decode(data, swarm="other")


def test_encoding_is_compact() -> None:
    env = envelope(swarm="s", path="MEMORY.md", sender="n1", payload=b"x" * 10)
    assert len(encode(env)) == 5 + 2 * 3 + len("s") + len("MEMORY.md") + len("n1") + 4 + 10


@pytest.mark.parametrize(
    ("env", "message"),
    [
        (envelope(payload=b"x" * (MAX_PAYLOAD + 1)), "payload is"),
        (envelope(path="p" * (MAX_STRING + 1)), "path is"),
        (envelope(sender="\udcff"), "sender is not encodable"),
        (envelope(kind=9), "unknown envelope kind"),
        (envelope(version=2), "cannot encode wire version 2"),
    ],
)
def test_encode_refuses_what_decode_would_refuse(env: Envelope, message: str) -> None:
    with pytest.raises(WireError, match=message):
        encode(env)


VALID = encode(envelope())


def with_byte(data: bytes, index: int, value: int) -> bytes:
    return data[:index] + bytes([value]) + data[index + 1 :]


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"", "truncated envelope: header"),
        (b"XX" + VALID[2:], "not a swarm envelope"),
        (with_byte(VALID, 2, 2), "unsupported wire version 2"),
        (with_byte(VALID, 3, 0), "unknown envelope kind 0"),
        (with_byte(VALID, 3, 77), "unknown envelope kind 77"),
        (with_byte(VALID, 4, 1), "unsupported envelope flags 0x01"),
        (with_byte(VALID, 4, 4), "truncated envelope: signature needs 64 bytes"),
        (VALID[:-1], "truncated envelope: payload"),
        (VALID[:7], "truncated envelope: swarm"),
        (VALID + b"\x00", "1 trailing bytes"),
        # swarm "team" with an invalid UTF-8 byte in place of its first letter
        (with_byte(VALID, 7, 0xFF), "swarm is not valid UTF-8"),
        (
            VALID[: -(4 + 3)] + struct.pack(">I", MAX_PAYLOAD + 1),
            f"payload is {MAX_PAYLOAD + 1} bytes, the limit is {MAX_PAYLOAD}",
        ),
    ],
)
def test_decode_rejects_malformed_envelopes(data: bytes, message: str) -> None:
    with pytest.raises(WireError, match=message) as caught:
        decode(data)
    assert "\n" not in str(caught.value)


def test_wire_error_is_a_value_error() -> None:
    assert issubclass(WireError, ValueError)


@given(st.binary(max_size=512))
@settings(max_examples=500)
def test_decode_of_random_bytes_only_raises_wire_error(data: bytes) -> None:
    try:
        env = decode(data)
    except WireError:
        return
    assert encode(env) == data  # anything accepted is canonical


envelopes = st.builds(
    Envelope,
    swarm=st.text(max_size=20),
    path=st.text(max_size=40),
    sender=st.text(max_size=20),
    kind=st.sampled_from(Kind),
    payload=st.binary(max_size=64),
)


@given(envelopes)
def test_round_trip_of_any_envelope(env: Envelope) -> None:
    assert decode(encode(env)) == env


@given(
    envelopes,
    st.lists(st.tuples(st.integers(min_value=0), st.integers(0, 255)), min_size=1, max_size=4),
    st.integers(min_value=0),
    st.binary(max_size=8),
)
def test_decode_of_mutated_envelopes_only_raises_wire_error(
    env: Envelope, flips: list[tuple[int, int]], cut: int, tail: bytes
) -> None:
    data = bytearray(encode(env))
    for index, value in flips:
        data[index % len(data)] = value
    mutated = bytes(data[: cut % (len(data) + 1)]) + tail
    try:
        decoded = decode(mutated)
    except WireError:
        return
    assert encode(decoded) == mutated


def test_a_signed_envelope_round_trips_with_its_signature() -> None:
    from swarm.wire import signed_bytes

    env = Envelope("team", "SOUL.md", "node-a", Kind.UPDATE, b"\x01\x02", signature=b"s" * 64)
    back = decode(encode(env))
    assert back == env
    # The signed bytes name the file: a signature for SOUL.md says nothing of another file.
    other = Envelope("team", "MEMORY.md", "node-a", Kind.UPDATE, b"\x01\x02")
    assert signed_bytes(env) != signed_bytes(other)
