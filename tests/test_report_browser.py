"""The HTML report in a real browser: Debian's headless Chromium, driven over the DevTools protocol.

The page is loaded from file:// with no network; the test proves Chromium asked for nothing else,
that the verdict, the sign-off panel and a linked item's evidence are on screen, and that a
screenshot shows the verdict in its colour.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import signal
import struct
import subprocess
import time
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from websockets.sync.client import ClientConnection, connect

from preflight.report import write_reports
from tests.records import OPEN_FAIL_ID, make_record, png

CHROMIUM = Path("/usr/bin/chromium")
WIDTH, HEIGHT = 1280, 900
NOT_READY_RED = (207, 34, 46)  # --not-ready in report.css
READY_GREEN = (26, 127, 55)  # --ready in report.css
TIMEOUT_S = 15.0


# --- a minimal DevTools client ------------------------------------------------------------------


@dataclass
class DevTools:
    ws: ClientConnection
    events: list[dict[str, Any]] = field(default_factory=list)
    last_id: int = 0

    def _receive(self, deadline: float) -> dict[str, Any]:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError("Chromium did not answer over the DevTools protocol in time")
        message: dict[str, Any] = json.loads(self.ws.recv(timeout=remaining))
        return message

    def call(self, method: str, session: str | None = None, **params: Any) -> dict[str, Any]:
        self.last_id += 1
        request: dict[str, Any] = {"id": self.last_id, "method": method, "params": params}
        if session is not None:
            request["sessionId"] = session
        self.ws.send(json.dumps(request))
        deadline = time.monotonic() + TIMEOUT_S
        while True:
            message = self._receive(deadline)
            if message.get("id") == self.last_id:
                if "error" in message:
                    raise RuntimeError(f"DevTools {method} failed: {message['error']}")
                result: dict[str, Any] = message["result"]
                return result
            if "method" in message:
                self.events.append(message)

    def wait_for(self, method: str, session: str) -> dict[str, Any]:
        deadline = time.monotonic() + TIMEOUT_S
        while True:
            for event in self.events:
                if event["method"] == method and event.get("sessionId") == session:
                    self.events.remove(event)
                    return event
            message = self._receive(deadline)
            if "method" in message:
                self.events.append(message)

    def requested_urls(self, session: str) -> list[str]:
        return [
            e["params"]["request"]["url"]
            for e in self.events
            if e["method"] == "Network.requestWillBeSent" and e.get("sessionId") == session
        ]


def _leftovers(sid: int, home: Path) -> dict[int, str]:
    """Live processes of Chromium's session or naming its temp home (crashpad starts its own
    session and keeps its database there); zombies are already dead."""
    found = {}
    for proc in Path("/proc").glob("[0-9]*"):
        try:
            stat = (proc / "stat").read_text()
            cmdline = (proc / "cmdline").read_bytes()
        except OSError:
            continue
        name_end = stat.rindex(")")
        fields = stat[name_end + 2 :].split()
        ours = int(fields[3]) == sid or str(home).encode() in cmdline
        if ours and fields[0] != "Z":
            found[int(proc.name)] = stat[: name_end + 1]
    return found


def _devtools_url(proc: subprocess.Popen[bytes], profile: Path, log: Path) -> str:
    port_file = profile / "DevToolsActivePort"
    deadline = time.monotonic() + TIMEOUT_S
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"chromium exited with {proc.returncode}: {log.read_text()[-2000:]}")
        lines = port_file.read_text().split() if port_file.exists() else []
        if len(lines) == 2:
            return f"ws://127.0.0.1:{lines[0]}{lines[1]}"
        time.sleep(0.05)
    pytest.fail(f"chromium wrote no {port_file} within {TIMEOUT_S} s: {log.read_text()[-2000:]}")


@pytest.fixture(scope="module")
def chromium(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DevTools]:
    if not CHROMIUM.exists():
        pytest.fail(
            f"{CHROMIUM} is missing: run scripts/setup.sh as root (it installs Debian's "
            "chromium package), then run the tests again"
        )
    home = tmp_path_factory.mktemp("chromium")
    profile, log = home / "profile", home / "chromium.log"
    with log.open("wb") as err:
        proc = subprocess.Popen(
            [
                str(CHROMIUM),
                "--headless",
                "--no-sandbox",  # the tests run as root
                "--disable-gpu",
                "--remote-debugging-port=0",
                f"--user-data-dir={profile}",
                "--no-first-run",
                "--no-default-browser-check",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--disable-extensions",
                "--disable-crash-reporter",
                "--disable-breakpad",
                "--hide-scrollbars",
                "about:blank",
            ],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=err,
            start_new_session=True,
            env={**os.environ, "HOME": str(home)},
        )
    try:
        url = _devtools_url(proc, profile, log)
        with connect(url, open_timeout=TIMEOUT_S, max_size=None) as ws:
            devtools = DevTools(ws)
            yield devtools
            # Closing lets Chromium reap its own children; a kill would leave them to init.
            devtools.call("Browser.close")
        proc.wait(timeout=TIMEOUT_S)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=TIMEOUT_S)
        deadline = time.monotonic() + 5
        while _leftovers(proc.pid, home) and time.monotonic() < deadline:
            time.sleep(0.05)
        left = _leftovers(proc.pid, home)
        for pid in left:  # ours by session or by our temp dir in their command line
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        assert not left, f"chromium processes outlived the browser by 5 s: {left}"


# --- looking at a page ----------------------------------------------------------------------------

# Installed before any page script runs: records every CSP violation the page causes.
WATCH_CSP = (
    "window.__violations = [];"
    "document.addEventListener('securitypolicyviolation', e =>"
    " window.__violations.push(e.violatedDirective + ' ' + e.blockedURI));"
)

# Scrolls each element into view and measures it; the last one stays in view for the screenshot.
MEASURE = """
(selectors) => selectors.map((sel) => {
  const el = document.querySelector(sel);
  if (!el) return {sel, found: false};
  el.scrollIntoView({block: "center"});
  const r = el.getBoundingClientRect();
  const s = getComputedStyle(el);
  return {sel, found: true, x: r.x, y: r.y, width: r.width, height: r.height,
          visibility: s.visibility, display: s.display,
          visible: el.checkVisibility({checkOpacity: true, checkVisibilityCSS: true}),
          text: el.innerText.slice(0, 300)};
})
"""


@dataclass
class Page:
    devtools: DevTools
    session: str

    def evaluate(self, expression: str) -> Any:
        result = self.devtools.call(
            "Runtime.evaluate", self.session, expression=expression, returnByValue=True
        )
        assert "exceptionDetails" not in result, result["exceptionDetails"]
        return result["result"].get("value")

    def measure(self, *selectors: str) -> list[dict[str, Any]]:
        measured: list[dict[str, Any]] = self.evaluate(f"({MEASURE})({json.dumps(selectors)})")
        return measured

    def screenshot(self) -> bytes:
        shot = self.devtools.call("Page.captureScreenshot", self.session, format="png")
        return base64.b64decode(shot["data"])

    def remote_requests(self) -> list[str]:
        urls = self.devtools.requested_urls(self.session)
        return [u for u in urls if u.split(":", 1)[0] not in ("file", "data")]


def open_page(
    devtools: DevTools, url: str, width: int = WIDTH, height: int = HEIGHT, mobile: bool = False
) -> Page:
    target = devtools.call("Target.createTarget", url="about:blank")["targetId"]
    session = devtools.call("Target.attachToTarget", targetId=target, flatten=True)["sessionId"]
    for method in ("Page.enable", "Network.enable", "Runtime.enable"):
        devtools.call(method, session)
    devtools.call(
        "Emulation.setDeviceMetricsOverride",
        session,
        width=width,
        height=height,
        deviceScaleFactor=1,
        mobile=mobile,
    )
    devtools.call("Page.addScriptToEvaluateOnNewDocument", session, source=WATCH_CSP)
    devtools.call("Page.navigate", session, url=url)
    devtools.wait_for("Page.loadEventFired", session)
    return Page(devtools, session)


def on_screen(box: dict[str, Any]) -> bool:
    return bool(
        box["found"]
        and box["visible"]
        and box["visibility"] == "visible"
        and box["display"] != "none"
        and box["width"] > 0
        and box["height"] > 0
        and box["x"] >= 0
        and box["y"] >= 0
        and box["x"] + box["width"] <= WIDTH
        and box["y"] + box["height"] <= HEIGHT
    )


# --- reading the screenshot ---------------------------------------------------------------------


def decode_png(data: bytes) -> tuple[int, int, list[bytes]]:
    """Width, height and RGB rows of an 8-bit, non-interlaced RGB or RGBA PNG."""
    assert data.startswith(b"\x89PNG\r\n\x1a\n"), "not a PNG"
    pos, idat, header = 8, b"", b""
    while pos < len(data):
        (length,) = struct.unpack(">I", data[pos : pos + 4])
        tag, body = data[pos + 4 : pos + 8], data[pos + 8 : pos + 8 + length]
        if tag == b"IHDR":
            header = body
        elif tag == b"IDAT":
            idat += body
        pos += 12 + length
    width, height, depth, colour, _, _, interlace = struct.unpack(">IIBBBBB", header)
    assert (depth, interlace) == (8, 0), "only 8-bit, non-interlaced PNGs"
    assert colour in (2, 6), "only RGB and RGBA PNGs"
    channels = 3 if colour == 2 else 4
    stride = width * channels
    raw = zlib.decompress(idat)
    rows: list[bytes] = []
    previous = bytearray(stride)
    for y in range(height):
        kind = raw[y * (stride + 1)]
        line = bytearray(raw[y * (stride + 1) + 1 : (y + 1) * (stride + 1)])
        for i in range(stride):
            a = line[i - channels] if i >= channels else 0
            b = previous[i]
            c = previous[i - channels] if i >= channels else 0
            if kind == 1:
                line[i] = (line[i] + a) & 0xFF
            elif kind == 2:
                line[i] = (line[i] + b) & 0xFF
            elif kind == 3:
                line[i] = (line[i] + (a + b) // 2) & 0xFF
            elif kind == 4:
                p = a + b - c
                pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
                pred = a if pa <= pb and pa <= pc else (b if pb <= pc else c)
                line[i] = (line[i] + pred) & 0xFF
        previous = line
        rgb = bytes(line) if channels == 3 else bytes(v for n, v in enumerate(line) if n % 4 != 3)
        rows.append(rgb)
    return width, height, rows


def colours(rows: list[bytes]) -> set[bytes]:
    return {row[i : i + 3] for row in rows for i in range(0, len(row), 3)}


def share_of(rows: list[bytes], box: dict[str, Any], rgb: tuple[int, int, int]) -> float:
    """The share of pixels in a box that have (about) the given colour."""
    x0, y0 = int(box["x"]) + 1, int(box["y"]) + 1
    x1, y1 = int(box["x"] + box["width"]) - 1, int(box["y"] + box["height"]) - 1
    hits = total = 0
    for y in range(y0, y1):
        row = rows[y]
        for x in range(x0, x1):
            total += 1
            pixel = row[3 * x : 3 * x + 3]
            hits += all(abs(pixel[n] - rgb[n]) <= 3 for n in range(3))
    return hits / total if total else 0.0


# --- the tests ------------------------------------------------------------------------------------


def test_report_shows_verdict_signoff_and_linked_evidence(
    chromium: DevTools, tmp_path: Path
) -> None:
    html, _ = write_reports(make_record(every_item=True), tmp_path)
    page = open_page(chromium, f"{html.as_uri()}#item-{OPEN_FAIL_ID}")

    assert page.remote_requests() == [], "the report must load nothing but itself"
    assert page.evaluate("window.__violations") == [], "nothing may trip the report's CSP"
    assert page.evaluate("location.protocol") == "file:"
    assert page.evaluate("window.scrollY") > 0, "the #item- link scrolls to the item"
    assert page.evaluate(f"document.querySelector('#item-{OPEN_FAIL_ID} details').open") is True

    # The item's evidence is closed by default (it does not block); the link opened it.
    evidence, signoff, verdict = page.measure(
        f"#item-{OPEN_FAIL_ID} details.evidence .ev-request",
        "#signoff",
        "#verdict",
    )
    for box in (evidence, signoff, verdict):
        assert on_screen(box), f"{box['sel']} must be visible on screen, got {box}"
    assert "GET https://127.0.0.1:8443/v1/files" in evidence["text"]
    assert "awaiting signature" in signoff["text"]
    assert "NOT READY" in verdict["text"]

    png_bytes = page.screenshot()
    shot = tmp_path / "report.png"
    shot.write_bytes(png_bytes)
    width, height, rows = decode_png(shot.read_bytes())
    assert (width, height) == (WIDTH, HEIGHT)
    assert len(colours(rows)) > 50, "the screenshot is (nearly) blank"
    assert share_of(rows, verdict, NOT_READY_RED) > 0.5, "the NOT READY verdict is red"
    assert share_of(rows, verdict, READY_GREEN) == 0


def test_without_the_link_evidence_of_a_non_blocking_item_stays_closed(
    chromium: DevTools, tmp_path: Path
) -> None:
    """The check above can fail: the same element is not on screen until a link opens it."""
    html, _ = write_reports(make_record(), tmp_path)
    page = open_page(chromium, html.as_uri())
    (evidence,) = page.measure(f"#item-{OPEN_FAIL_ID} details.evidence .ev-request")
    assert evidence["found"]
    assert not evidence["visible"], "closed <details> content is not visible"
    assert not on_screen(evidence)
    assert page.evaluate(f"document.querySelector('#item-{OPEN_FAIL_ID} details').open") is False


def test_a_ready_report_shows_green(chromium: DevTools, tmp_path: Path) -> None:
    sample = make_record()
    ready = make_record(items=[i for i in sample["items"] if not i["blocking"]])
    html, _ = write_reports(ready, tmp_path)
    page = open_page(chromium, html.as_uri())
    (verdict,) = page.measure("#verdict")
    assert on_screen(verdict)
    assert verdict["text"].startswith("READY")
    _, _, rows = decode_png(page.screenshot())
    assert share_of(rows, verdict, READY_GREEN) > 0.5
    assert share_of(rows, verdict, NOT_READY_RED) == 0


def test_a_remote_request_would_be_seen(chromium: DevTools, tmp_path: Path) -> None:
    """The network watch can fail: a page that asks for a remote image is caught."""
    page_file = tmp_path / "remote.html"
    page_file.write_text('<!doctype html><img src="http://127.0.0.1:9/pixel.png">')
    page = open_page(chromium, page_file.as_uri())
    assert page.remote_requests() == ["http://127.0.0.1:9/pixel.png"]


def test_the_screenshot_checks_can_fail() -> None:
    _, _, blank = decode_png(png(40, 20, (255, 255, 255)))
    assert len(colours(blank)) == 1
    _, _, green = decode_png(png(40, 20, READY_GREEN))
    box = {"x": 0, "y": 0, "width": 40, "height": 20}
    assert share_of(green, box, NOT_READY_RED) == 0
    assert share_of(green, box, READY_GREEN) == 1


# --- the layout at a desk and on a phone --------------------------------------------------------

OVERFLOW = "[document.documentElement.scrollWidth, document.documentElement.clientWidth]"
FIRST_SCREEN = """
(sels) => sels.map((sel) => {
  const el = document.querySelector(sel);
  if (!el) return null;
  const r = el.getBoundingClientRect();
  return [r.top, r.bottom, el.innerText.slice(0, 200)];
})
"""


@pytest.mark.parametrize(
    ("width", "height", "mobile"), [(1400, 900, False), (390, 844, True)], ids=["desk", "phone"]
)
def test_the_report_fits_the_screen_and_opens_on_the_verdict_and_its_blockers(
    chromium: DevTools, tmp_path: Path, width: int, height: int, mobile: bool
) -> None:
    html, _ = write_reports(make_record(every_item=True), tmp_path)
    page = open_page(chromium, html.as_uri(), width, height, mobile)
    assert page.evaluate("window.__violations") == []
    scroll_width, client_width = page.evaluate(OVERFLOW)
    assert scroll_width <= client_width, f"the page scrolls sideways at {width} px"
    verdict, head, first = page.evaluate(
        f"({FIRST_SCREEN})(['#verdict', '.blockers-head', '.blocker-group h3'])"
    )
    assert verdict[0] >= 0
    assert verdict[2].startswith("NOT READY")
    assert head[1] <= height, "the count of blocking items is on the first screen"
    assert "items block the release" in head[2]
    if width >= 1000:
        assert first[1] <= height, "and the first group of blockers"
        assert first[2].startswith("Failed or could not be decided")
    (tmp_path / f"report-{width}.png").write_bytes(page.screenshot())


def test_the_overflow_check_can_fail(chromium: DevTools, tmp_path: Path) -> None:
    wide = tmp_path / "wide.html"
    wide.write_text('<!doctype html><meta name="viewport" content="width=device-width">'
                    '<table><tr><td>' + "x" * 400 + "</td></tr></table>")  # fmt: skip
    page = open_page(chromium, wide.as_uri(), 390, 844, True)
    scroll_width, client_width = page.evaluate(OVERFLOW)
    assert scroll_width > client_width


def test_the_filter_shows_only_the_items_that_match(chromium: DevTools, tmp_path: Path) -> None:
    record = make_record(every_item=True)
    html, _ = write_reports(record, tmp_path)
    page = open_page(chromium, html.as_uri())
    visible = "document.querySelectorAll('article.item:not([hidden])').length"
    assert page.evaluate(visible) == len(record["items"])
    page.evaluate(
        "const s = document.getElementById('filter-outcome'); s.value = 'fail';"
        "s.dispatchEvent(new Event('change'));"
    )
    fails = [i["id"] for i in record["items"] if i["outcome"] == "fail"]
    assert page.evaluate(visible) == len(fails)
    assert page.evaluate("document.getElementById('filter-count').textContent") == (
        f"{len(fails)} of {len(record['items'])} items"
    )
    page.evaluate(
        f"const t = document.getElementById('filter-text'); t.value = '{fails[0].lower()}';"
        "t.dispatchEvent(new Event('input'));"
    )
    shown = page.evaluate(
        "Array.from(document.querySelectorAll('article.item:not([hidden])')).map(e => e.id)"
    )
    assert shown == [f"item-{fails[0]}"]
