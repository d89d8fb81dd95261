"""The swarm key and sealed envelopes: key files, round trips, tampering, wrong keys, rotation."""

from __future__ import annotations

import base64
import logging
import stat
from pathlib import Path

import pytest
from click.testing import CliRunner

from swarm.cli import main
from swarm.config import ConfigError, DaemonSettings, load_settings
from swarm.transport import codec as reasons
from swarm.transport.codec import PlainCodec, Rejected, ReplayGuard, snapshot_context
from swarm.transport.keyring import (
    KEY_BYTES,
    KeyFileError,
    Keyring,
    format_key,
    generate_key,
    read_key_file,
)
from swarm.transport.rejects import RejectLog
from swarm.transport.sealed import SealedCodec, codec_from_settings
from swarm.wire import Envelope, Kind, encode

SECRET = "- Alice's bank PIN is 4711 and she sees Dr. Who on Tuesdays"
PATH = "memory/private-health-notes.md"


def envelope(payload: str = SECRET, path: str = PATH, sender: str = "cloud") -> Envelope:
    return Envelope("agent", path, sender, Kind.UPDATE, payload.encode())


def codec(*keys: bytes, encrypt: bool = True, swarm: str = "agent") -> SealedCodec:
    return SealedCodec(Keyring(keys), swarm, encrypt=encrypt)


# -- key files -----------------------------------------------------------------------------


def test_keygen_writes_an_owner_only_key_and_never_overwrites(tmp_path: Path) -> None:
    path = tmp_path / "swarm.key"
    runner = CliRunner()
    first = runner.invoke(main, ["keygen", str(path)])
    assert first.exit_code == 0, first.output
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    (key,) = read_key_file(path)
    assert len(key) == KEY_BYTES
    assert "key id" in first.output

    second = runner.invoke(main, ["keygen", str(path)])
    assert second.exit_code == 2
    assert "refusing to overwrite" in second.output
    assert read_key_file(path) == (key,)  # the existing key is untouched


def test_keygen_into_a_missing_folder_is_a_one_line_error(tmp_path: Path) -> None:
    result = CliRunner().invoke(main, ["keygen", str(tmp_path / "no" / "such" / "k")])
    assert result.exit_code == 2
    assert len(result.output.strip().splitlines()) == 1
    assert "cannot create key file" in result.output


@pytest.mark.parametrize(
    ("content", "problem"),
    [
        ("not base64 at all!\n", "is not base64"),
        (base64.b64encode(b"short").decode() + "\n", "is 5 bytes"),
        ("# only a comment\n\n", "holds no key"),
        (b"\xff\xfe garbage".decode("latin-1"), "not a base64 text file"),
    ],
)
def test_a_bad_key_file_is_a_one_line_error(tmp_path: Path, content: str, problem: str) -> None:
    path = tmp_path / "swarm.key"
    path.write_bytes(content.encode("latin-1"))
    with pytest.raises(KeyFileError) as caught:
        read_key_file(path)
    assert problem in str(caught.value)
    assert "\n" not in str(caught.value)


def test_a_missing_key_file_stops_the_daemon_with_one_line(tmp_path: Path) -> None:
    missing = tmp_path / "nope.key"
    result = CliRunner().invoke(
        main,
        ["daemon", "--dir", str(tmp_path), "--swarm", "agent", "--http", "0"],
        env={"SWARM_KEY_FILE": str(missing), "SWARM_REDIS_URL": "redis://127.0.0.1:1/0"},
    )
    assert result.exit_code == 2
    assert result.output.strip() == f"swarm: key file {missing} does not exist"
    assert not (tmp_path / ".swarm").exists()  # nothing was created before the key was checked


def test_key_file_lists_current_key_first_then_accepted_ones(tmp_path: Path) -> None:
    new, old = generate_key(), generate_key()
    path = tmp_path / "swarm.key"
    path.write_text(f"# rotated today\n{format_key(new)}\n\n{format_key(old)}\n")
    assert read_key_file(path) == (new, old)
    assert Keyring.load(key_text=f"{format_key(new)},{format_key(old)}") == Keyring((new, old))


def test_settings_take_the_key_from_the_environment_and_refuse_two_sources(
    tmp_path: Path,
) -> None:
    key = generate_key()
    env = {"SWARM_KEY": format_key(key), "SWARM_NAME": "agent", "SWARM_DIR": str(tmp_path)}
    settings = load_settings(DaemonSettings, {}, environ=env)
    sealed = codec_from_settings(settings)
    assert isinstance(sealed, SealedCodec)
    assert codec(key).open(sealed.seal(envelope())).envelope == envelope()
    assert format_key(key) not in repr(settings)  # the secret never shows in logs

    with pytest.raises(ConfigError, match="both set"):
        load_settings(DaemonSettings, {}, environ={**env, "SWARM_KEY_FILE": str(tmp_path / "k")})
    plain = load_settings(DaemonSettings, {}, environ={"SWARM_NAME": "a", "SWARM_DIR": "."})
    assert isinstance(codec_from_settings(plain), PlainCodec)


def test_a_ca_file_needs_tls(tmp_path: Path) -> None:
    env = {"SWARM_NAME": "a", "SWARM_DIR": ".", "SWARM_REDIS_CA_FILE": str(tmp_path / "ca.pem")}
    with pytest.raises(ConfigError, match="rediss://"):
        load_settings(DaemonSettings, {}, environ=env)


# -- sealing -------------------------------------------------------------------------------


@pytest.mark.parametrize("encrypt", [True, False])
def test_seal_open_round_trip(encrypt: bool) -> None:
    key = generate_key()
    sealed = codec(key, encrypt=encrypt).seal(envelope())
    opened = codec(key).open(sealed)
    assert opened.envelope == envelope()
    assert opened.nonce is not None and len(opened.nonce) == 12
    if encrypt:
        assert SECRET.encode() not in sealed
        assert PATH.encode() not in sealed
    else:
        assert SECRET.encode() in sealed  # authenticate-only: readable, but not forgeable


def test_each_seal_uses_a_fresh_nonce() -> None:
    sealer = codec(generate_key())
    assert sealer.seal(envelope()) != sealer.seal(envelope())


@pytest.mark.parametrize("encrypt", [True, False])
def test_changing_any_byte_is_rejected(encrypt: bool) -> None:
    key = generate_key()
    sealed = codec(key, encrypt=encrypt).seal(envelope("short note", "MEMORY.md"))
    opener = codec(key)
    for index in range(len(sealed)):
        for flip in (0x01, 0x80):
            tampered = bytearray(sealed)
            tampered[index] ^= flip
            with pytest.raises(Rejected):
                opener.open(bytes(tampered))
    for cut in range(len(sealed)):
        with pytest.raises(Rejected):
            opener.open(sealed[:cut])
    with pytest.raises(Rejected):
        opener.open(sealed + b"\x00")


def test_wrong_key_and_wrong_swarm_are_rejected() -> None:
    key = generate_key()
    sealed = codec(key).seal(envelope())
    with pytest.raises(Rejected) as wrong_key:
        codec(generate_key()).open(sealed)
    assert wrong_key.value.reason == reasons.WRONG_KEY
    with pytest.raises(Rejected) as other_swarm:
        codec(key, swarm="other-agent").open(sealed)
    assert other_swarm.value.reason == reasons.FORGED


def test_plain_envelopes_are_refused_when_a_key_is_set_and_sealed_ones_without() -> None:
    key = generate_key()
    with pytest.raises(Rejected) as plain:
        codec(key).open(PlainCodec("agent").seal(envelope()))
    assert plain.value.reason == reasons.UNAUTHENTICATED
    assert plain.value.sender == "cloud"
    with pytest.raises(Rejected) as keyless:
        PlainCodec("agent").open(codec(key).seal(envelope()))
    assert keyless.value.reason == reasons.NO_KEY


def test_a_sealed_item_cannot_be_moved_to_another_context() -> None:
    key = generate_key()
    sealer = codec(key)
    snap = sealer.seal(envelope(), snapshot_context("h:aa", "5-0"))
    assert sealer.open(snap, snapshot_context("h:aa", "5-0")).envelope == envelope()
    for context in (snapshot_context("h:aa", "9-0"), snapshot_context("h:bb", "5-0")):
        with pytest.raises(Rejected):
            sealer.open(snap, context)
    with pytest.raises(Rejected):
        sealer.open(snap)  # a snapshot replayed into the log


def test_path_fields_are_keyed_hashes_with_encryption() -> None:
    key = generate_key()
    field = codec(key).path_field(PATH)
    assert PATH not in field and "private" not in field
    assert field == codec(key).path_field(PATH)  # every node names a file alike
    assert field != codec(generate_key()).path_field(PATH)
    assert codec(key, encrypt=False).path_field(PATH) == PATH


def test_presence_info_is_sealed_and_bound_to_its_node() -> None:
    key = generate_key()
    info = {"role": "cloud", "files": {PATH: {"sv": "AA=="}}}
    sealed = codec(key).seal_info("cloud", info)
    assert PATH not in str(sealed)
    assert codec(key).open_info("cloud", sealed) == info
    with pytest.raises(Rejected):
        codec(key).open_info("local", sealed)  # copied to another node's field
    with pytest.raises(Rejected) as plain:
        codec(key).open_info("cloud", info)
    assert plain.value.reason == reasons.UNAUTHENTICATED


# -- rotation ------------------------------------------------------------------------------


def test_rotation_accepts_old_and_new_until_the_old_key_is_removed() -> None:
    old, new = generate_key(), generate_key()
    from_old_node = codec(old).seal(envelope("sealed before the switch"))
    from_new_node = codec(new, old).seal(envelope("sealed after the switch"))

    during = codec(new, old)  # step 2 of the rotation: new current, old still accepted
    assert during.open(from_old_node).envelope.payload == b"sealed before the switch"
    assert during.open(from_new_node).envelope.payload == b"sealed after the switch"
    assert codec(old, new).open(from_new_node).envelope.payload == b"sealed after the switch"

    after = codec(new)  # step 3: old key removed
    assert after.open(from_new_node).envelope.payload == b"sealed after the switch"
    with pytest.raises(Rejected) as rejected:
        after.open(from_old_node)
    assert rejected.value.reason == reasons.WRONG_KEY


# -- replay window and rate-limited logging ------------------------------------------------


def test_replay_guard_is_per_sender_and_bounded() -> None:
    guard = ReplayGuard(per_sender=3, senders=2)
    assert guard.fresh("a", b"1") and not guard.fresh("a", b"1")
    assert guard.fresh("b", b"1")  # another sender's nonce space
    for nonce in (b"2", b"3", b"4"):
        assert guard.fresh("a", nonce)
    assert guard.fresh("a", b"1")  # fell out of the window
    assert guard.fresh("c", b"9")  # evicts the least recent sender ("b")
    assert guard.fresh("b", b"1")


def test_reject_log_counts_everything_and_logs_once_per_sender_per_interval(
    caplog: pytest.LogCaptureFixture,
) -> None:
    now = [100.0]
    rejects = RejectLog(logging.getLogger("test.rejects"), interval_s=10, clock=lambda: now[0])
    with caplog.at_level(logging.WARNING, logger="test.rejects"):
        for _ in range(50):
            rejects.reject(reasons.FORGED, "mallory", "authentication failed")
        rejects.reject(reasons.GARBAGE, "", "not a swarm envelope")
        now[0] += 11
        rejects.reject(reasons.FORGED, "mallory", "authentication failed")
    assert rejects.by_reason == {reasons.FORGED: 51, reasons.GARBAGE: 1}
    assert rejects.total == 52
    lines = [record.getMessage() for record in caplog.records]
    assert len(lines) == 3
    assert "49 more" in lines[2]


@pytest.mark.parametrize("encrypt", [True, False])
def test_a_protected_files_signature_travels_sealed(encrypt: bool) -> None:
    sealer = codec(generate_key(), encrypt=encrypt)
    env = Envelope("agent", "SOUL.md", "node-a", Kind.UPDATE, b"\x01", signature=b"\x07" * 64)
    assert sealer.open(sealer.seal(env)).envelope == env
    # A keyed node reads a plain (signed) envelope as unauthenticated, as any plain one.
    with pytest.raises(Rejected) as caught:
        sealer.open(encode(env))
    assert caught.value.reason == "unauthenticated" and caught.value.sender == "node-a"
