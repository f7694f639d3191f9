"""People in a real browser: Debian's headless Chromium driven by Playwright, each person in their
own browser context (own storage, own WebSocket), using the bundled web client at /app/ the way a
person would: labels, buttons, what is on screen.

Chromium is the system's (/usr/bin/chromium, installed by scripts/setup.sh); Playwright never
downloads a browser. It starts with --headless, --no-sandbox (the probes run as root), without
background networking, with a fresh profile dir per launch, and trusts exactly the target's CA
(by public key), so nothing about TLS is ignored for any other certificate.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import os
import secrets
import shutil
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from playwright.sync_api import (
    Browser,
    BrowserContext,
    Locator,
    Page,
    Playwright,
    Request,
    Response,
    ViewportSize,
    WebSocket,
    sync_playwright,
)
from playwright.sync_api import Error as PlaywrightError
from playwright.sync_api import TimeoutError as PlaywrightTimeout

from preflight.evidence import EvidenceLog
from preflight.probe.target import ProbeTarget
from preflight.probe.web import WEB_PATH

CHROMIUM = Path("/usr/bin/chromium")
LAUNCH_TIMEOUT_MS = 30_000
# How long a step may take before the journey gives up on it: generous, for a loaded 2-core
# machine; a healthy system answers in well under a second. Not a performance target (the load
# profile measures those), only the point where "not yet" becomes "never".
STEP_TIMEOUT_MS = 20_000
STEP_TIMEOUT_S = STEP_TIMEOUT_MS / 1000  # the same, for polls of what is on screen
# Signing in is several steps in one: the sign-in request, the first channel list, then the
# realtime socket's connect and auth; it gets two steps' time before "never".
SIGN_IN_TIMEOUT_MS = 2 * STEP_TIMEOUT_MS
NETWORK_NOTES = 8  # what a failed wait names of the page's last network trouble
DESKTOP: ViewportSize = {"width": 1024, "height": 700}
SCREENSHOT_QUALITY = 60  # JPEG: a few tens of KB per screenshot in the record
SESSION_KEY = "chatsdk.session"

# Installed before any page script runs: CSP violations the page causes.
WATCH_CSP = (
    "window.__cspViolations = [];"
    "document.addEventListener('securitypolicyviolation', e =>"
    " window.__cspViolations.push(e.violatedDirective + ' ' + e.blockedURI));"
)


def spki_hashes(ca_file: Path) -> list[str]:
    """base64(sha256(SubjectPublicKeyInfo)) of each certificate in a PEM file: what Chromium's
    --ignore-certificate-errors-spki-list takes to trust a private CA (and nothing else)."""
    hashes = []
    for cert in x509.load_pem_x509_certificates(ca_file.read_bytes()):
        spki = cert.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        hashes.append(base64.b64encode(hashlib.sha256(spki).digest()).decode())
    return hashes


@dataclass
class BrowserSession:
    """One Chromium for a module of journeys; contexts (people) come and go."""

    playwright: Playwright
    browser: Browser
    home: Path
    contexts: list[BrowserContext] = field(default_factory=list)

    def person(
        self,
        target: ProbeTarget,
        evidence: EvidenceLog,
        label: str,
        *,
        viewport: ViewportSize | None = None,
        mobile: bool = False,
        timeout_ms: int = STEP_TIMEOUT_MS,
    ) -> Person:
        context = self.browser.new_context(
            viewport=viewport or DESKTOP,
            is_mobile=mobile,
            has_touch=mobile,
            device_scale_factor=1,
            accept_downloads=True,
            base_url=target.edge_url,
        )
        context.set_default_timeout(timeout_ms)
        context.add_init_script(WATCH_CSP)
        self.contexts.append(context)
        page = context.new_page()
        name = f"{label} {secrets.token_hex(3)}"
        person = Person(name, context, page, evidence, timeout_ms)
        page.on("pageerror", lambda error: person.errors.append(f"{name}: {error}"))
        watch_network(page, person.network)
        return person

    def screenshot_all(self, evidence: EvidenceLog, when: str) -> None:
        """What every open page shows, as evidence (a page that no longer answers is noted)."""
        for n, context in enumerate(self.contexts, 1):
            for page in context.pages:
                try:
                    shot = page.screenshot(type="jpeg", quality=SCREENSHOT_QUALITY, timeout=5000)
                except PlaywrightError as error:
                    evidence.note(f"screenshot of browser {n} {when}: none ({error.message})")
                    continue
                evidence.attach(f"screenshot of browser {n} {when}", shot, "image/jpeg")

    def close_contexts(self) -> None:
        for context in self.contexts:
            with contextlib.suppress(Exception):
                context.close()
        self.contexts.clear()


def watch_network(page: Page, notes: list[str]) -> None:
    """Keep what a failed wait should name of the page's network, newest last: answers of 400
    and above (with Retry-After), requests that got no answer, and every realtime socket's
    opening, errors, error frames and close."""

    def note(text: str) -> None:
        notes.append(f"{time.strftime('%H:%M:%S')} {text}")
        del notes[:-NETWORK_NOTES]

    def answered(response: Response) -> None:
        if response.status >= 400:
            retry = response.headers.get("retry-after")
            after = f" (Retry-After {retry})" if retry else ""
            request = response.request
            note(f"{request.method} {urlsplit(request.url).path} -> {response.status}{after}")

    def failed(request: Request) -> None:
        note(f"{request.method} {urlsplit(request.url).path} failed: {request.failure}")

    def socket(ws: WebSocket) -> None:
        path = urlsplit(ws.url).path
        note(f"WebSocket {path} opening")
        ws.on("socketerror", lambda error: note(f"WebSocket {path} error: {error}"))
        ws.on("close", lambda _ws: note(f"WebSocket {path} closed"))

        def received(payload: str | bytes) -> None:
            with contextlib.suppress(ValueError):
                frame = json.loads(payload)
                if isinstance(frame, dict) and frame.get("type") == "error":
                    note(f"WebSocket {path} error frame {json.dumps(frame)[:160]}")

        ws.on("framereceived", received)

    page.on("response", answered)
    page.on("requestfailed", failed)
    page.on("websocket", socket)


@contextlib.contextmanager
def chromium(target: ProbeTarget) -> Iterator[BrowserSession]:
    if not CHROMIUM.exists():
        raise RuntimeError(
            f"{CHROMIUM} is missing: install Debian's chromium package (scripts/setup.sh does, "
            "as root) to run the browser journeys"
        )
    args = ["--headless", "--no-sandbox", "--disable-background-networking"]
    args += ["--disable-component-update", "--no-first-run", "--disable-sync"]
    if target.info.edge.ca_file is not None:
        args.append(
            f"--ignore-certificate-errors-spki-list={','.join(spki_hashes(target.info.edge.ca_file))}"
        )
    home = Path(tempfile.mkdtemp(prefix="preflight-browser-"))
    try:
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(
                executable_path=str(CHROMIUM),
                args=args,
                chromium_sandbox=False,
                timeout=LAUNCH_TIMEOUT_MS,
                downloads_path=str(home / "downloads"),
                env={**os.environ, "HOME": str(home)},
            )
            session = BrowserSession(playwright, browser, home)
            try:
                yield session
            finally:
                session.close_contexts()
                browser.close()
    finally:
        shutil.rmtree(home, ignore_errors=True)


def demo_or_skip(target: ProbeTarget, evidence: EvidenceLog) -> None:
    """The journeys sign in through the web client's demo sign-in; a deployment without it
    (production) cannot be driven by them."""
    response = target.http.get("/v1/demo")
    evidence.request(response)
    if response.status != 200:
        pytest.skip(
            f"target {target.name} offers no demo sign-in (GET /v1/demo answered "
            f"{response.status}); run the browser journeys against a staging deployment with "
            "CHATSDK_DEMO=1"
        )


@dataclass
class Person:
    """Someone at a browser: a context of their own and one page of the web client."""

    name: str
    context: BrowserContext
    page: Page
    evidence: EvidenceLog
    timeout_ms: int = STEP_TIMEOUT_MS  # how long one step may take (a slow link: longer)
    errors: list[str] = field(default_factory=list)
    network: list[str] = field(default_factory=list)  # watch_network's notes

    # -- getting in ------------------------------------------------------------------------

    def open_client(self) -> None:
        __tracebackhide__ = True
        response = self.page.goto(WEB_PATH)
        status = response.status if response is not None else None
        url = self.page.url
        assert status == 200, f"the web client at {url} must load with 200 (got {status})"

    def sign_in(self) -> None:
        __tracebackhide__ = True
        self.open_client()
        self.page.get_by_label("Your name").fill(self.name)
        self.page.get_by_role("button", name="Sign in").click()
        self.wait_live(f"{self.name} signing in", max(SIGN_IN_TIMEOUT_MS, self.timeout_ms))

    def wait_live(self, when: str, timeout_ms: int | None = None) -> None:
        __tracebackhide__ = True
        wait_ms = timeout_ms or self.timeout_ms
        status = self.page.locator("#status")
        try:
            self.page.locator("#status[data-state=live]").wait_for(timeout=wait_ms)
        except PlaywrightTimeout:
            shown = status.text_content(timeout=1000) if status.count() else "no status at all"
            raise AssertionError(
                f"the web client must be live (signed in, realtime connected) after {when} within "
                f"{wait_ms / 1000:.0f} s (it shows {shown!r}{self.screen_state()})"
            ) from None

    def screen_state(self) -> str:
        """Where the client stands, for a failed wait: still on the sign-in form (and its error),
        and the page's last network trouble."""
        parts = []
        with contextlib.suppress(PlaywrightError):
            if self.page.locator("#signin").is_visible():
                error = self.page.locator("#signin-error")
                shown = error.text_content(timeout=1000) if error.is_visible() else None
                parts.append(f"; still on the sign-in form, {shown or 'with no error shown'}")
        if self.network:
            parts.append(f"; its network: {' | '.join(self.network)}")
        else:
            parts.append("; no network trouble seen")
        return "".join(parts)

    @property
    def user_id(self) -> str:
        session: dict[str, Any] = self.page.evaluate(
            f"JSON.parse(sessionStorage.getItem({SESSION_KEY!r}))"
        )
        return str(session["user_id"])

    @property
    def access_token(self) -> str:
        session: dict[str, Any] = self.page.evaluate(
            f"JSON.parse(sessionStorage.getItem({SESSION_KEY!r}))"
        )
        return str(session["access_token"])

    def csp_violations(self) -> list[str]:
        found: list[str] = self.page.evaluate("window.__cspViolations || []")
        return found

    # -- doing things ------------------------------------------------------------------------

    def opened(self, dialog: Locator) -> bool:
        """Whether a dialog is open (within one step's timeout)."""
        try:
            dialog.wait_for(state="visible", timeout=self.timeout_ms)
        except PlaywrightTimeout:
            return False
        return True

    def title(self) -> str:
        """What the page's header shows: the open channel, or "Pick a channel"."""
        return self.page.locator("#channel-title").inner_text(timeout=1000)

    def open_channel(self, name: str) -> None:
        self.page.locator(".channel-button", has_text=f"# {name}").click()
        self.page.locator("#channel-title", has_text=f"# {name}").wait_for()

    def send(self, text: str) -> None:
        self.page.get_by_role("textbox", name="Message", exact=True).fill(text)
        self.page.get_by_role("button", name="Send", exact=True).click()

    def message(self, text: str) -> Any:
        return self.page.locator("#message-list > .message", has_text=text)

    def shows(self, text: str) -> bool:
        try:
            self.message(text).first.wait_for(timeout=self.timeout_ms)
        except PlaywrightTimeout:
            return False
        return True

    def seqs(self) -> list[int]:
        found: list[int] = self.page.eval_on_selector_all(
            "#message-list > .message", "els => els.map(e => Number(e.dataset.seq))"
        )
        return found

    def texts(self) -> list[str]:
        found: list[str] = self.page.eval_on_selector_all(
            "#message-list > .message .text", "els => els.map(e => e.textContent)"
        )
        return found

    def badge(self, channel: str) -> int:
        badge = self.page.locator(".channel-button", has_text=f"# {channel}").locator(".badge")
        return int(badge.text_content() or 0) if badge.count() else 0

    def screenshot(self, what: str) -> None:
        shot = self.page.screenshot(type="jpeg", quality=SCREENSHOT_QUALITY)
        self.evidence.attach(f"screenshot: {what}", shot, "image/jpeg")
