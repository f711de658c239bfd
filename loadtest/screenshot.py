"""The README's dashboard picture, taken the way a user would see it.

    docker compose up -d --wait                  # the lab, at its defaults
    python -m loadtest.screenshot                # about 3 minutes

With the dashboard open in headless Chromium, a Locust swarm (hot key plus a
cold burst every 15 s, 20 users) runs first under ``cache-aside`` and then
under the default ``two-tier``, each for ``--seconds`` (75 by default), so the
5-minute charts show the stampede at every expiry next to the flat two-tier
lines. The page is then saved to ``docs/dashboard.png`` (``--out``), and the
lab's own settings are put back. Chromium: Debian's ``chromium`` (or
``CHROMIUM_PATH``); Playwright drives it, without downloading a browser.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
from pathlib import Path

from .errors import BenchError
from .lab import apply_settings, check_stack_up, current_settings
from .locustrun import headless_locust, locust_environment
from .stack import ROOT, Stack

LOCUSTFILE = Path(__file__).resolve().parent / "locustfile.py"


def say(message: str) -> None:
    print(f"screenshot: {message}", flush=True)


PHASES = ("cache-aside", "two-tier")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-quic",
]


def swarm(stack: Stack, seconds: int, users: int) -> None:
    """Headless Locust against the lab, bounded by -t and a subprocess timeout."""
    command = headless_locust(stack.base_url, users, users, seconds)
    subprocess.run(
        command + ["HotKeyUser", "ColdStartUser"],
        env=locust_environment(),
        cwd=ROOT,
        capture_output=True,
        timeout=seconds + 90,
        check=True,
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m loadtest.screenshot", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--seconds", type=int, default=75, help="swarm per strategy (75)")
    parser.add_argument("--users", type=int, default=20, help="Locust users (20)")
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "dashboard.png")
    args = parser.parse_args(argv)
    from playwright.sync_api import sync_playwright

    chromium = os.environ.get("CHROMIUM_PATH") or shutil.which("chromium")
    if not chromium:
        print(
            "screenshot: error: chromium not found (apt-get install chromium, or set "
            "CHROMIUM_PATH)",
            file=sys.stderr,
        )
        return 2
    stack = Stack.running_lab()
    try:
        check_stack_up(stack)
    except BenchError as exc:
        print(f"screenshot: error: {exc}", file=sys.stderr)
        return 2
    original = current_settings(stack)
    app_count = max(1, len([c for c in stack.containers("app") if c.status == "running"]))
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS)
        try:
            page = browser.new_context(viewport={"width": 1366, "height": 900}).new_page()
            page.goto(stack.url("/dashboard"), wait_until="load")
            for strategy in PHASES:
                say(f"{strategy}: {args.users} users for {args.seconds} s")
                apply_settings(stack, {"CACHE_STRATEGY": strategy}, app_count)
                stack.flush_cache()
                swarm(stack, args.seconds, args.users)
            args.out.parent.mkdir(parents=True, exist_ok=True)
            page.screenshot(path=str(args.out), full_page=True)
        finally:
            browser.close()
            say("restoring " + " ".join(f"{k}={v}" for k, v in sorted(original.items())))
            apply_settings(stack, original, app_count)
    say(f"saved {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
