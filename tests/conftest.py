"""Shared fixtures: real storage (tests/fixtures/storage.py) and the paper exchange."""

import os

# Tests never read a developer's .env or touch a running installation's data.
os.environ.setdefault("VIGIL_HOME", os.path.join(os.environ.get("TMPDIR", "/tmp"), "vigil-tests"))

pytest_plugins = [
    "tests.fixtures.storage",
    "tests.fixtures.sim",
    "tests.fixtures.engine",
    "tests.fixtures.venue",
]
