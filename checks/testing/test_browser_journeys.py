"""User journeys in a real browser: people sign in to the bundled web client (/app/) in headless
Chromium, each in their own browser context, and use it as a person would. Each journey decides
its checklist item; screenshots of what the people saw are attached as evidence.

One Chromium serves the whole module; each journey opens fresh contexts and closes them.
"""

from __future__ import annotations

import hashlib
import re
import secrets
import time
from collections.abc import Callable, Iterator

import pytest
from playwright.sync_api import ViewportSize

from checks._chat import call
from checks.testing._browser import (
    STEP_TIMEOUT_MS,
    STEP_TIMEOUT_S,
    BrowserSession,
    Person,
    chromium,
    demo_or_skip,
)
from checks.testing.conftest import CALL_FAILED
from preflight.evidence import EvidenceLog
from preflight.polling import poll, until
from preflight.probe.target import ProbeTarget
from preflight.probe.web import WEB_PATH

MOBILE: ViewportSize = {"width": 360, "height": 740}
VIEWPORT_META = re.compile(
    r"""<meta\s+name=["']viewport["']\s+content=["'](?P<content>[^"']*)["']""", re.IGNORECASE
)
# WCAG 2.2 success criterion 2.5.8 (target size, minimum, level AA): 24 by 24 CSS pixels.
MIN_TARGET_PX = 24
# A high-latency, low-bandwidth link (Chrome DevTools' "Slow 4G" preset, which is the old "Fast
# 3G"): 562.5 ms round trip, 1.44 Mbit/s down, 675 kbit/s up.
SLOW_LINK = {
    "offline": False,
    "latency": 562.5,
    "downloadThroughput": 1_440_000 / 8,
    "uploadThroughput": 675_000 / 8,
}
TYPING_ROUNDS = 4
# Once a screen has changed, how long it may take to settle on its final state.
SETTLE_S = 1.5
# Every step on the slow link costs a few round trips of over half a second each.
SLOW_LINK_TIMEOUT_MS = 2 * STEP_TIMEOUT_MS
HISTORY_MESSAGES = 60  # more than the client's page of 50: the reader must scroll for the rest
UPLOAD_BYTES = 256 * 1024
UPLOAD_LINK = {
    "offline": False,
    "latency": 20,
    "downloadThroughput": -1,
    "uploadThroughput": 128 * 1024,
}


@pytest.fixture(scope="module")
def browser(target: ProbeTarget) -> Iterator[BrowserSession]:
    with chromium(target) as session:
        yield session


@pytest.fixture
def people(
    request: pytest.FixtureRequest, browser: BrowserSession, evidence: EvidenceLog
) -> Iterator[BrowserSession]:
    """The module's browser; every context a journey opened is closed after it. A journey that
    failed or broke leaves what each person's screen showed at that moment in its evidence."""
    yield browser
    if request.node.stash.get(CALL_FAILED, False):
        browser.screenshot_all(evidence, "when the journey stopped")
    browser.close_contexts()


def _token() -> str:
    return secrets.token_hex(4)


def _errors_as_evidence(evidence: EvidenceLog, *persons: Person) -> None:
    for person in persons:
        for error in person.errors[:5]:
            evidence.note(f"page error: {error}")


def ada_and_bob_in_general(
    target: ProbeTarget, evidence: EvidenceLog, people: BrowserSession
) -> tuple[Person, Person]:
    """Two demo users, each signed in in a browser context of their own, both in #general."""
    demo_or_skip(target, evidence)
    ada = people.person(target, evidence, "Ada")
    bob = people.person(target, evidence, "Bob")
    ada.sign_in()
    bob.sign_in()
    ada.open_channel("general")
    bob.open_channel("general")
    return ada, bob


@pytest.mark.checklist("TST-E2E-MESSAGE")
def test_a_message_sent_in_the_browser_is_read_back_by_another_member(
    target: ProbeTarget, evidence: EvidenceLog, people: BrowserSession
) -> None:
    """The core journey of a chat product: send, and another member reads it back."""
    demo_or_skip(target, evidence)
    ada = people.person(target, evidence, "Ada")
    bob = people.person(target, evidence, "Bob")
    ada.sign_in()
    bob.sign_in()
    violations = ada.csp_violations()
    assert not violations, (
        f"the web client at {WEB_PATH} must run under its own CSP (got {violations})"
    )

    # A channel of their own, made in the client, with Bob as a member.
    channel = f"journey-{_token()}"
    ada.page.get_by_role("button", name="New channel").click()
    ada.page.get_by_label("Name", exact=True).fill(channel)
    ada.page.get_by_label("Members (user ids, comma separated)").fill(bob.user_id)
    ada.page.get_by_role("button", name="Create channel").click()
    ada.page.locator("#channel-title", has_text=f"# {channel}").wait_for()

    text = f"Hello Bob, this is {ada.name} ({_token()})"
    started = time.monotonic()
    ada.send(text)
    assert ada.shows(text), (
        f"{ada.name}'s own message must appear in #{channel} after pressing Send "
        f"(it did not within {STEP_TIMEOUT_MS / 1000:.0f} s)"
    )
    evidence.figure("send to own screen", round((time.monotonic() - started) * 1000), "ms")
    assert ada.page.get_by_role("textbox", name="Message", exact=True).input_value() == "", (
        "the composer must be cleared once the message is sent"
    )

    # Earlier history, sent through the API as Ada, so that Bob has more than one page to read.
    history = [f"history {n:03d} {_token()}" for n in range(1, HISTORY_MESSAGES + 1)]
    as_ada = target.http.as_user(ada.access_token)
    channel_id = ada.page.locator(".channel.active").get_attribute("data-channel-id")
    for line in history:
        body = {"text": line, "client_msg_id": secrets.token_hex(8)}
        response = call(as_ada, "POST", f"/v1/channels/{channel_id}/messages", json=body)
        assert response.status == 201, f"seeding history: POST answered {response}"

    # Bob reloads (still signed in: the session lives in the tab), opens the channel and reads.
    bob.page.reload()
    bob.wait_live("a reload")
    bob.open_channel(channel)
    last = history[-1]
    assert bob.shows(last), (
        f"{bob.name} must read {ada.name}'s messages in #{channel} after a reload "
        f"(the latest, {last!r}, is not shown; shown: {bob.texts()[-3:]})"
    )
    # The client shows the author's id until its lookup of the author's name answers.
    author = poll(
        bob.message(last).first.locator(".author").text_content,
        STEP_TIMEOUT_S,
        accept=lambda shown: shown == ada.name,
    ).value
    assert author == ada.name, (
        f"the message must name its author {ada.name!r} within {STEP_TIMEOUT_S:.0f} s "
        f"(got {author!r})"
    )

    # Infinite scroll: reaching the top loads earlier pages by seq until the first message.
    first_page = len(bob.seqs())
    beginning = bob.page.locator("#history-status", has_text="beginning of the channel")
    for _ in range(5):
        bob.page.locator("#messages").evaluate("el => { el.scrollTop = 0; }")
        if until(lambda: beginning.count() > 0, 2.0):
            break
    seqs = bob.seqs()
    evidence.figure("messages on the first page", first_page)
    evidence.figure("messages after scrolling to the top", len(seqs))
    expected = list(range(1, HISTORY_MESSAGES + 2))
    assert seqs == expected, (
        f"scrolling to the top of #{channel} must show every message once, in seq order "
        f"1..{len(expected)} (got {len(seqs)} messages, seqs {seqs[:3]}...{seqs[-3:]}, "
        f"missing {sorted(set(expected) - set(seqs))[:5]})"
    )
    assert bob.texts()[0] == text, (
        f"the first message of #{channel} must be {ada.name}'s greeting (got {bob.texts()[0]!r})"
    )
    bob.screenshot(f"{bob.name} reads #{channel} from its beginning after a reload")
    _errors_as_evidence(evidence, ada, bob)


@pytest.mark.checklist("TST-E2E-REALTIME")
def test_messages_reach_another_browser_live_and_after_a_reconnect(
    target: ProbeTarget, evidence: EvidenceLog, people: BrowserSession
) -> None:
    """Without realtime delivery the product is not a chat."""
    ada, bob = ada_and_bob_in_general(target, evidence, people)

    # Typing shows on the other side (typing is ephemeral, so Ada keeps typing, as people do).
    composer = ada.page.get_by_role("textbox", name="Message", exact=True)
    typing = bob.page.locator("#typing", has_text=f"{ada.name} is typing")
    for _ in range(TYPING_ROUNDS):
        composer.press_sequentially("typing ")
        if until(lambda: typing.count() > 0, STEP_TIMEOUT_S / TYPING_ROUNDS):
            break
    assert typing.count() > 0, (
        f"{bob.name} must see '{ada.name} is typing…' while {ada.name} types "
        f"(shown: {bob.page.locator('#typing').text_content()!r})"
    )

    live = f"live {_token()}"
    started = time.monotonic()
    ada.send(live)
    assert bob.shows(live), (
        f"{ada.name}'s message {live!r} must reach {bob.name}'s open #general without a reload "
        f"within {STEP_TIMEOUT_MS / 1000:.0f} s (it did not)"
    )
    evidence.figure("browser to browser delivery", round((time.monotonic() - started) * 1000), "ms")

    # A message in a channel Bob is not looking at raises its unread count.
    before = bob.badge("random")
    ada.open_channel("random")
    ada.send(f"elsewhere {_token()}")
    assert until(lambda: bob.badge("random") == before + 1, STEP_TIMEOUT_S), (
        f"#random's unread count in {bob.name}'s channel list must go from {before} to "
        f"{before + 1} when {ada.name} posts there (it shows {bob.badge('random')})"
    )
    ada.open_channel("general")

    # Bob loses the network; what Ada sends meanwhile arrives once he is back, in order, once.
    bob.context.set_offline(True)
    offline = bob.page.locator("#status[data-state=offline]")
    assert until(lambda: offline.count() > 0, STEP_TIMEOUT_S), (
        f"{bob.name}'s client must show that it is offline (it shows "
        f"{bob.page.locator('#status').text_content()!r})"
    )
    missed = [f"while offline {n} {_token()}" for n in (1, 2, 3)]
    for line in missed:
        ada.send(line)
        assert ada.shows(line), f"{ada.name}'s message {line!r} must be sent"
    bob.context.set_offline(False)
    bob.wait_live("the network came back")
    after = f"after the reconnect {_token()}"
    ada.send(after)
    assert bob.shows(after), (
        f"{bob.name} must receive {after!r} live after reconnecting (it did not within "
        f"{STEP_TIMEOUT_MS / 1000:.0f} s)"
    )
    texts = bob.texts()
    tail = [t for t in texts if t in (*missed, after)]
    assert tail == [*missed, after], (
        f"after reconnecting, {bob.name} must see the {len(missed)} messages sent while he was "
        f"offline once each and in order before {after!r} (got {tail})"
    )
    seqs = bob.seqs()
    assert seqs == sorted(set(seqs)), f"{bob.name}'s history must be in seq order, once each"
    bob.screenshot(f"{bob.name} after reconnecting: the messages sent while offline, in order")
    _errors_as_evidence(evidence, ada, bob)


@pytest.mark.checklist("TST-E2E-POLL")
def test_a_poll_is_created_and_voted_on_in_two_browsers(
    target: ProbeTarget, evidence: EvidenceLog, people: BrowserSession
) -> None:
    """A broken poll flow is a visible product failure."""
    ada, bob = ada_and_bob_in_general(target, evidence, people)

    question = f"Lunch at noon? ({_token()})"
    ada.page.get_by_role("button", name="Poll", exact=True).click()
    dialog = ada.page.locator("#poll-dialog")
    assert ada.opened(dialog), (
        f"pressing Poll must open the new-poll dialog for {ada.name} within "
        f"{STEP_TIMEOUT_S:.0f} s (the page shows {ada.title()!r})"
    )
    dialog.get_by_label("Question").fill(question)
    dialog.get_by_label("Option 1").fill("Yes")
    dialog.get_by_label("Option 2").fill("No")
    dialog.get_by_role("button", name="Create poll").click()

    def card(person: Person) -> object:
        return person.page.locator(".poll", has_text=question)

    def votes(person: Person) -> dict[str, int]:
        rows = person.page.locator(".poll", has_text=question).locator(".poll-option")
        return {
            rows.nth(i).locator(".vote").inner_text(): int(
                rows.nth(i).locator(".votes").get_attribute("data-votes") or -1
            )
            for i in range(rows.count())
        }

    def shows_votes(viewer: Person, expected: dict[str, int]) -> Callable[[], bool]:
        return lambda: votes(viewer) == expected

    for person in (ada, bob):
        assert until(shows_votes(person, {"Yes": 0, "No": 0}), STEP_TIMEOUT_S), (
            f"{person.name} must see the new poll {question!r} with options Yes and No and no "
            f"votes (shows {votes(person) or 'no poll'})"
        )

    def vote(person: Person, option: str, expected: dict[str, int]) -> None:
        """Vote, then wait for each screen to change and judge what it changed to (a wrong count
        fails at once; only a screen that never changes takes the whole step timeout)."""
        __tracebackhide__ = True
        before = {viewer.name: votes(viewer) for viewer in (ada, bob)}
        person.page.locator(".poll", has_text=question).get_by_role("button", name=option).click()
        for viewer in (ada, bob):
            until(lambda: not shows_votes(viewer, before[viewer.name])(), STEP_TIMEOUT_S)  # noqa: B023
            until(shows_votes(viewer, expected), SETTLE_S)
            assert votes(viewer) == expected, (
                f"after {person.name} votes {option}, {viewer.name} must see {expected} "
                f"(shows {votes(viewer)})"
            )

    vote(bob, "Yes", {"Yes": 1, "No": 0})
    vote(ada, "No", {"Yes": 1, "No": 1})
    # One vote per member: Bob changing his mind moves his vote, it does not add one.
    vote(bob, "No", {"Yes": 0, "No": 2})
    chosen = bob.page.locator(".poll", has_text=question).locator(".vote.chosen").all_inner_texts()
    assert chosen == ["No"], f"{bob.name}'s own choice must be marked No (got {chosen})"

    ada.page.reload()
    ada.wait_live("a reload")
    assert until(lambda: votes(ada) == {"Yes": 0, "No": 2}, STEP_TIMEOUT_S), (
        f"the poll's counts must survive a reload (after one {ada.name} sees {votes(ada)})"
    )
    bob.screenshot(f"{bob.name} sees the poll's counts update live")
    _errors_as_evidence(evidence, ada, bob)


@pytest.mark.checklist("TST-E2E-UPLOAD")
def test_a_file_uploaded_in_one_browser_downloads_in_another(
    target: ProbeTarget, evidence: EvidenceLog, people: BrowserSession
) -> None:
    """Uploads are where storage, auth and limits meet; they break silently."""
    ada, bob = ada_and_bob_in_general(target, evidence, people)

    content = secrets.token_bytes(UPLOAD_BYTES)
    filename = f"preflight-{_token()}.bin"
    # A slower uplink, so the progress bar has something to show.
    cdp = ada.context.new_cdp_session(ada.page)
    cdp.send("Network.enable")
    cdp.send("Network.emulateNetworkConditions", UPLOAD_LINK)
    ada.page.locator("#file-input").set_input_files(
        {"name": filename, "mimeType": "application/octet-stream", "buffer": content}
    )
    progress = ada.page.locator("#upload-progress")
    seen: list[float] = []

    def done() -> bool:
        value = float(progress.get_attribute("value") or 0)
        if not seen or seen[-1] != value:
            seen.append(value)
        return ada.page.locator("#upload[data-state=done]").count() > 0

    finished = until(done, STEP_TIMEOUT_S * 2)
    done()  # the bar's value once the upload is done
    assert finished, (
        f"the upload of {filename} ({UPLOAD_BYTES} bytes) must finish with its progress bar at "
        f"100 (progress seen: {seen})"
    )
    cdp.send("Network.emulateNetworkConditions", {**UPLOAD_LINK, "uploadThroughput": -1})
    evidence.note(f"upload progress values seen: {seen}")
    assert seen[-1] == 100, f"the progress bar must end at 100 (got {seen})"

    text = f"The file, as promised ({_token()})"
    ada.page.get_by_role("textbox", name="Message", exact=True).fill(text)
    ada.page.get_by_role("button", name="Send", exact=True).click()
    assert bob.shows(text), f"{bob.name} must see {ada.name}'s message with the file"
    button = bob.message(text).first.get_by_role("button", name="Download file")
    with bob.page.expect_download() as pending:
        button.click()
    download = pending.value
    received = download.path().read_bytes()
    evidence.figure("uploaded bytes", len(content), "B")
    evidence.figure("downloaded bytes", len(received), "B")
    assert hashlib.sha256(received).hexdigest() == hashlib.sha256(content).hexdigest(), (
        f"{bob.name} must download the bytes {ada.name} uploaded ({len(content)} bytes, "
        f"sha256 {hashlib.sha256(content).hexdigest()[:16]}...; got {len(received)} bytes, "
        f"sha256 {hashlib.sha256(received).hexdigest()[:16]}...)"
    )
    assert download.suggested_filename == filename, (
        f"the download must keep the file's name {filename!r} (got {download.suggested_filename!r})"
    )
    bob.screenshot(f"{bob.name} sees {ada.name}'s file and downloads it")
    _errors_as_evidence(evidence, ada, bob)


MEASURE_CONTROL = """
(el) => {
  const r = el.getBoundingClientRect();
  const x = r.left + r.width / 2, y = r.top + r.height / 2;
  const hit = document.elementFromPoint(x, y);
  return {width: r.width, height: r.height, left: r.left, top: r.top, right: r.right,
          bottom: r.bottom, reachable: hit !== null && (hit === el || el.contains(hit)
          || (el.control !== undefined && el.control === hit))};
}
"""


def _overflow(person: Person) -> int:
    """How far the page scrolls sideways (0: it does not)."""
    width: int = person.page.evaluate(
        "Math.max(document.documentElement.scrollWidth, document.body.scrollWidth)"
        " - window.innerWidth"
    )
    return width


def _declares_a_responsive_viewport(target: ProbeTarget, evidence: EvidenceLog) -> None:
    __tracebackhide__ = True
    response = target.http.get(WEB_PATH)
    evidence.request(response)
    assert response.status == 200, (
        f"the web client at {target.edge_url}{WEB_PATH} must be served (got {response.status})"
    )
    meta = VIEWPORT_META.search(response.body.decode("utf-8", errors="replace"))
    content = meta["content"] if meta else None
    assert content is not None, (
        f"{target.edge_url}{WEB_PATH} must declare a viewport "
        '(<meta name="viewport" content="width=device-width, initial-scale=1">; it declares none)'
    )
    assert "width=device-width" in content.replace(" ", ""), (
        f"the viewport of {target.edge_url}{WEB_PATH} must follow the device width "
        f"(got content={content!r})"
    )


def _link_note() -> str:
    down = SLOW_LINK["downloadThroughput"] * 8 / 1000
    up = SLOW_LINK["uploadThroughput"] * 8 / 1000
    return (
        f"link: {SLOW_LINK['latency']} ms latency, {down:.0f} kbit/s down, {up:.0f} kbit/s up; "
        f"viewport {MOBILE['width']}x{MOBILE['height']}"
    )


def _unusable_controls(person: Person, evidence: EvidenceLog) -> list[str]:
    """Controls a person cannot use on this screen: off screen, too small, or covered."""
    page = person.page
    controls = {
        "Channels": page.get_by_role("button", name="Channels"),
        "Attach": page.locator("label[for=file-input]"),
        "Poll": page.get_by_role("button", name="Poll", exact=True),
        "Message": page.get_by_role("textbox", name="Message", exact=True),
        "Send": page.get_by_role("button", name="Send", exact=True),
    }
    problems = []
    for name, control in controls.items():
        box = control.evaluate(MEASURE_CONTROL)
        evidence.figure(f"{name} control", round(min(box["width"], box["height"])), "px")
        inside = box["left"] >= 0 and box["top"] >= 0
        inside = inside and box["right"] <= MOBILE["width"] and box["bottom"] <= MOBILE["height"]
        small = min(box["width"], box["height"]) < MIN_TARGET_PX
        if not inside or small or not box["reachable"]:
            problems.append(
                f"{name} ({box['width']:.0f}x{box['height']:.0f} at {box['left']:.0f},"
                f"{box['top']:.0f}{'' if box['reachable'] else ', covered'})"
            )
    return problems


@pytest.mark.checklist("TST-MOBILE-CLIENT")
def test_the_client_works_on_a_small_phone_over_a_slow_link(
    target: ProbeTarget, evidence: EvidenceLog, people: BrowserSession
) -> None:
    """Mobile users on slow networks see time-outs the office network never shows."""
    demo_or_skip(target, evidence)
    _declares_a_responsive_viewport(target, evidence)
    mia = people.person(
        target, evidence, "Mia", viewport=MOBILE, mobile=True, timeout_ms=SLOW_LINK_TIMEOUT_MS
    )
    cdp = mia.context.new_cdp_session(mia.page)
    cdp.send("Network.enable")
    cdp.send("Network.emulateNetworkConditions", SLOW_LINK)
    evidence.note(_link_note())
    started = time.monotonic()
    mia.open_client()
    mia.page.get_by_label("Your name").wait_for()
    evidence.figure(
        "sign-in screen on the slow link", round((time.monotonic() - started) * 1000), "ms"
    )
    assert _overflow(mia) <= 0, (
        f"the sign-in screen must fit {MOBILE['width']} px without sideways scrolling "
        f"(it scrolls {_overflow(mia)} px)"
    )
    mia.page.get_by_label("Your name").fill(mia.name)
    mia.page.get_by_role("button", name="Sign in").tap()
    mia.wait_live("signing in over the slow link")
    evidence.figure(
        "signed in and live on the slow link", round((time.monotonic() - started) * 1000), "ms"
    )
    mia.page.locator("#channel-title", has_text="#").wait_for()

    # Everything a person needs is on screen, big enough to tap, and not covered.
    problems = _unusable_controls(mia, evidence)
    assert not problems, (
        f"at {MOBILE['width']}x{MOBILE['height']} every control must be on screen, at least "
        f"{MIN_TARGET_PX}x{MIN_TARGET_PX} px and not covered (not so: {'; '.join(problems)})"
    )

    # A long unbroken line and the channel drawer must not make the page scroll sideways.
    long_line = "x" * 300 + f" {_token()}"
    started = time.monotonic()
    mia.send(long_line)
    assert mia.shows(long_line), (
        f"{mia.name}'s message must be sent and shown over the slow link within "
        f"{mia.timeout_ms / 1000:.0f} s"
    )
    evidence.figure("send over the slow link", round((time.monotonic() - started) * 1000), "ms")
    assert _overflow(mia) <= 0, (
        f"the conversation must fit {MOBILE['width']} px without sideways scrolling, even with a "
        f"long unbroken line (it scrolls {_overflow(mia)} px)"
    )
    ada = people.person(target, evidence, "Ada")
    ada.sign_in()
    ada.open_channel("general")
    mia.page.get_by_role("button", name="Channels").tap()
    drawer = mia.page.locator("#sidebar")

    def drawer_open() -> bool:
        box = drawer.evaluate(MEASURE_CONTROL)
        return bool(box["left"] >= 0 and box["right"] <= MOBILE["width"])

    assert until(drawer_open, STEP_TIMEOUT_S), (
        f"the channel drawer must slide in on screen when Channels is tapped (it spans "
        f"{drawer.evaluate(MEASURE_CONTROL)['left']:.0f}.."
        f"{drawer.evaluate(MEASURE_CONTROL)['right']:.0f} px)"
    )
    mia.page.locator(".channel-button", has_text="# general").tap()
    mia.page.locator("#channel-title", has_text="# general").wait_for()
    reply = f"Welcome, {mia.name} ({_token()})"
    ada.send(reply)
    assert mia.shows(reply), (
        f"{ada.name}'s message must reach {mia.name}'s phone over the slow link within "
        f"{mia.timeout_ms / 1000:.0f} s"
    )
    assert _overflow(mia) <= 0, (
        f"#general must fit {MOBILE['width']} px without sideways scrolling "
        f"(it scrolls {_overflow(mia)} px)"
    )
    mia.screenshot(f"{mia.name} on a {MOBILE['width']}x{MOBILE['height']} phone over a slow link")
    _errors_as_evidence(evidence, mia, ada)
