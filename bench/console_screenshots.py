"""Screenshots of the operator console while ``vigil demo`` runs (the README's pictures).

Starts ``vigil demo`` in its own VIGIL_HOME, reads the console's URL from its output, and
watches the page in Debian's Chromium (Playwright):

* ``docs/console-rest.png``: the book once positions are open and every one has its stop;
* ``docs/console-demo.png``: the book during the demo's scenarios, the first time a
  position shows "unprotected" (a stop cancelled by hand), else the busiest moment seen;
* ``docs/console-position.png``: the first position's page, taken with the rest picture.

Run: python bench/console_screenshots.py [--duration 150] [--out docs]
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from chromium import CHROMIUM, CHROMIUM_ARGS

TOKEN = "console-screenshots"


def console_url(proc: subprocess.Popen[str], timeout: float = 300) -> str:
    os.set_blocking(proc.stdout.fileno(), False)  # type: ignore[union-attr]
    deadline = time.monotonic() + timeout
    seen = ""
    while time.monotonic() < deadline:
        line = proc.stdout.readline()  # type: ignore[union-attr]
        if line:
            seen += line
            match = re.search(r"Console (http://\S+/console)", line)
            if match:
                return match.group(1)
        elif proc.poll() is not None:
            break
        else:
            time.sleep(0.2)
    raise RuntimeError(f"no console URL printed:\n{seen[-2000:]}")


def count(page, selector: str) -> int:  # type: ignore[no-untyped-def]
    text = page.locator(selector).inner_text() if page.locator(selector).count() else "0"
    return int(text) if text.isdigit() else 0


def shoot_position(browser, page, url: str, path: Path) -> None:  # type: ignore[no-untyped-def]
    """The first position of the book, in a second tab (the first keeps watching)."""
    href = page.locator("table.book tbody tr a").first.get_attribute("href")
    tab = browser.new_page(viewport={"width": 1280, "height": 1000})
    tab.goto(url.rsplit("/console", 1)[0] + str(href) + f"?token={TOKEN}")
    tab.wait_for_selector("#position h1")
    tab.screenshot(path=str(path), full_page=True)
    tab.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=int, default=150)
    parser.add_argument("--out", default="docs")
    args = parser.parse_args()
    out = Path(args.out)
    home = tempfile.mkdtemp(prefix="vigil-shots-")
    env = {k: v for k, v in os.environ.items() if not k.startswith("VIGIL_")}
    env["VIGIL_HOME"] = home
    env["VIGIL_API_TOKEN"] = TOKEN  # so the pictures show the controls too
    proc = subprocess.Popen(
        [sys.executable, "-m", "shell.cli", "demo", "--duration", str(args.duration)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    from playwright.sync_api import sync_playwright

    try:
        url = console_url(proc)
        print(f"watching {url}")
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
            page = browser.new_page(viewport={"width": 1280, "height": 1000})
            page.goto(f"{url}?token={TOKEN}")
            rest = demo = False
            busiest = -1
            deadline = time.monotonic() + args.duration + 60
            while time.monotonic() < deadline and proc.poll() is None and not (rest and demo):
                time.sleep(1)
                open_now, bare = count(page, "#open-count"), count(page, "#without-stop .big")
                protected = page.locator("table.book td.ok").count()
                if not rest and open_now >= 3 and bare == 0 and protected == open_now:
                    page.screenshot(path=str(out / "console-rest.png"), full_page=True)
                    rest = True
                    shoot_position(browser, page, url, out / "console-position.png")
                elif rest and bare > 0:
                    page.screenshot(path=str(out / "console-demo.png"), full_page=True)
                    demo = True
                elif rest and open_now > busiest:
                    busiest = open_now
                    page.screenshot(path=str(out / "console-demo.png"), full_page=True)
            browser.close()
        print(f"rest {'taken' if rest else 'missed'}, demo {'unprotected' if demo else 'busiest'}")
    finally:
        if proc.poll() is None:
            proc.send_signal(2)
            proc.wait(120)


if __name__ == "__main__":
    main()
