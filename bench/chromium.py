"""The headless Chromium the console benchmark and the console screenshots drive.

One home for its path and flags: both scripts must launch the same browser the same way
(no sandbox in a container, nothing that phones home or updates itself mid-measurement).
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
