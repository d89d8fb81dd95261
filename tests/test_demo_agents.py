"""The scripted demo agents (deploy/agent.py) on their own, and the demo's proof of a result.

No daemon runs here: each agent edits its own copy of the seed workspace. What the demo relies
on is checked: the agents write every entry they log, exactly once, in valid UTF-8, in the
OpenClaw layout; they wait for each other and change the same line at the same moment; the cloud
agent's stale rewrite really writes back an old copy; run again, they add nothing; and the demo's
verifier tells a correct result from a lost or duplicated entry.
"""

from __future__ import annotations

import datetime as dt
import importlib.util
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path
from types import ModuleType, SimpleNamespace
from typing import Any

import pytest
from rich.console import Console

from swarm.devtools import demo
from swarm.devtools.demo import DemoError, agent_command, run_demo
from swarm.verify import (
    LoggedEntry,
    compare_nodes,
    entry_log_path,
    entry_problems,
    focus_story,
    read_entry_log,
    stale_story,
    synced_files,
)

REPO = Path(__file__).resolve().parents[1]
AGENT = REPO / "deploy" / "agent.py"
SEED = REPO / "deploy" / "seed"
ENTRIES = 14
RUN_TIMEOUT_S = 60


def seeded(tmp_path: Path, name: str) -> Path:
    workspace = tmp_path / name
    shutil.copytree(SEED, workspace)
    return workspace


def start_agent(
    role: str,
    workspace: Path,
    barrier: Path,
    *,
    entries: int = ENTRIES,
    timeout: float | None = None,
) -> subprocess.Popen[str]:
    argv = agent_command(AGENT, role, workspace, entries=entries, barrier=barrier)
    if timeout is not None:
        argv += ["--barrier-timeout", str(timeout)]
    return subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def run_both(workspaces: dict[str, Path], barrier: Path, entries: int = ENTRIES) -> list[str]:
    """Both agents at once, as the demo runs them; their stdout."""
    for marker in barrier.glob("*.ready"):  # what compose's barrier-reset service does
        marker.unlink()
    procs = [start_agent(role, ws, barrier, entries=entries) for role, ws in workspaces.items()]
    return [finish(proc) for proc in procs]


def finish(proc: subprocess.Popen[str]) -> str:
    stdout, stderr = proc.communicate(timeout=RUN_TIMEOUT_S)
    assert proc.returncode == 0, stderr
    return stdout


def log_records(log: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in log.read_text(encoding="utf-8").splitlines()]


def section_of(text: str, line: str) -> str:
    """The `## ` heading a line sits under."""
    heading = ""
    for current in text.splitlines():
        if current.startswith("## "):
            heading = current[3:]
        if current == line:
            return heading
    raise AssertionError(f"line not found: {line}")


def load_agent_module() -> ModuleType:
    spec = importlib.util.spec_from_file_location("demo_agent_under_test", AGENT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def both_agents(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[Path, Path]]:
    """Both agents run once, concurrently, each on its own seeded workspace."""
    root = tmp_path_factory.mktemp("agents")
    barrier = root / "barrier"
    barrier.mkdir()
    workspaces = {role: seeded(root, role) for role in ("cloud", "local")}
    run_both(workspaces, barrier)
    return {role: (ws, entry_log_path(ws, role)) for role, ws in workspaces.items()}


def test_every_logged_entry_is_written_exactly_once(
    both_agents: dict[str, tuple[Path, Path]],
) -> None:
    for role, (workspace, log) in both_agents.items():
        entries = read_entry_log(log)
        regular = [entry for entry in entries if not entry.contested]
        assert len(regular) == ENTRIES
        assert len({entry.id for entry in entries}) == len(entries)
        assert all(entry.role == role for entry in entries)
        assert entry_problems(entries, {role: workspace}) == []
        contested = [entry for entry in entries if entry.contested]
        assert len(contested) == 1 and contested[0].token in (workspace / "MEMORY.md").read_text(
            encoding="utf-8"
        )


def test_files_stay_valid_utf8_markdown_in_the_openclaw_layout(
    both_agents: dict[str, tuple[Path, Path]],
) -> None:
    for workspace, _ in both_agents.values():
        for path in workspace.rglob("*"):
            if path.is_file():
                path.read_bytes().decode("utf-8")  # raises on invalid UTF-8
        assert {p.name for p in workspace.iterdir()} >= {
            "SOUL.md",
            "soul.json",
            "MEMORY.md",
            "memory",
        }
        assert not [p for p in workspace.rglob("*.tmp")], "temp files left behind"
        memory = (workspace / "MEMORY.md").read_text(encoding="utf-8")
        headings = [line for line in memory.splitlines() if line.startswith("## ")]
        assert headings == ["## Decisions", "## Preferences", "## Projects"]


def test_cloud_agent_records_decisions_and_preferences_in_their_sections(
    both_agents: dict[str, tuple[Path, Path]],
) -> None:
    workspace, log = both_agents["cloud"]
    memory = (workspace / "MEMORY.md").read_text(encoding="utf-8")
    records = log_records(log)
    expected = {"decision": "Decisions", "preference": "Preferences", "focus": "Projects"}
    for record in records:
        assert record["file"] == "MEMORY.md"
        assert section_of(memory, record["line"]) == expected[record["kind"]]
    assert {record["write"] for record in records} == {"atomic", "in-place"}
    assert sum(record["stale"] for record in records) == 1


def test_local_agent_writes_daily_log_topic_file_and_memory(
    both_agents: dict[str, tuple[Path, Path]],
) -> None:
    workspace, log = both_agents["local"]
    records = log_records(log)
    today = f"memory/{dt.datetime.now(dt.UTC).date().isoformat()}.md"
    files = {record["file"] for record in records}
    assert {"MEMORY.md", "memory/projects.md"} <= files
    assert files <= {"MEMORY.md", "memory/projects.md", today}
    daily = [record for record in records if record["kind"] == "daily"]
    assert daily, "half of the local agent's entries go to the daily log"
    text = (workspace / today).read_text(encoding="utf-8")
    assert text.startswith(f"# {today[7:17]}\n")
    assert [r["line"] for r in daily] == [
        line for line in text.splitlines() if line.startswith("- [local-")
    ]
    notes = [record for record in records if record["kind"] == "memory-note"]
    focus_index = next(i for i, record in enumerate(records) if record["kind"] == "focus")
    assert [r["kind"] for r in records[focus_index + 1 : focus_index + 4]] == ["memory-note"] * 3
    memory = (workspace / "MEMORY.md").read_text(encoding="utf-8")
    assert all(section_of(memory, note["line"]) == "Projects" for note in notes)


def test_both_agents_change_the_same_line_at_the_same_moment(
    both_agents: dict[str, tuple[Path, Path]],
) -> None:
    focus = {}
    for role, (workspace, log) in both_agents.items():
        record = next(r for r in log_records(log) if r["kind"] == "focus")
        focus[role] = record
        memory = (workspace / "MEMORY.md").read_text(encoding="utf-8")
        assert "Current focus: ship the memory sync demo." not in memory
        assert memory.splitlines().count(record["line"]) == 1
    assert focus["cloud"]["line"] != focus["local"]["line"]
    assert abs(focus["cloud"]["at"] - focus["local"]["at"]) < 0.25


def test_stale_rewrite_writes_back_the_copy_read_before_the_pause(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A peer edit that lands while the cloud agent 'thinks' is overwritten by its old copy:
    exactly the stale write swarm must merge instead of losing the edit."""
    module = load_agent_module()
    workspace = seeded(tmp_path, "cloud")
    memory = workspace / "MEMORY.md"
    peer_line = "- [local-900] An edit that lands during the stale window."

    def peer_edit_lands(seconds: float) -> None:
        assert seconds == module.STALE_READ_DELAY
        memory.write_text(memory.read_text(encoding="utf-8") + peer_line + "\n", encoding="utf-8")

    monkeypatch.setattr(module, "time", SimpleNamespace(time=time.time, sleep=peer_edit_lands))
    before = memory.read_text(encoding="utf-8")
    agent = module.Agent("cloud", workspace, module.random.Random(7), None, 1)
    agent.step(stale=True)
    after = memory.read_text(encoding="utf-8")
    assert peer_line not in after
    added = [line for line in after.splitlines() if line not in before.splitlines()]
    assert len(added) == 1 and added[0].startswith("- [cloud-001] ")


def other_agent_is_done(barrier: Path, role: str) -> None:
    """Mark every phase for `role`, as a finished agent run again does."""
    for phase in ("start", "focus"):
        load_agent_module().Barrier(barrier, role).mark(phase)


def test_finished_agents_run_again_add_nothing(tmp_path: Path) -> None:
    """A second `docker compose up` without `down -v` starts the finished agents again on the
    same volumes: they must not write their entries a second time."""
    barrier = tmp_path / "barrier"
    barrier.mkdir()
    workspaces = {role: seeded(tmp_path, role) for role in ("cloud", "local")}
    run_both(workspaces, barrier, entries=4)
    first = {role: synced_files(ws) for role, ws in workspaces.items()}
    logs = {role: entry_log_path(ws, role).read_bytes() for role, ws in workspaces.items()}

    outputs = run_both(workspaces, barrier, entries=4)
    assert all("nothing to do" in output for output in outputs)
    assert {role: synced_files(ws) for role, ws in workspaces.items()} == first
    assert {role: entry_log_path(ws, role).read_bytes() for role, ws in workspaces.items()} == logs


def test_an_interrupted_agent_resumes_without_repeating_an_id(tmp_path: Path) -> None:
    """Killed mid-run, an agent may leave a torn last log line and an entry on disk it never
    logged; run again, it writes only the missing entries, under new ids."""
    barrier = tmp_path / "barrier"
    barrier.mkdir()
    other_agent_is_done(barrier, "local")
    workspace = seeded(tmp_path, "cloud")
    log = entry_log_path(workspace, "cloud")
    finish(start_agent("cloud", workspace, barrier, entries=3))
    unlogged = "- [cloud-004] Decided: an entry written just before the kill."
    memory = workspace / "MEMORY.md"
    memory.write_text(memory.read_text(encoding="utf-8") + unlogged + "\n", encoding="utf-8")
    with open(log, "a", encoding="utf-8") as handle:
        handle.write('{"id": "cloud-0')  # the kill landed mid-record

    output = finish(start_agent("cloud", workspace, barrier, entries=6))
    assert "wrote 6 entries (3 in this run)" in output
    entries = read_entry_log(log)
    assert [entry.id for entry in entries if not entry.contested] == [
        "cloud-001", "cloud-002", "cloud-003", "cloud-005", "cloud-006", "cloud-007"
    ]  # fmt: skip
    assert sum(entry.contested for entry in entries) == 1
    assert entry_problems(entries, {"cloud": workspace}) == []
    assert memory.read_text(encoding="utf-8").count("[cloud-004]") == 1


def test_agent_refuses_a_log_it_did_not_write_with_one_line(tmp_path: Path) -> None:
    workspace = seeded(tmp_path, "local")
    log = entry_log_path(workspace, "local")
    log.parent.mkdir()
    log.write_text("not json\n{}\n", encoding="utf-8")
    proc = start_agent("local", workspace, tmp_path, entries=2)
    _, stderr = proc.communicate(timeout=RUN_TIMEOUT_S)
    assert proc.returncode == 2
    assert len(stderr.strip().splitlines()) == 1 and "not an entry record" in stderr
    assert log.read_text(encoding="utf-8") == "not json\n{}\n"


def test_agent_refuses_a_missing_workspace_with_one_line(tmp_path: Path) -> None:
    proc = start_agent("cloud", tmp_path / "nope", tmp_path, entries=3)
    _, stderr = proc.communicate(timeout=RUN_TIMEOUT_S)
    assert proc.returncode == 2
    assert stderr.strip().splitlines()[-1].endswith("not a directory")


def test_an_agent_writes_nothing_until_the_other_arrives(tmp_path: Path) -> None:
    """However late the other container starts, the first agent waits for it; if it never
    comes, the agent says which one and where, in one line, and has written nothing."""
    barrier = tmp_path / "barrier"
    barrier.mkdir()
    workspace = seeded(tmp_path, "local")
    before = synced_files(workspace)
    proc = start_agent("local", workspace, barrier, entries=4, timeout=1.0)
    _, stderr = proc.communicate(timeout=RUN_TIMEOUT_S)
    assert proc.returncode == 1
    assert stderr.strip().splitlines() == [
        f"local: the cloud agent did not reach 'start' within 1 s (is it running, with the "
        f"same --barrier folder {barrier}?)"
    ]
    assert synced_files(workspace) == before
    assert read_entry_log(entry_log_path(workspace, "local")) == []


def test_a_resuming_agent_is_not_held_by_the_other_that_already_finished(tmp_path: Path) -> None:
    barrier = tmp_path / "barrier"
    barrier.mkdir()
    workspaces = {role: seeded(tmp_path, role) for role in ("cloud", "local")}
    run_both(workspaces, barrier, entries=4)
    log = entry_log_path(workspaces["local"], "local")
    kept = log.read_text(encoding="utf-8").splitlines()[:1]  # interrupted before the focus line
    log.write_text("".join(f"{line}\n" for line in kept), encoding="utf-8")

    run_both(workspaces, barrier, entries=4)
    entries = read_entry_log(log)
    assert sum(not entry.contested for entry in entries) == 4
    assert sum(entry.contested for entry in entries) == 1
    assert entry_problems(entries, {"local": workspaces["local"]}) == []


# ---------------------------------------------------------------- the demo's verdict


def test_demo_verifier_accepts_identical_nodes_and_catches_loss_and_duplicates(
    both_agents: dict[str, tuple[Path, Path]], tmp_path: Path
) -> None:
    source, log = both_agents["cloud"]
    nodes = {"cloud": tmp_path / "cloud", "local": tmp_path / "local"}
    for node in nodes.values():
        shutil.copytree(source, node)
    entries = read_entry_log(log)
    verdicts = compare_nodes(nodes)
    assert verdicts and all(verdict.identical for verdict in verdicts)
    assert "soul.json" not in {verdict.path for verdict in verdicts}  # not synced by default
    assert entry_problems(entries, nodes) == []

    memory = nodes["local"] / "MEMORY.md"
    lines = memory.read_text(encoding="utf-8").splitlines()
    lost = next(entry for entry in entries if not entry.contested)
    memory.write_text(
        "\n".join(line for line in lines if line != lost.line) + "\n", encoding="utf-8"
    )
    assert not next(v for v in compare_nodes(nodes) if v.path == "MEMORY.md").identical
    assert entry_problems(entries, nodes) == [
        f"local: {lost.token} appears 0 times (0 as its line in MEMORY.md)"
    ]

    memory.write_text("\n".join([*lines, lost.line]) + "\n", encoding="utf-8")
    assert entry_problems(entries, nodes) == [
        f"local: {lost.token} appears 2 times (2 as its line in MEMORY.md)"
    ]


def entry(id_: str, kind: str, line: str, at: float, **extra: Any) -> LoggedEntry:
    return LoggedEntry(id_, id_.split("-")[0], kind, "MEMORY.md", line, at, **extra)


def test_stale_story_names_the_other_agents_lines_and_never_claims_a_lost_one_kept() -> None:
    stale = entry("cloud-009", "decision", "- [cloud-009] Decided: x.", 10.3, stale=True,
                  read_at=10.0)
    before = entry("local-004", "memory-note", "- [local-004] a", 9.9)
    meanwhile = [entry(f"local-00{n}", "memory-note", f"- [local-00{n}] n{n}", 10.0 + n / 10)
                 for n in (1, 2)]
    focus = entry("local-focus", "focus", "- Current focus: l [local-focus]", 10.05)
    entries = [stale, before, *meanwhile, focus]
    merged = "\n".join(e.line for e in entries) + "\n"

    story = stale_story(entries, {"MEMORY.md": merged})
    assert story == (
        "the stale rewrite: cloud wrote MEMORY.md back from a copy read 0.30 s earlier "
        "([cloud-009]); meanwhile local wrote 2 lines there ([local-001], [local-002]): "
        "all 2 kept, and its own new line too"
    )
    without = merged.replace(meanwhile[1].line + "\n", "")
    assert "only 1 of 2 kept" in stale_story(entries, {"MEMORY.md": without})
    assert stale_story([before], {"MEMORY.md": merged}) == "no stale rewrite in the agents' logs"


def test_focus_story_shows_which_edit_of_the_shared_line_the_merge_kept() -> None:
    cloud = entry("cloud-focus", "focus", "- Current focus: c [cloud-focus]", 5.0)
    local = entry("local-focus", "focus", "- Current focus: l [local-focus]", 5.004)
    both = f"# M\n{cloud.line}\n{local.line}\n"
    assert focus_story([cloud, local], both) == (
        "the line cloud and local changed at the same moment (4 ms apart): the merge kept both "
        f"edits, one line each\n    {cloud.line}\n    {local.line}"
    )
    assert "the merge kept local's edit" in focus_story([cloud, local], f"# M\n{local.line}\n")
    assert "the merge kept neither edit" in focus_story([cloud, local], "# M\n")


def test_demo_without_redis_server_or_url_says_how_to_install(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(DemoError, match=r"apt-get install redis-server.*--redis-url"):
        run_demo(
            workdir=tmp_path / "demo",
            redis_url=None,
            entries=5,
            swarm="demo",
            console=Console(file=None, quiet=True),
        )
    assert not (tmp_path / "demo").exists(), "nothing is created when the demo cannot run"


def test_demo_refuses_a_workdir_that_is_not_empty(tmp_path: Path) -> None:
    (tmp_path / "keep.md").write_text("user data\n", encoding="utf-8")
    with pytest.raises(DemoError, match="not an empty folder"):
        run_demo(
            workdir=tmp_path,
            redis_url="redis://127.0.0.1:1/0",
            entries=5,
            swarm="demo",
            console=Console(quiet=True),
        )
    assert (tmp_path / "keep.md").read_text(encoding="utf-8") == "user data\n"


def test_demo_stops_watching_when_one_agent_fails(tmp_path: Path) -> None:
    """The other agent waits at the barrier for the one that failed: the demo must not wait for
    both to exit (until its deadline), but report the failure at once."""
    procs = demo.Processes(tmp_path)
    try:
        agents = {
            "cloud": procs.start("cloud", [sys.executable, "-c", "import time; time.sleep(120)"]),
            "local": procs.start("local", [sys.executable, "-c", "raise SystemExit(3)"]),
        }
        logs = {role: tmp_path / f"{role}.jsonl" for role in agents}
        demo.watch_agents(agents, logs, {r: tmp_path for r in agents}, 1,
                          time.monotonic() + 60, Console(quiet=True))
        assert agents["local"].proc.returncode == 3
        assert agents["cloud"].proc.poll() is None
    finally:
        procs.stop_all()


def test_demo_finds_its_agents_in_the_checkout() -> None:
    assert demo.deploy_dir() == REPO / "deploy"
