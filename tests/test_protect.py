"""The guard of protected files on its own: node signing keys, writers entries, which paths are
protected, and that only a listed writer's signature over that very file lets a change in."""

from __future__ import annotations

import dataclasses
import stat
from pathlib import Path

import pytest

from swarm.config import ConfigError, DaemonSettings, load_settings
from swarm.protect.guard import BAD_SIGNATURE, NOT_A_WRITER, UNSIGNED, Protection
from swarm.protect.keys import WriterKeyError, node_key, parse_writer, writer_entry
from swarm.wire import Envelope, Kind, decode, encode


def guard_pair(tmp_path: Path) -> tuple[Protection, Protection]:
    """`writer` is the only writer; `other` holds a key of its own that is not listed."""
    key_w, key_o = node_key(tmp_path / "w"), node_key(tmp_path / "o")
    writers = dict([parse_writer(writer_entry("w", key_w))])
    return Protection("w", writers=writers, key=key_w), Protection("o", writers=writers, key=key_o)


def update(path: str = "SOUL.md", sender: str = "w") -> Envelope:
    return Envelope("team", path, sender, Kind.UPDATE, b"\x01\x02\x03")


def test_the_node_key_is_created_once_private_and_kept(tmp_path: Path) -> None:
    first = node_key(tmp_path)
    assert stat.S_IMODE((tmp_path / "node-signing.key").stat().st_mode) == 0o600
    assert writer_entry("a", node_key(tmp_path)) == writer_entry("a", first)
    (tmp_path / "node-signing.key").write_bytes(b"short")
    with pytest.raises(WriterKeyError, match="not a node signing key"):
        node_key(tmp_path)


@pytest.mark.parametrize(
    ("entry", "problem"),
    [("nokey", "NODE:PUBLIC_KEY"), ("a:not base64!", "not base64"), ("a:AAAA", "32 bytes")],
)
def test_a_bad_writers_entry_is_one_line_naming_the_setting(entry: str, problem: str) -> None:
    with pytest.raises(ConfigError, match=f"invalid setting 'writers'.*{problem}") as caught:
        load_settings(DaemonSettings, {"dir": ".", "swarm": "team", "writers": (entry,)})
    assert "\n" not in str(caught.value)


def test_default_patterns_and_no_guard_without_writers(tmp_path: Path) -> None:
    writer, _other = guard_pair(tmp_path)
    for path in ("SOUL.md", "IDENTITY.md", "AGENTS.md", "soul.json", "safety/rules.md"):
        assert writer.protects(path), path
    for path in ("MEMORY.md", "memory/safety.md", "notes/safety/x.md"):
        assert not writer.protects(path), path
    off = Protection("o")
    assert not off.protects("SOUL.md") and off.is_writer and off.outgoing(update()) == update()


def test_only_a_listed_writers_signature_of_that_file_lets_a_change_in(tmp_path: Path) -> None:
    writer, other = guard_pair(tmp_path)
    signed = writer.outgoing(update())
    assert signed is not None and len(signed.signature) == 64
    assert other.admits(decode(encode(signed)))  # the signature travels in the envelope
    assert other.admits(update("MEMORY.md", "o"))  # unprotected: anyone, as before

    assert other.outgoing(update(sender="o")) is None  # a non-writer never sends one
    assert not writer.admits(update(sender="o"))
    forged = dataclasses.replace(signed, sender="o")
    assert not writer.admits(forged)
    moved = dataclasses.replace(signed, path="safety/rules.md")  # w's signature, another file
    assert not writer.admits(moved)
    tampered = dataclasses.replace(signed, payload=b"\x09")
    assert not writer.admits(tampered)
    assert not writer.admits(update("AGENTS.md"))  # the writer's name, no signature
    reasons = {(r["node"], r["path"]): r["reason"] for r in writer.report()}
    assert reasons == {
        ("o", "SOUL.md"): NOT_A_WRITER,
        ("w", "safety/rules.md"): BAD_SIGNATURE,
        ("w", "SOUL.md"): BAD_SIGNATURE,
        ("w", "AGENTS.md"): UNSIGNED,
    }


def test_a_node_whose_key_is_not_the_listed_one_is_not_a_writer(tmp_path: Path) -> None:
    key = node_key(tmp_path / "w")
    listed = dict([parse_writer(writer_entry("w", node_key(tmp_path / "elsewhere")))])
    impostor = Protection("w", writers=listed, key=key)
    assert not impostor.is_writer and impostor.refuses_local("SOUL.md")


def test_doctor_says_whether_this_node_is_the_writer_its_settings_list(tmp_path: Path) -> None:
    from swarm.doctor.writers import check_writers

    def check(writers: tuple[str, ...]) -> tuple[str, str]:
        settings = DaemonSettings(dir=tmp_path, swarm="team", node="a", writers=writers,
                                  state_dir=tmp_path / "state")  # fmt: skip
        found = check_writers(settings)
        return found.status.value, found.message

    assert check(())[0] == "ok"
    other = writer_entry("b", node_key(tmp_path / "b"))
    assert check((other,)) == ("ok", check((other,))[1]) and "not one of" in check((other,))[1]
    listed_elsewhere = writer_entry("a", node_key(tmp_path / "elsewhere"))
    assert check((listed_elsewhere,))[0] == "FAIL"  # no key in a's state folder
    assert not (tmp_path / "state" / "node-signing.key").exists()  # doctor creates nothing
    node_key(tmp_path / "state")
    status, message = check((listed_elsewhere,))
    assert status == "FAIL" and "another key" in message
    assert check((writer_entry("a", node_key(tmp_path / "state")), other)) == (
        "ok",
        "a is one of the 2 writers",
    )
