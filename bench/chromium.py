"""The headless Chromium the console benchmark, the console screenshots and the browser
tests (tests/browser/conftest.py) drive.

One home for its path and flags: all of them must launch the same browser the same way (no
sandbox in a container, nothing that phones home or updates itself mid-measurement), so a
figure of the benchmark is measured on the browser the tests check. Plain constants with no
imports: the bench scripts import it by file (``from chromium import ...``), the tests as
``bench.chromium``.
"""

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
