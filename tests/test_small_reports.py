"""Small things users read: a state folder setting that points at a file is named as such, and
the security notes list every piece of metadata Redis sees."""

from __future__ import annotations

from pathlib import Path

from daemon_harness import run_cli

REPO = Path(__file__).resolve().parent.parent


def test_a_state_dir_that_is_a_file_names_the_setting(tmp_path: Path) -> None:
    (tmp_path / "memory").mkdir()
    (tmp_path / "state").write_text("not a folder\n")
    for state_dir in (tmp_path / "state", tmp_path / "state" / "below"):
        done = run_cli(
            "daemon", "--dir", str(tmp_path / "memory"), "--swarm", "team", "--http", "0",
            "--state-dir", str(state_dir), "--redis-url", "redis://127.0.0.1:1/0",
        )  # fmt: skip
        assert done.returncode == 2
        lines = done.stderr.strip().splitlines()
        assert len(lines) == 1 and "Traceback" not in done.stderr, done.stderr
        assert "--state-dir" in lines[0] and str(state_dir) in lines[0], lines[0]
        assert (tmp_path / "state").read_text() == "not a folder\n"  # left as it was


def test_the_security_notes_list_what_redis_sees_without_the_key() -> None:
    notes = (REPO / "docs" / "security.md").read_text(encoding="utf-8")
    seen = notes.split("What Redis sees even so", 1)[1].split("\n- **", 1)[0]
    for item in (
        "swarm name",
        "node ids",
        "key id",
        "number of files",
        "stream ids",
        "sizes",
        "where each node connects from",
        "compaction lease",
        "when each node is online",
        "epoch",
    ):
        assert item in seen, f"docs/security.md does not say Redis sees the {item}"
