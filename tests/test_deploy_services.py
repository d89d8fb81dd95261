"""Service files in deploy/: systemd units (checked by systemd-analyze where installed, and
structurally always), the daemon's sd_notify readiness, and the Kubernetes native-sidecar example,
whose settings start a real daemon that answers the probes."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from daemon_harness import (
    REPO,
    START_DEADLINE_S,
    STOP_DEADLINE_S,
    DaemonGroup,
    daemon_env,
    swarm_command,
    wait_until,
)
from test_http import get
from test_security_redis import documented_acl

from swarm.config import DaemonSettings, env_names, load_settings
from swarm.devtools.devredis import RedisServer, free_port
from swarm.sd_notify import sd_notify
from swarm.transport.keyring import write_key_file

pytestmark = pytest.mark.slow

SYSTEMD = REPO / "deploy" / "systemd"
UNITS = {"system": SYSTEMD / "swarm@.service", "user": SYSTEMD / "user" / "swarm@.service"}
K8S = REPO / "deploy" / "k8s" / "agent-with-swarm.yaml"


# -- sd_notify -------------------------------------------------------------------------------------


@pytest.fixture
def notify_socket() -> Iterator[tuple[socket.socket, str]]:
    """A bound datagram socket like systemd's, at a path short enough for AF_UNIX."""
    folder = Path(tempfile.mkdtemp(prefix="sdn-", dir="/tmp"))
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    path = folder / "notify"
    sock.bind(str(path))
    sock.settimeout(START_DEADLINE_S)
    try:
        yield sock, str(path)
    finally:
        sock.close()
        shutil.rmtree(folder, ignore_errors=True)


def test_the_daemon_tells_systemd_it_is_ready_and_when_it_stops(
    redis_server: RedisServer, tmp_path: Path, notify_socket: tuple[socket.socket, str]
) -> None:
    sock, address = notify_socket
    with DaemonGroup(tmp_path, redis_server.url) as group:
        daemon = group.add("a", env={"NOTIFY_SOCKET": address})
        (daemon.dir / "MEMORY.md").write_text("- one\n")
        daemon.start()
        assert sock.recv(4096) == b"READY=1"  # waits up to the start deadline
        assert " ready: 1 files" in daemon.current_log(), "READY=1 before the daemon was ready"
        daemon.signal(signal.SIGTERM)
        sock.settimeout(STOP_DEADLINE_S)
        assert sock.recv(4096) == b"STOPPING=1"
        assert daemon.wait() == 0


def test_an_abstract_notify_socket_works_and_a_missing_one_is_harmless(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.delenv("NOTIFY_SOCKET", raising=False)
    assert sd_notify("READY=1") is False
    name = f"swarm-test-{os.getpid()}-{free_port()}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind("\0" + name)
        sock.settimeout(5)
        monkeypatch.setenv("NOTIFY_SOCKET", "@" + name)
        assert sd_notify("READY=1") is True
        assert sock.recv(64) == b"READY=1"
    monkeypatch.setenv("NOTIFY_SOCKET", str(tmp_path / "gone"))
    assert sd_notify("READY=1") is False  # logged, never raised


# -- systemd units ---------------------------------------------------------------------------------


def parse_unit(path: Path) -> dict[str, dict[str, list[str]]]:
    """section -> key -> values (systemd allows a key several times)."""
    sections: dict[str, dict[str, list[str]]] = {}
    current: dict[str, list[str]] | None = None
    for raw in path.read_text(encoding="utf-8").splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("[") and line.endswith("]"):
            current = sections.setdefault(line[1:-1], {})
            continue
        assert current is not None, f"{path}: {line!r} outside a section"
        key, sep, value = line.partition("=")
        assert sep, f"{path}: not KEY=VALUE: {line!r}"
        current.setdefault(key.strip(), []).append(value.strip())
    return sections


@pytest.mark.parametrize("mode", sorted(UNITS))
def test_the_units_are_hardened_notify_services_with_the_key_as_a_credential(mode: str) -> None:
    unit = parse_unit(UNITS[mode])
    service = unit["Service"]

    def one(key: str) -> str:
        (value,) = service[key]
        return value

    assert one("Type") == "notify"
    assert one("ExecStart").endswith("/swarm daemon")
    assert one("NoNewPrivileges") == "yes"
    assert one("ProtectSystem") == "strict"
    assert service["ReadWritePaths"], "the memory folder must be writable"
    assert one("RestartPreventExitStatus") == "2"  # a bad setting is not retried forever
    # the state folder systemd creates is the one the daemon uses
    environment = dict(value.split("=", 1) for value in service["Environment"])
    assert one("StateDirectory") == "swarm/%i"
    assert environment["SWARM_STATE_DIR"] == "%S/swarm/%i"
    # the key is loaded as a credential and the daemon reads it from the credentials folder
    credential, _, source = one("LoadCredential").partition(":")
    assert source.endswith("/%i.key")
    assert environment["SWARM_KEY_FILE"] == f"%d/{credential}"
    assert one("EnvironmentFile").endswith("/swarm/%i.env")
    assert set(environment) <= set(env_names().values())
    assert unit["Install"]["WantedBy"] == (
        ["multi-user.target"] if mode == "system" else ["default.target"]
    )


def test_the_example_environment_file_holds_valid_daemon_settings(tmp_path: Path) -> None:
    environ: dict[str, str] = {}
    for raw in (SYSTEMD / "swarm.env.example").read_text(encoding="utf-8").splitlines():
        if raw.strip() and not raw.lstrip().startswith("#"):
            name, _, value = raw.partition("=")
            environ[name] = value
    assert set(environ) <= set(env_names().values()), "a name the daemon does not read"
    settings = load_settings(DaemonSettings, {}, environ=environ)
    assert (settings.swarm, str(settings.dir)) == (environ["SWARM_NAME"], environ["SWARM_DIR"])


def systemd_analyze() -> str:
    path = shutil.which("systemd-analyze")
    if path is None:
        pytest.skip("systemd-analyze not installed; the units are checked structurally above")
    return path


def _verified(args: list[str], env: dict[str, str] | None = None) -> None:
    result = subprocess.run(args, capture_output=True, text=True, env=env, check=False)
    # verify exits 0 on many warnings (unknown keys, bad values): any output is a finding
    assert result.returncode == 0 and not result.stderr.strip(), result.stdout + result.stderr


def test_systemd_analyze_verifies_the_system_unit(tmp_path: Path) -> None:
    tool = systemd_analyze()
    swarm = Path(sys.executable).with_name("swarm")
    assert swarm.exists()
    # the unit as installed, but with ExecStart at this checkout's `swarm` (verify checks it)
    text = UNITS["system"].read_text(encoding="utf-8")
    assert "ExecStart=/usr/local/bin/swarm daemon" in text
    unit = tmp_path / "swarm@wren.service"
    unit.write_text(text.replace("/usr/local/bin/swarm", str(swarm)), encoding="utf-8")
    _verified([tool, "verify", "--man=no", str(unit)])
    # systemd's own exposure score: 0 is locked down, 10 is wide open; "OK" is under 2.0
    _verified([tool, "security", "--offline=yes", "--threshold=20", "--no-pager", str(unit)])


def test_systemd_analyze_verifies_the_user_unit(tmp_path: Path) -> None:
    tool = systemd_analyze()
    home = tmp_path / "home"
    (home / ".local" / "bin").mkdir(parents=True)
    (home / ".local" / "bin" / "swarm").symlink_to(Path(sys.executable).with_name("swarm"))
    runtime = tmp_path / "run"
    runtime.mkdir(mode=0o700)
    unit = tmp_path / "swarm@wren.service"
    shutil.copy(UNITS["user"], unit)
    env = {**os.environ, "HOME": str(home), "XDG_RUNTIME_DIR": str(runtime)}
    _verified([tool, "--user", "verify", "--man=no", str(unit)], env)


# -- Kubernetes ------------------------------------------------------------------------------------


def k8s_pod() -> dict[str, Any]:
    documents = [doc for doc in yaml.safe_load_all(K8S.read_text(encoding="utf-8")) if doc]
    (deployment,) = [doc for doc in documents if doc["kind"] == "Deployment"]
    assert deployment["spec"]["replicas"] == 1  # one pod is one node
    assert deployment["spec"]["strategy"]["type"] == "Recreate"  # never two on one volume
    pod: dict[str, Any] = deployment["spec"]["template"]["spec"]
    return pod


def sidecar_env(container: dict[str, Any]) -> dict[str, str]:
    return {item["name"]: item["value"] for item in container["env"] if "value" in item}


def test_the_k8s_example_runs_swarm_as_a_native_sidecar_beside_the_agent() -> None:
    pod = k8s_pod()
    (sidecar,) = [c for c in pod["initContainers"] if c["name"] == "swarm"]
    assert sidecar["restartPolicy"] == "Always"  # a native sidecar, not a one-shot init
    assert all(c["name"] != "swarm" for c in pod["containers"])
    (agent,) = pod["containers"]
    env = sidecar_env(sidecar)
    assert set(item["name"] for item in sidecar["env"]) <= set(env_names().values())

    # probes: the daemon's endpoints, on the port its HTTP setting listens on
    host, _, port = env["SWARM_HTTP"].rpartition(":")
    assert host == "0.0.0.0"  # the kubelet probes the pod's IP
    (named,) = sidecar["ports"]
    assert named["containerPort"] == int(port)
    for probe, path in [("startupProbe", "/readyz"), ("readinessProbe", "/readyz"),
                        ("livenessProbe", "/healthz")]:  # fmt: skip
        assert sidecar[probe]["httpGet"] == {"path": path, "port": named["name"]}, probe

    # the memory volume: the sidecar syncs the very folder the agent writes
    volumes = {v["name"]: v for v in pod["volumes"]}
    mounts = {m["mountPath"]: m for m in sidecar["volumeMounts"]}
    memory = mounts[env["SWARM_DIR"]]
    shared = [
        m for m in agent["volumeMounts"]
        if (m["name"], m.get("subPath")) == (memory["name"], memory.get("subPath"))
    ]  # fmt: skip
    assert shared, "the agent does not mount the sidecar's memory folder"
    state = mounts[env["SWARM_STATE_DIR"]]
    assert (state["name"], state.get("subPath")) != (memory["name"], memory.get("subPath"))
    assert "persistentVolumeClaim" in volumes[memory["name"]]  # survives a pod restart

    # the swarm key: a file of a mounted Secret, named by SWARM_KEY_FILE
    key_folder, _, key_name = env["SWARM_KEY_FILE"].rpartition("/")
    key_mount = mounts[key_folder]
    secret = volumes[key_mount["name"]]["secret"]
    assert key_mount["readOnly"] is True
    assert key_name in [item["path"] for item in secret["items"]]


def test_the_k8s_sidecar_settings_start_a_daemon_that_passes_its_probes(
    redis_server: RedisServer, tmp_path: Path
) -> None:
    pod = k8s_pod()
    (sidecar,) = [c for c in pod["initContainers"] if c["name"] == "swarm"]
    env = sidecar_env(sidecar)
    # The manifest's settings, with its mount paths and addresses moved onto this machine.
    moved = {
        env["SWARM_DIR"]: tmp_path / "memory",
        env["SWARM_STATE_DIR"]: tmp_path / "state",
    }
    for folder in moved.values():
        folder.mkdir()
    key = tmp_path / "secret" / env["SWARM_KEY_FILE"].rpartition("/")[2]
    key.parent.mkdir()
    write_key_file(key)
    port = free_port()
    local = {
        **env,
        "SWARM_DIR": str(moved[env["SWARM_DIR"]]),
        "SWARM_STATE_DIR": str(moved[env["SWARM_STATE_DIR"]]),
        "SWARM_KEY_FILE": str(key),
        "SWARM_HTTP": f"127.0.0.1:{port}",
        "SWARM_REDIS_URL": redis_server.url,
        "SWARM_REDIS_PASSWORD": "from-the-secret",
    }
    # the Redis user the manifest names, with the documented ACL (docs/security.md)
    assert env["SWARM_REDIS_USERNAME"] == f"swarm-{env['SWARM_NAME']}"
    admin = redis_server.client()
    admin.execute_command(*documented_acl(env["SWARM_NAME"], "from-the-secret").split())
    (moved[env["SWARM_DIR"]] / "MEMORY.md").write_text("- from the pod\n")

    log = (tmp_path / "daemon.log").open("wb")
    proc = subprocess.Popen(
        swarm_command("daemon"), env=daemon_env(local), cwd=REPO, stdout=log, stderr=log
    )
    try:
        def probe(path: str) -> int:
            assert proc.poll() is None, (tmp_path / "daemon.log").read_text()
            try:
                return get(port, path)[0]
            except OSError:
                return 0

        wait_until(lambda: probe("/readyz") == 200, "the startup probe passes", START_DEADLINE_S)
        assert probe("/healthz") == 200
        heartbeats = admin.hgetall(f"swarm:{{{env['SWARM_NAME']}}}:nodes")
        assert list(heartbeats) == [env["SWARM_NODE"].encode()]
        assert b'"sealed"' in heartbeats[env["SWARM_NODE"].encode()]  # the Secret's key is used
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(STOP_DEADLINE_S) == 0
        log.close()
