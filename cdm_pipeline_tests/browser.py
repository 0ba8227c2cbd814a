"""Load a static HTML page in headless Chromium with the network shut, and say what rendered.

For tests of the report pages: file:// pages whose charts are embedded, so they must render with
no network, and must not try to reach one (a report that fetches a script or font from a CDN leaks
who opened it, and shows blank charts offline).

Chart convention: mark each chart element itself with `data-chart="<name>"`, e.g.
    <img data-chart="segments" alt="Customers per segment" src="data:image/png;base64,...">
    <svg data-chart="journeys" viewBox="..."> ... </svg>
`PageLoad.images` lists every <img>, every outermost <svg> and every [data-chart] element, in
document order (an icon that fails to load is a defect too); `PageLoad.charts` only the marked ones.
An <img> rendered when it decoded (complete, natural width and height > 0) and takes up space on
the page (non-zero bounding box, so display:none is not rendered); any other element when it takes
up space. Avoid loading="lazy" on charts: a lazy image below the fold is never loaded, so it is
reported as not rendered. A PNG cut short after its header is not caught: Chromium shows the part it
has, at full size, and decode() succeeds; check the bytes where the page is written.

Network, three locks: every request is routed (file:, data:, blob: and about: URLs go through,
anything else - http, https, ws, ftp, ... - is recorded in `external_requests` and aborted, so it
fails with net::ERR_BLOCKED_BY_CLIENT before any socket is opened); the browser context is offline;
and Chromium resolves every host, IP literals included, to nothing, which also stops what is not a
request (DNS prefetch, preconnect). Requests a script starts after the page has settled (nothing in
flight for `settle_ms` after the load event) are not seen.

Chromium is Debian's (`make browser` installs it); Playwright only drives it (never run
`playwright install`: it downloads a browser build of its own). Tests call `require_chromium()`
first, which skips them, saying why, on a machine without a working chromium.

    browser = OfflineBrowser()                      # one per test module: launching takes ~0.5 s
    load = browser.load(tmp_path / "report.html")
    assert not load.problems(), load.problems()
    assert "1,234 customers" in load.text
"""

from __future__ import annotations

import functools
import os
import shutil
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from cdm_pipeline_tests.conftest import HANG_TIMEOUT

DEBIAN_CHROMIUM = "/usr/bin/chromium"
INSTALL_HINT = "run `make browser` (as root: apt-get install chromium)"

# How long a loaded page may keep fetching before it is read as it is. Loading itself waits up
# to HANG_TIMEOUT: a busy machine is slow, not broken.
SETTLE_LIMIT = 15
# URL schemes that never leave the machine.
LOCAL_SCHEMES = ("file:", "data:", "blob:", "about:")

LAUNCH_ARGS = [
    # As root (CI, these machines) Chromium will not start with its sandbox.
    "--no-sandbox",
    "--disable-gpu",
    # Containers often give /dev/shm only 64 MB, too little for a page of large images; Debian's
    # wrapper means to add this when /dev/shm is small, but its check fails on some machines.
    "--disable-dev-shm-usage",
    "--disable-quic",
    "--no-first-run",
    # The browser's own traffic (updates, sync, safe browsing lists), which no route sees.
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    # Every host, IP literals included, resolves to nothing: what no route sees (DNS prefetch,
    # preconnect) cannot open a socket or ask a name server either.
    "--host-resolver-rules=MAP * ~NOTFOUND",
]


def chromium_path() -> str | None:
    """Debian's chromium, else any `chromium` on PATH; None when there is none."""
    if os.access(DEBIAN_CHROMIUM, os.X_OK):
        return DEBIAN_CHROMIUM
    return shutil.which("chromium")


@functools.cache
def _chromium_problem() -> str | None:
    """Why browser tests cannot run here, or None. Cached: one probe per test process."""
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "Playwright is not installed (pip install -r requirements.lock)"
    path = chromium_path()
    if path is None:
        return f"chromium is not installed; {INSTALL_HINT}"
    # Present is not enough: a half-installed package or a missing library fails only at start.
    try:
        probe = subprocess.run(
            [path, "--headless", "--no-sandbox", "--disable-gpu", "--dump-dom", "about:blank"],
            capture_output=True, text=True, timeout=HANG_TIMEOUT,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"{path} cannot start ({exc}); {INSTALL_HINT}"
    if probe.returncode != 0 or "<html" not in probe.stdout:
        last = (probe.stderr.strip().splitlines() or ["no output"])[-1]
        return f"{path} cannot start (exit {probe.returncode}: {last}); {INSTALL_HINT}"
    return None


def require_chromium() -> str:
    """The chromium to use; skips the calling test (or module fixture) when there is none that runs."""
    problem = _chromium_problem()
    if problem:
        pytest.skip(f"browser test: {problem}")
    return chromium_path()


@dataclass
class PageImage:
    tag: str                  # "img", "svg", or the tag of another [data-chart] element
    chart: str | None         # its data-chart name; None for an unmarked image
    alt: str | None
    id: str | None
    src: str | None           # <img> only; data: URLs cut short
    rendered: bool
    natural_width: int        # <img> only, else 0
    natural_height: int
    box_width: float          # bounding box on the page, CSS pixels
    box_height: float

    def describe(self) -> str:
        name = f"chart {self.chart!r}" if self.chart else f"<{self.tag}>"
        return f"{name} (alt={self.alt!r}, id={self.id!r}, src={self.src!r})"


@dataclass
class PageLoad:
    url: str
    text: str                                                       # document.body.innerText
    images: list[PageImage]
    external_requests: list[str] = field(default_factory=list)     # every non-local URL tried
    external_responses: list[str] = field(default_factory=list)    # ... that got an answer: must stay empty
    failed_requests: list[tuple[str, str]] = field(default_factory=list)  # (url, error)
    console_errors: list[str] = field(default_factory=list)
    page_errors: list[str] = field(default_factory=list)           # uncaught exceptions

    @property
    def charts(self) -> list[PageImage]:
        return [i for i in self.images if i.chart is not None]

    def chart(self, name: str) -> PageImage:
        found = [i for i in self.images if i.chart == name]
        if len(found) != 1:
            raise LookupError(f"{len(found)} charts named {name!r}; the page has {[i.chart for i in self.charts]}")
        return found[0]

    @property
    def not_rendered(self) -> list[PageImage]:
        return [i for i in self.images if not i.rendered]

    def problems(self) -> list[str]:
        """Everything a report page should not show; [] for a good page."""
        return (
            [f"not rendered: {i.describe()}" for i in self.not_rendered]
            + [f"external request: {u}" for u in self.external_requests]
            + [f"failed request: {u} ({e})" for u, e in self.failed_requests]
            + [f"console error: {m}" for m in self.console_errors]
            + [f"page error: {m}" for m in self.page_errors]
        )


# Runs in the page once it has loaded. Document order; nested <svg>s are parts of their outer one.
_IMAGES_JS = (
    """() => {
  const out = [];
  for (const el of document.querySelectorAll('img, svg, [data-chart]')) {
    const tag = el.tagName.toLowerCase();
    if (tag === 'svg' && !el.hasAttribute('data-chart')"""
    """ && el.parentElement && el.parentElement.closest('svg')) continue;
    const box = el.getBoundingClientRect();
    const hasBox = box.width > 0 && box.height > 0;
    const isImg = el instanceof HTMLImageElement;
    let src = isImg ? el.getAttribute('src') : null;
    if (src && src.startsWith('data:') && src.length > 60) src = src.slice(0, 60) + '...';
    out.push({
      tag, chart: el.getAttribute('data-chart'), alt: el.getAttribute('alt'), id: el.id || null, src,
      rendered: isImg ? (el.complete && el.naturalWidth > 0 && el.naturalHeight > 0 && hasBox) : hasBox,
      natural_width: isImg ? el.naturalWidth : 0, natural_height: isImg ? el.naturalHeight : 0,
      box_width: box.width, box_height: box.height,
    });
  }
  return out;
}"""
)


def _is_local(url: str) -> bool:
    return url.startswith(LOCAL_SCHEMES)


class OfflineBrowser:
    """One headless Chromium; each load() gets a new, offline browser context.

    Playwright runs in a thread of its own: its sync API marks an asyncio loop as running in the
    thread that starts it, for as long as it lives, so in the test's thread asyncio.run() (Dagster,
    anyio) and a second sync_playwright() would fail until close().
    """

    def __init__(self, executable: str | None = None):
        self._thread: ThreadPoolExecutor | None = ThreadPoolExecutor(1, thread_name_prefix="offline-chromium")
        try:
            self._thread.submit(self._start, executable).result()
        except BaseException:
            self._thread.shutdown()
            raise

    def _start(self, executable: str | None) -> None:
        from playwright.sync_api import sync_playwright

        self._playwright = sync_playwright().start()
        try:
            # Playwright starts Chromium with a fresh temporary --user-data-dir of its own and
            # deletes it on close; contexts are incognito-like on top of that.
            self._browser = self._playwright.chromium.launch(
                executable_path=executable or chromium_path() or DEBIAN_CHROMIUM,
                headless=True,
                args=LAUNCH_ARGS,
            )
        except BaseException:
            self._playwright.stop()
            raise

    def load(self, path: Path, *, settle_ms: int = 100, timeout_ms: int = HANG_TIMEOUT * 1000) -> PageLoad:
        if self._thread is None:
            raise RuntimeError("OfflineBrowser is closed")
        return self._thread.submit(self._load, path, settle_ms, timeout_ms).result()

    def _load(self, path: Path, settle_ms: int, timeout_ms: int) -> PageLoad:
        url = Path(path).resolve().as_uri()
        # A service worker could answer requests where no route sees them.
        context = self._browser.new_context(service_workers="block", viewport={"width": 1280, "height": 900})
        try:
            context.set_offline(True)
            result = PageLoad(url=url, text="", images=[])
            in_flight: set = set()

            def route(route):
                if _is_local(route.request.url):
                    route.continue_()
                else:
                    route.abort("blockedbyclient")

            def websocket(ws):
                # Never connected to a server: the socket stays unanswered and is closed.
                result.external_requests.append(ws.url)
                ws.close()

            def on_request(request):
                in_flight.add(request)
                if not _is_local(request.url):
                    result.external_requests.append(request.url)

            def on_finished(request):
                in_flight.discard(request)
                if not _is_local(request.url):
                    result.external_responses.append(request.url)

            def on_failed(request):
                in_flight.discard(request)
                result.failed_requests.append((request.url, request.failure or "failed"))

            context.route("**/*", route)
            context.route_web_socket("**/*", websocket)
            context.on("request", on_request)
            context.on("requestfinished", on_finished)
            context.on("requestfailed", on_failed)
            page = context.new_page()
            page.on("console", lambda m: m.type == "error" and result.console_errors.append(m.text))
            page.on("pageerror", lambda e: result.page_errors.append(str(e)))

            page.goto(url, wait_until="load", timeout=timeout_ms)
            # Scripts may still be fetching after the load event; wait until nothing has been in
            # flight for settle_ms (the waits also let Playwright deliver pending events).
            deadline = time.monotonic() + min(timeout_ms / 1000, SETTLE_LIMIT)
            quiet_since = None
            while time.monotonic() < deadline:
                page.wait_for_timeout(25)
                if in_flight:
                    quiet_since = None
                elif quiet_since is None:
                    quiet_since = time.monotonic()
                elif (time.monotonic() - quiet_since) * 1000 >= settle_ms:
                    break
            result.images = [PageImage(**i) for i in page.evaluate(_IMAGES_JS)]
            result.text = page.evaluate("() => document.body ? document.body.innerText : ''")
            return result
        finally:
            context.close()

    def close(self) -> None:
        if self._thread is None:
            return
        try:
            self._thread.submit(self._stop).result()
        finally:
            self._thread.shutdown()
            self._thread = None

    def _stop(self) -> None:
        try:
            self._browser.close()
        finally:
            self._playwright.stop()

    def __enter__(self) -> OfflineBrowser:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def load_page_offline(path: Path, browser: OfflineBrowser | None = None, **kwargs) -> PageLoad:
    """Load one page; pass a shared OfflineBrowser when loading several (saves a launch each)."""
    if browser is not None:
        return browser.load(path, **kwargs)
    with OfflineBrowser() as own:
        return own.load(path, **kwargs)
