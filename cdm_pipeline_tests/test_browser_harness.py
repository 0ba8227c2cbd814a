"""The browser harness (browser.py) can fail: it sees broken charts and blocked requests, not only good pages."""

import base64
import io
import socket
import subprocess
import threading
import time

import pytest

from cdm_pipeline_tests import browser as harness
from cdm_pipeline_tests.browser import OfflineBrowser, load_page_offline, require_chromium
from cdm_pipeline_tests.conftest import HANG_TIMEOUT


@pytest.fixture(scope="module")
def browser():
    require_chromium()
    with OfflineBrowser() as b:  # one launch for the module: each load still gets a fresh context
        yield b


def png_data_uri(width_px: int = 320, height_px: int = 200) -> str:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(width_px / 100, height_px / 100), dpi=100)
    ax.bar(["new", "active", "lapsed"], [1234, 987, 321])
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    plt.close(fig)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


def write_page(tmp_path, body: str, head: str = "", name: str = "page.html"):
    path = tmp_path / name
    path.write_text(
        f'<!doctype html><html><head><meta charset="utf-8"><title>t</title>{head}</head>'
        f"<body>{body}</body></html>",
        encoding="utf-8",
    )
    return path


@pytest.fixture
def loopback_server():
    """A TCP listener on 127.0.0.1 that counts every connection made to it."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(16)
    server.settimeout(0.05)  # a blocked accept() would not notice the socket closing at teardown
    connections = []
    done = threading.Event()

    def accept():
        while not done.is_set():
            try:
                conn, _ = server.accept()
            except TimeoutError:
                continue
            conn.settimeout(60)
            connections.append(conn.recv(200))
            conn.close()

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield server.getsockname()[1], connections
    done.set()
    thread.join(timeout=5)
    server.close()


def test_embedded_png_chart_renders_offline_with_no_request(browser, tmp_path):
    page = write_page(
        tmp_path,
        f'<h1>Segments</h1><p>1,234 new customers</p>'
        f'<img data-chart="segments" id="seg" alt="Customers per segment" src="{png_data_uri()}">'
        '<svg data-chart="trend" width="200" height="80"><polyline points="0,80 100,20 200,40" stroke="black"/></svg>',
    )
    load = browser.load(page)

    assert load.problems() == []
    seg = load.chart("segments")
    assert seg.rendered and seg.tag == "img" and seg.id == "seg" and seg.alt == "Customers per segment"
    assert (seg.natural_width, seg.natural_height) == (320, 200)
    assert seg.src.startswith("data:image/png;base64,") and seg.src.endswith("...")
    assert load.chart("trend").rendered and load.chart("trend").box_width == 200
    assert [c.chart for c in load.charts] == ["segments", "trend"]
    assert load.external_requests == [] and load.external_responses == []
    assert "Segments" in load.text and "1,234 new customers" in load.text


def test_broken_or_hidden_chart_is_not_rendered(browser, tmp_path):
    good = png_data_uri()
    not_png = base64.b64encode(b"<html>500 Internal Server Error</html>").decode()
    page = write_page(
        tmp_path,
        '<img data-chart="garbage" alt="a" src="data:image/png;base64,AAAA">'
        f'<img data-chart="not_png" alt="b" src="data:image/png;base64,{not_png}">'
        '<img data-chart="empty_data" alt="e" src="data:image/png;base64,">'
        f'<img data-chart="hidden" alt="c" src="{good}" style="display:none">'
        '<svg data-chart="empty" width="0" height="0"></svg>'
        f'<img data-chart="fine" alt="d" src="{good}">'
        '<img alt="missing file" src="no-such-chart.png">',
    )
    load = browser.load(page)

    assert {c.chart: c.rendered for c in load.charts} == {
        "garbage": False, "not_png": False, "empty_data": False, "hidden": False, "empty": False, "fine": True,
    }
    hidden = load.chart("hidden")
    assert hidden.natural_width == 320 and hidden.box_width == 0  # decoded, but not on the page
    assert [i.alt for i in load.not_rendered] == ["a", "b", "e", "c", None, "missing file"]
    assert any(url.endswith("no-such-chart.png") for url, _ in load.failed_requests)
    assert load.external_requests == []
    assert len([p for p in load.problems() if p.startswith("not rendered")]) == 6


def test_remote_img_script_stylesheet_and_fetch_are_recorded_and_blocked(browser, tmp_path):
    page = write_page(
        tmp_path,
        '<p>Offline report</p>'
        '<img data-chart="remote" alt="remote chart" src="http://example.com/chart.png">'
        '<script>fetch("https://example.com/api/figures")'
        '.then(() => document.title = "fetched", e => console.error("fetch failed: " + e.message));'
        # Each starts only when the one before has failed, after the load event: seen because
        # load() waits for the page to settle.
        'addEventListener("load", () => fetch("https://example.com/late/1")'
        '.catch(() => fetch("https://example.com/late/2"))'
        '.catch(() => fetch("https://example.com/late/3")).catch(() => {}));'
        "</script>",
        head='<script src="https://example.com/app.js"></script>'
        '<link rel="stylesheet" href="http://example.com/style.css">',
    )
    load = browser.load(page)

    expected = {
        "http://example.com/chart.png", "https://example.com/app.js",
        "http://example.com/style.css", "https://example.com/api/figures",
        "https://example.com/late/1", "https://example.com/late/2", "https://example.com/late/3",
    }
    assert set(load.external_requests) == expected
    assert load.external_responses == []
    failed = dict(load.failed_requests)
    assert set(failed) == expected
    assert all("ERR_BLOCKED_BY_CLIENT" in error for error in failed.values())
    assert "fetch failed: Failed to fetch" in load.console_errors
    assert load.chart("remote").rendered is False
    assert "Offline report" in load.text
    assert any(p.startswith("external request: https://example.com/app.js") for p in load.problems())


def test_no_connection_reaches_a_listening_server(browser, tmp_path, loopback_server):
    # example.com cannot answer on this machine anyway; a server on 127.0.0.1 could, so nothing
    # reaching it shows the harness stops requests itself, before any socket is opened.
    port, connections = loopback_server
    base = f"http://127.0.0.1:{port}"
    page = write_page(
        tmp_path,
        f'<img alt="x" src="{base}/chart.png">'
        f'<script>fetch("{base}/api").catch(() => {{}});'
        f'new WebSocket("ws://127.0.0.1:{port}/live");'
        f'navigator.sendBeacon("{base}/beacon", "x");</script>',
        head=f'<link rel="preconnect" href="{base}"><link rel="stylesheet" href="{base}/s.css">',
    )
    load = browser.load(page)

    assert set(load.external_requests) == {
        f"{base}/chart.png", f"{base}/api", f"ws://127.0.0.1:{port}/live", f"{base}/beacon", f"{base}/s.css",
    }
    assert load.external_responses == []
    assert connections == []


def test_the_loopback_server_does_see_an_unguarded_browser(tmp_path, loopback_server):
    # Control for the test above: plain headless chromium, without the harness, does connect to
    # the server, so an empty connection list there is the harness at work.
    chromium = require_chromium()
    port, connections = loopback_server
    page = write_page(tmp_path, f'<img alt="x" src="http://127.0.0.1:{port}/chart.png">')
    subprocess.run(
        [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--dump-dom", page.as_uri()],
        capture_output=True, timeout=HANG_TIMEOUT, check=True,
    )
    deadline = time.monotonic() + 60  # the accept thread's turn may come late on a busy machine
    while not connections and time.monotonic() < deadline:
        time.sleep(0.02)
    assert connections and connections[0].startswith(b"GET /chart.png")


def test_load_page_offline_launches_its_own_browser(tmp_path):
    require_chromium()
    load = load_page_offline(write_page(tmp_path, "<p>Total: 42</p>"))
    assert load.text == "Total: 42" and load.images == [] and load.problems() == []


def test_require_chromium_skips_saying_how_to_install(monkeypatch):
    monkeypatch.setattr(harness, "chromium_path", lambda: None)
    harness._chromium_problem.cache_clear()
    try:
        with pytest.raises(pytest.skip.Exception, match=r"chromium is not installed.*make browser"):
            require_chromium()
    finally:
        harness._chromium_problem.cache_clear()
