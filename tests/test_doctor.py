"""`swarm doctor` against real redis-servers and real daemons: what users get wrong, found and
explained in one line each, with exit 0 / 1 / 2, and nothing disturbed."""

from __future__ import annotations

import re
import time
from pathlib import Path

import pytest
from daemon_harness import (
    DaemonGroup,
    DaemonProcess,
    daemon_env,
    daemon_settings,
    run_cli,
    wait_until,
)
from test_security_redis import documented_acl as acl_line

from swarm.config import DaemonSettings
from swarm.devtools.devredis import RedisServer, free_port
from swarm.doctor import Probes, Status, diagnose
from swarm.doctor.acl import judge_user_rules, needed_commands
from swarm.transport.keyring import write_key_file

pytestmark = pytest.mark.slow

SWARM = "team"


def documented_acl(user: str = f"swarm-{SWARM}", password: str = "s3cret") -> str:
    """The ACL line of docs/security.md for swarm `team`, for the user `user`."""
    return acl_line(SWARM, password).replace(f"SETUSER swarm-{SWARM} ", f"SETUSER {user} ", 1)


def _env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """The daemons' test environment (no SWARM_* of the caller), plus `extra`."""
    return daemon_env(extra)


def doctor(*args: str, env: dict[str, str] | None = None) -> tuple[int, dict[str, str], str]:
    """Run `swarm doctor ARGS`: exit code, check name -> its line, and the whole output."""
    result = run_cli("doctor", *args, env=env)
    assert "Traceback" not in result.stderr, result.stderr
    lines: dict[str, str] = {}
    for line in result.stdout.splitlines():
        match = re.match(r"^(ok|warn|FAIL|skip) +(\w+): ", line)
        if match:
            assert match.group(2) not in lines, f"two lines for {match.group(2)}:\n{result.stdout}"
            lines[match.group(2)] = line
    return result.returncode, lines, result.stdout + result.stderr


def doctor_args(folder: Path, url: str, *extra: str) -> list[str]:
    return ["--dir", str(folder), "--swarm", SWARM, "--redis-url", url, "--http", "0", *extra]


def status_of(lines: dict[str, str]) -> dict[str, str]:
    return {name: line.split()[0] for name, line in lines.items()}


def keyed_daemon(group: DaemonGroup, node: str, key: Path) -> DaemonProcess:
    """A daemon with the swarm key that has published a file (so Redis holds sealed data)."""
    daemon = group.add(node, env={"SWARM_KEY_FILE": str(key)})
    (daemon.dir / "MEMORY.md").write_text(f"- written by {node}\n")
    daemon.start().wait_ready()
    return daemon


def log_length(server: RedisServer, swarm: str = SWARM) -> int:
    return int(server.client().xlen(f"swarm:{{{swarm}}}:log"))


# -- a sound setup ------------------------------------------------------------------------------


def test_a_sound_setup_passes_and_a_running_daemon_is_found_without_disturbing_it(
    redis_server: RedisServer, tmp_path: Path
) -> None:
    key = tmp_path / "swarm.key"
    write_key_file(key)
    with DaemonGroup(tmp_path, redis_server.url) as group:
        a = keyed_daemon(group, "a", key)
        wait_until(lambda: log_length(redis_server) > 0, "a published its file")

        # Exactly the daemon's command line, with `doctor` for `daemon`.
        code, lines, out = doctor(*a.args()[1:], env=_env({"SWARM_KEY_FILE": str(key)}))
        assert code == 0, out
        assert set(lines) == {
            "folder", "state", "lock", "inotify", "writers", "redis", "acl", "key", "clock"
        }  # fmt: skip
        assert status_of(lines) == {
            "folder": "ok",
            "state": "ok",
            "lock": "warn",
            "inotify": "ok",
            "writers": "ok",
            "redis": "ok",
            "acl": "ok",
            "key": "ok",
            "clock": "ok",
        }, out
        assert f"pid {a.pid}" in lines["lock"], lines["lock"]
        assert "matches the swarm" in lines["key"], lines["key"]

        # the lock was only tried: a second daemon on the state folder is still refused, and
        # the first one still syncs
        second = run_cli(*a.args(), env=_env({"SWARM_KEY_FILE": str(key)}))
        assert second.returncode != 0 and "already using the state folder" in second.stderr
        assert a.running
        before = log_length(redis_server)
        (a.dir / "MEMORY.md").write_text("- written by a\n- after the doctor\n")
        wait_until(lambda: log_length(redis_server) > before, "a still publishes")

        # a fresh node of the same swarm: everything ok, and the doctor wrote nothing to Redis
        # (a is stopped first: its compaction writes the lease and snapshots on its own timer)
        assert a.stop() == 0
        keys_before = sorted(redis_server.client().keys("*"))
        fresh = tmp_path / "fresh"
        fresh.mkdir()
        code, lines, out = doctor(
            *doctor_args(fresh, redis_server.url), env=_env({"SWARM_KEY_FILE": str(key)})
        )
        assert code == 0, out
        assert set(status_of(lines).values()) == {"ok"}, out
        assert "no problem found" in out
        assert sorted(redis_server.client().keys("*")) == keys_before
        assert not (fresh / ".swarm").exists()  # the state folder is not created


def test_bad_settings_exit_2_before_any_check(tmp_path: Path) -> None:
    result = run_cli("doctor", "--swarm", SWARM, "--redis-url", "redis://127.0.0.1:1/0")
    assert result.returncode == 2
    assert result.stderr.strip() == "swarm: missing setting 'dir': pass --dir or set SWARM_DIR"
    result = run_cli("doctor", *doctor_args(tmp_path, "http://127.0.0.1:1"))
    assert result.returncode == 2 and "redis_url" in result.stderr and not result.stdout


# -- Redis ---------------------------------------------------------------------------------------


def test_an_unreachable_redis_is_one_failure_that_says_what_to_do(tmp_path: Path) -> None:
    started = time.monotonic()
    url = f"redis://someone:hunter2@127.0.0.1:{free_port()}/0"
    code, lines, out = doctor(*doctor_args(tmp_path, url))
    assert code == 1, out
    assert "hunter2" not in out  # the URL's password is never printed
    assert time.monotonic() - started < 15
    assert lines["redis"].startswith("FAIL") and "nothing listens there" in lines["redis"]
    assert "Fix: start Redis" in lines["redis"]
    assert [name for name, status in status_of(lines).items() if status == "FAIL"] == ["redis"]
    assert (status_of(lines)["acl"], status_of(lines)["clock"]) == ("skip", "skip")
    assert "1 problem found" in out


def test_acl_users_missing_a_command_or_the_swarm_keys_are_named(
    redis_server: RedisServer, tmp_path: Path
) -> None:
    admin = redis_server.client()
    admin.execute_command(*documented_acl().split())
    admin.execute_command(*documented_acl("no-trim").replace(" +xtrim", "").split())
    admin.execute_command(*documented_acl("other").replace("{team}", "{other}").split())
    admin.execute_command(*documented_acl("no-eval").replace(" +eval ", " ").split())
    admin.execute_command(*documented_acl("no-eval-admin").replace(" +eval ", " +acl ").split())

    def run(user: str, password: str = "s3cret") -> tuple[int, str, str]:
        env = _env({"SWARM_REDIS_USERNAME": user, "SWARM_REDIS_PASSWORD": password})
        code, lines, out = doctor(*doctor_args(tmp_path, redis_server.url), env=env)
        return code, lines.get("acl", ""), out

    code, line, out = run("swarm-team")  # the documented ACL is enough
    assert code == 0 and line.startswith("ok") and "every command the daemon needs" in line, out

    code, line, out = run("no-trim")
    assert code == 1 and line.startswith("FAIL"), out
    assert "may not run xtrim." in line and "ACL SETUSER no-trim +xtrim " in line, line

    code, line, out = run("other")
    assert code == 1 and "may not use the keys and channel of swarm team" in line, line
    assert "ACL SETUSER other ~swarm:{team}:* &swarm:{team}:bus" in line

    code, line, out = run("no-eval")  # no EVAL, no ACL rights: what can be said is said
    assert code == 1 and "may not run eval" in line and "could not be checked" in line, line

    code, line, out = run("no-eval-admin")  # no EVAL, but ACL DRYRUN tells the whole list
    assert code == 1 and "may not run eval." in line, line

    code, lines, out = doctor(
        *doctor_args(tmp_path, redis_server.url),
        env=_env({"SWARM_REDIS_USERNAME": "swarm-team", "SWARM_REDIS_PASSWORD": "wrong"}),
    )
    assert code == 1 and "refused the user name or password" in lines["redis"], out
    assert "SWARM_REDIS_PASSWORD" in lines["redis"]


def test_the_doctor_checks_exactly_the_documented_acl() -> None:
    documented = set(re.findall(r" \+([a-z|]+)", documented_acl()))
    assert {name for name, _ in needed_commands(SWARM)} == documented


def test_redis_6_user_rules_are_judged_or_admitted_unchecked() -> None:
    everything = [
        "flags",
        [b"on", b"allkeys", b"allchannels", b"allcommands"],
        "passwords",
        [],
        "commands",
        b"+@all",
        "keys",
        [b"*"],
        "channels",
        [b"*"],
    ]
    assert judge_user_rules("default", everything).status is Status.OK
    narrow = [
        "flags",
        [b"on"],
        "commands",
        b"-@all +ping +xadd",
        "keys",
        [b"swarm:{t}:*"],
        "channels",
        [b"swarm:{t}:bus"],
    ]
    verdict = judge_user_rules("limited", narrow)
    assert verdict.status is Status.WARN and "-@all +ping +xadd" in verdict.message


# -- the swarm key --------------------------------------------------------------------------------


def test_a_key_that_does_not_match_the_swarm_is_found(
    redis_server: RedisServer, tmp_path: Path
) -> None:
    key, other = tmp_path / "swarm.key", tmp_path / "other.key"
    write_key_file(key)
    write_key_file(other)
    fresh = tmp_path / "fresh"
    fresh.mkdir()
    args = doctor_args(fresh, redis_server.url)
    with DaemonGroup(tmp_path, redis_server.url) as group:
        keyed_daemon(group, "a", key)
        wait_until(lambda: log_length(redis_server) > 0, "a published its file")

        code, lines, out = doctor(*args, env=_env({"SWARM_KEY_FILE": str(other)}))
        assert code == 1 and lines["key"].startswith("FAIL"), out
        assert "sealed with a key this node does not hold" in lines["key"]
        assert "node a" in lines["key"] and "log entries" in lines["key"]

        code, lines, out = doctor(*args, env=_env())
        assert code == 1 and "none is set here" in lines["key"], out

        code, lines, out = doctor(*args, env=_env({"SWARM_KEY_FILE": str(tmp_path / "nope")}))
        assert code == 1 and lines["key"].startswith("FAIL"), out
        assert "does not exist" in lines["key"] and "swarm keygen" in lines["key"]

    with DaemonGroup(tmp_path / "plain", redis_server.url, swarm="plain") as group:
        group.add("p").start().wait_ready()
        wait_until(lambda: redis_server.client().hlen("swarm:{plain}:nodes") > 0, "heartbeat")
        code, lines, out = doctor(
            "--dir",
            str(fresh),
            "--swarm",
            "plain",
            "--redis-url",
            redis_server.url,
            env=_env({"SWARM_KEY_FILE": str(key)}),
        )
        assert code == 1 and "plain (written without a key)" in lines["key"], out
        assert "node p" in lines["key"]


# -- this machine ---------------------------------------------------------------------------------


async def test_folder_inotify_limit_and_clock_skew(
    redis_server: RedisServer, tmp_path: Path
) -> None:
    def settings(folder: Path) -> DaemonSettings:
        return daemon_settings(folder, folder / ".swarm", "n", redis_server.url, SWARM)

    limit = tmp_path / "max_user_watches"
    limit.write_text("5\n")
    deep = tmp_path / "deep"
    for index in range(6):
        (deep / f"topic-{index}").mkdir(parents=True)
    checks = await diagnose(
        settings(deep),
        Probes(inotify_limit=limit, clock=lambda: time.time() + 30),
    )
    found = {check.name: check for check in checks}
    assert found["inotify"].status is Status.FAIL
    assert "7 folders to watch, limit 5" in found["inotify"].message
    assert "fs.inotify.max_user_watches" in found["inotify"].fix
    assert found["clock"].status is Status.FAIL and "30" in found["clock"].message
    assert "ahead of Redis" in found["clock"].message and "ntp" in found["clock"].fix

    checks = await diagnose(settings(tmp_path / "missing"), Probes(inotify_limit=limit))
    found = {check.name: check for check in checks}
    assert found["folder"].status is Status.FAIL and "does not exist" in found["folder"].message
    assert found["clock"].status is Status.OK
    a_file = tmp_path / "a-file"
    a_file.write_text("x")
    checks = await diagnose(settings(a_file), Probes(inotify_limit=limit))
    assert next(c for c in checks if c.name == "folder").message.endswith("is not a folder")
