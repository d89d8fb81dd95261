"""What a user installs: `python -m build` makes a wheel that installs in a clean virtualenv and
runs, carrying the license. Needs PyPI (or pip's cache) for the build backend and dependencies."""

from __future__ import annotations

import subprocess
import sys
import venv
import zipfile
from pathlib import Path

import pytest

from swarm import __version__

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parent.parent
TIMEOUT_S = 300  # a deadline for a stuck network, not a timing claim


def run(*args: str | Path, cwd: Path) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        [str(arg) for arg in args], cwd=cwd, capture_output=True, text=True,
        timeout=TIMEOUT_S, check=False,
    )  # fmt: skip
    assert result.returncode == 0, f"{args}:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    return result


def test_the_built_wheel_installs_in_a_clean_virtualenv_and_runs(tmp_path: Path) -> None:
    dist = tmp_path / "dist"
    # The README's command: an sdist, then a wheel built from it (in an isolated environment).
    run(sys.executable, "-m", "build", "--outdir", dist, REPO, cwd=tmp_path)
    (wheel,) = dist.glob("swarm_memory-*.whl")
    assert wheel.name.startswith(f"swarm_memory-{__version__}-py3-none-any")
    names = zipfile.ZipFile(wheel).namelist()
    assert any(name.endswith("/LICENSE") and ".dist-info/" in name for name in names), names
    assert "swarm/doctor/__init__.py" in names and "swarm/cli.py" in names
    assert not any(name.startswith(("tests/", "bench/")) for name in names)

    # A virtualenv that sees nothing of this one; this environment's pip installs into it (so
    # no pip is bootstrapped there) and reuses pip's cache for the dependencies.
    clean = tmp_path / "clean"
    venv.EnvBuilder(with_pip=False, system_site_packages=False).create(clean)
    python = clean / "bin" / "python"
    run(sys.executable, "-m", "pip", "--python", python, "install", "--quiet", wheel, cwd=tmp_path)

    version = run(clean / "bin" / "swarm", "--version", cwd=tmp_path)
    assert version.stdout.strip() == f"swarm, version {__version__}"
    where = run(python, "-c", "import swarm; print(swarm.__file__)", cwd=tmp_path)
    assert Path(where.stdout.strip()).is_relative_to(clean), "swarm came from the checkout"
    usage = run(clean / "bin" / "swarm", "doctor", "--help", cwd=tmp_path)
    assert "--redis-url" in usage.stdout
