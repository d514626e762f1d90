"""Shared fixtures: real storage (tests/fixtures/storage.py) and the paper exchange."""

import os

from hypothesis import settings

# Property tests judge outcomes, never speed: hypothesis's default 200 ms deadline per example
# is a wall-clock threshold that a loaded machine (CI on 2 shared cores) trips at random.
settings.register_profile("vigil", deadline=None)
settings.load_profile("vigil")

# Tests never read a developer's .env or touch a running installation's data.
os.environ.setdefault("VIGIL_HOME", os.path.join(os.environ.get("TMPDIR", "/tmp"), "vigil-tests"))

pytest_plugins = [
    "tests.fixtures.storage",
    "tests.fixtures.sim",
    "tests.fixtures.engine",
    "tests.fixtures.venue",
    "tests.fixtures.demo",
]
