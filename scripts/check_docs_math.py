"""Check that the built documentation typesets its formulas in a real browser, offline.

    python scripts/check_docs_math.py [--html docs/_build/html] [PAGE.html ...]

Opens each built page with math (by default every one; or the given pages, relative
to ``--html``) as a ``file://`` URL in headless Chromium, driven through ChromeDriver
(W3C WebDriver over HTTP, no client library). Chromium resolves no host name and uses
no proxy, so a page that needs the network fails whether or not the machine has one.
On each page, once MathJax's start-up typesetting has finished:

* every math element of the HTML (``span.math``/``div.math``) holds a typeset
  ``mjx-container``, and there are no more containers than math elements;
* no formula is a MathJax error (``mjx-merror``) and no MathJax font failed to load;
* no text outside code shows a raw TeX delimiter (``\\(``, ``\\[``, ``$$``, ``\\begin{``).

Saves a screenshot of the first page to ``docs/_build/math.png``. Needs ``chromedriver``
and ``chromium`` on PATH (``scripts/install_chromium.sh`` installs them on Debian).
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import json
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
# Generous: the machines have two shared cores.
TIMEOUT_S = 120.0

# Runs in the page once it has loaded (deferred scripts have run by then): waits for
# MathJax's start-up typesetting, then for the fonts, and reports what the DOM holds.
PROBE = r"""
const done = arguments[arguments.length - 1];
const raw = /\\\(|\\\)|\\\[|\\\]|\$\$|\\begin\{/;
const excerpt = (text) => text.trim().slice(0, 80);
function report(typeset) {
  const skip = "pre, code, script, style, textarea, mjx-container";
  const walker = document.createTreeWalker(document.body, NodeFilter.SHOW_TEXT);
  const visible = [];
  for (let node = walker.nextNode(); node; node = walker.nextNode()) {
    if (raw.test(node.data) && !node.parentElement.closest(skip)) visible.push(excerpt(node.data));
  }
  const math = [...document.querySelectorAll(".math")];
  done({
    typeset: typeset,
    math: math.length,
    containers: document.querySelectorAll("mjx-container").length,
    untypeset: math.filter((e) => !e.querySelector("mjx-container")).map((e) => excerpt(e.textContent)),
    errors: [...document.querySelectorAll("mjx-merror")].map((e) => excerpt(e.textContent)),
    failed_fonts: [...document.fonts].filter((f) => f.status === "error").map((f) => f.family),
    raw: visible,
  });
}
const promise = window.MathJax && MathJax.startup && MathJax.startup.promise;
if (!promise) report("MathJax did not load");
else promise.then(() => document.fonts.ready).then(() => report(true), (e) => report(String(e)));
"""


class _MathCounter(HTMLParser):
    """Counts the elements with class ``math`` (what Sphinx writes around each formula)."""

    def __init__(self) -> None:
        super().__init__()
        self.count = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if "math" in (dict(attrs).get("class") or "").split():
            self.count += 1


def math_elements(page: Path) -> int:
    """The number of formulas Sphinx wrote into ``page``."""
    counter = _MathCounter()
    counter.feed(page.read_text(encoding="utf-8"))
    return counter.count


def problems(page: str, expected: int, report: dict[str, Any]) -> list[str]:
    """What is wrong with the rendered ``page`` (empty when all its math is typeset)."""
    if report["typeset"] is not True:
        raw = f"{len(report['raw'])} texts show raw TeX, e.g. {report['raw'][:1]}"
        return [f"{page}: MathJax did not typeset ({report['typeset']}); {raw}"]
    found = []
    if report["math"] != expected or report["containers"] != expected or report["untypeset"]:
        found.append(
            f"{page}: {expected} formulas in the HTML, {report['math']} math elements, "
            f"{report['containers']} typeset; not typeset: {report['untypeset']}"
        )
    found += [f"{page}: MathJax error in {text!r}" for text in report["errors"]]
    found += [f"{page}: font {family} failed to load" for family in report["failed_fonts"]]
    found += [f"{page}: raw TeX visible: {text!r}" for text in report["raw"]]
    return found


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


# ChromeDriver is local: no proxy from the environment applies.
_DIRECT = urllib.request.build_opener(urllib.request.ProxyHandler({}))


class WebDriver:
    """The few W3C WebDriver commands this check needs, on one ChromeDriver session."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.session = ""

    def call(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        """``method`` on ``path`` of the session (or of the driver, before one exists)."""
        data = None if body is None else json.dumps(body).encode()
        prefix = f"/session/{self.session}" if self.session else ""
        request = urllib.request.Request(f"{self.url}{prefix}{path}", data=data, method=method)
        request.add_header("Content-Type", "application/json")
        try:
            with _DIRECT.open(request, timeout=TIMEOUT_S + 30) as response:
                return json.load(response)["value"]
        except urllib.error.HTTPError as error:
            raise RuntimeError(f"WebDriver {method} {path}: {error.read().decode()[:500]}") from None

    def start(self, profile: str) -> None:
        """Opens headless Chromium, offline: no host name resolves."""
        args = [
            "--headless=new",
            "--no-sandbox",
            "--disable-dev-shm-usage",
            "--disable-gpu",
            "--window-size=1200,1600",
            f"--user-data-dir={profile}",
            "--no-proxy-server",
            "--host-resolver-rules=MAP * ~NOTFOUND",
        ]
        options = {"args": args}
        capabilities = {"alwaysMatch": {"browserName": "chrome", "goog:chromeOptions": options}}
        self.session = self.call("POST", "/session", {"capabilities": capabilities})["sessionId"]
        ms = int(TIMEOUT_S * 1000)
        self.call("POST", "/timeouts", {"pageLoad": ms, "script": ms})

    def probe(self, url: str) -> dict[str, Any]:
        """Loads ``url`` (until its load event) and runs :data:`PROBE` on it."""
        self.call("POST", "/url", {"url": url})
        report: dict[str, Any] = self.call("POST", "/execute/async", {"script": PROBE, "args": []})
        return report

    def screenshot(self, path: Path) -> None:
        """A PNG of the current viewport."""
        path.write_bytes(base64.b64decode(self.call("GET", "/screenshot")))


@contextlib.contextmanager
def chromedriver() -> Iterator[WebDriver]:
    """ChromeDriver on a free local port with one headless Chromium session."""
    executable = shutil.which("chromedriver")
    if executable is None or shutil.which("chromium") is None:
        sys.exit("check_docs_math: chromium and chromedriver are needed (scripts/install_chromium.sh)")
    port = _free_port()
    process = subprocess.Popen(
        [executable, f"--port={port}"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    driver = WebDriver(f"http://127.0.0.1:{port}")
    try:
        deadline = time.monotonic() + TIMEOUT_S
        while True:
            with contextlib.suppress(OSError):
                if driver.call("GET", "/status")["ready"]:
                    break
            if time.monotonic() > deadline or process.poll() is not None:
                raise RuntimeError("ChromeDriver did not start")
            time.sleep(0.1)
        with tempfile.TemporaryDirectory() as profile:
            driver.start(profile)
            try:
                yield driver
            finally:
                with contextlib.suppress(RuntimeError, OSError):  # the browser may be gone
                    driver.call("DELETE", "")
    finally:
        process.terminate()
        process.wait(timeout=30)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--html", type=Path, default=ROOT / "docs/_build/html", help="the built site")
    parser.add_argument("--screenshot", type=Path, default=ROOT / "docs/_build/math.png")
    parser.add_argument("pages", nargs="*", help="pages to check (default: every page with math)")
    args = parser.parse_args(argv)
    html: Path = args.html.resolve()
    names = args.pages or sorted(str(p.relative_to(html)) for p in html.rglob("*.html"))
    counts = {name: math_elements(html / name) for name in names}
    pages = {name: count for name, count in counts.items() if count}
    if not pages or (args.pages and len(pages) < len(counts)):
        parser.error(f"no math on {[name for name in names if name not in pages] or html}")
    start = time.monotonic()
    found: list[str] = []
    with chromedriver() as driver:
        for index, (name, expected) in enumerate(pages.items()):
            found += problems(name, expected, driver.probe((html / name).as_uri()))
            if index == 0:
                driver.screenshot(args.screenshot)
    for problem in found:
        print(problem, file=sys.stderr)
    total = sum(pages.values())
    verdict = "FAILED" if found else "ok"
    print(
        f"check_docs_math: {verdict}: {len(pages)} pages, {total} formulas "
        f"({time.monotonic() - start:.1f} s; screenshot {args.screenshot})"
    )
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main())
