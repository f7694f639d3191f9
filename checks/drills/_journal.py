"""The client journal of a drill: a few users send messages over HTTP and receive them over the
realtime WebSocket while a drill breaks something, and the verdict afterwards.

- Every send carries a fresh `client_msg_id`. 200/201 is `acked`; any other 4xx but 429 is
  `failed` (the API refused it, so it must not be stored); a 5xx, a timeout or no answer at all is
  indeterminate, and the sender retries the same `client_msg_id` as a well-behaved client does
  (after Retry-After, bounded), so the send ends acked, or stays `indeterminate` if the journal
  stops first. A 429 is waited out (the workload stays under the limits; it is counted apart).
- Every receiver holds one socket subscribed to every channel of the journal from seq 0; when the
  socket closes it records the close code and reconnects with `after_seq` = the last seq it holds
  (backfill), as system/chatsdk/API.md tells clients to.
- The verdict, after the fault is restored: lost = 0 (every acked message is stored, and delivered
  to every receiver after backfill), duplicates = 0 (stored or delivered twice), unexpected = 0
  (stored though refused, or never sent), every channel's seq strictly increasing from 1 without
  gaps, and every indeterminate send stored at most once.
"""

from __future__ import annotations

import json
import re
import secrets
import threading
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus

from checks._chat import Actor, Tenant
from preflight.client import ChatClient, Response, polite
from preflight.evidence import EvidenceLog
from preflight.polling import until
from preflight.probe.target import ProbeTarget
from preflight.wsclient import connect

SendState = Literal["acked", "failed", "indeterminate"]

REQUEST_TIMEOUT_S = 10.0  # an answer slower than this counts as no answer (a hang)
RETRY_WAIT_MAX_S = 2.0
SETTLE_S = 5.0  # after the restore: how long senders keep retrying indeterminate sends
DELIVERY_SETTLE_S = 10.0  # after the senders: how long receivers get to catch up (backfill),
DELIVERY_STALL_S = 3.0  # or until nothing arrived for this long
RECONNECT_WAIT_S = 0.25
PAGE = 200


# What must never reach a client in an error body: a stack trace, SQL, a DSN.
LEAK = re.compile(
    r'Traceback \(most recent|File "[^"]+", line|\basyncpg\.|\bredis\.exceptions|'
    r"postgres(?:ql)?://|redis://|\b(?:SELECT|INSERT|UPDATE)\b .+\b(?:FROM|INTO|SET)\b"
)


class ReadBackFailed(RuntimeError):
    """The journal could not read the channels back after the drill (the system still fails)."""


@dataclass(frozen=True)
class Attempt:
    at: float  # seconds since the journal started
    took: float
    status: int | None  # None: no HTTP answer
    detail: str  # error code of the body, or the exception
    retry_after: str | None = None
    leaked: bool = False  # the body held a stack trace, SQL or a DSN

    @property
    def failed(self) -> bool:
        """Not an answer a healthy system gives this workload (429 is the workload's own)."""
        return self.status is None or (self.status not in (200, 201, 429))


@dataclass
class Send:
    client_msg_id: str
    user_id: str
    channel_id: str
    attempts: list[Attempt] = field(default_factory=list)
    state: SendState = "indeterminate"
    message_id: str | None = None
    seq: int | None = None

    @property
    def retried(self) -> bool:
        return any(a.failed for a in self.attempts)


@dataclass(frozen=True)
class Close:
    receiver: str
    at: float
    code: int  # 1006: the connection ended without a close frame
    reason: str


@dataclass
class Receiver:
    actor: Actor
    last: dict[str, int]  # channel -> highest seq received
    delivered: dict[str, list[int]]  # channel -> every seq received, in arrival order
    arrivals: dict[tuple[str, int], float] = field(default_factory=dict)  # first arrival
    connects: int = 0
    connected: bool = False  # holds a socket on which it has subscribed to every channel
    connected_when_judged: bool = True
    connect_failures: int = 0
    errors: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class Stored:
    message_id: str
    seq: int
    user_id: str
    client_msg_id: str | None


@dataclass(frozen=True)
class Verdict:
    """The journal's verdict; `problems` is empty when the drill lost, duplicated and reordered
    nothing."""

    sends: int
    acked: int
    acked_after_retry: int
    failed: int
    indeterminate: int
    failed_attempts: int
    throttled_attempts: int
    statuses: dict[str, int]  # status (or "no answer") -> attempts, for the failed attempts
    slowest_attempt_s: float
    lost: list[str]  # acked client_msg_ids not stored
    duplicates: list[str]  # client_msg_ids stored more than once
    unexpected: list[str]  # stored, but refused by the API or never sent
    indeterminate_stored_twice: list[str]
    seq_problems: list[str]
    undelivered: dict[str, int]  # receiver -> stored messages it never received
    delivered_twice: dict[str, int]  # receiver -> messages it received more than once
    receiver_errors: dict[str, list[str]]  # receiver -> failed connects and error frames, timed
    closes: list[Close]
    reconnects: int
    stored: int

    def problems(self) -> list[str]:
        found = []
        if self.lost:
            found.append(f"{len(self.lost)} acknowledged sends lost ({', '.join(self.lost[:3])})")
        if self.duplicates:
            found.append(
                f"{len(self.duplicates)} messages stored twice ({', '.join(self.duplicates[:3])})"
            )
        if self.unexpected:
            found.append(
                f"{len(self.unexpected)} messages stored that were refused or never sent "
                f"({', '.join(self.unexpected[:3])})"
            )
        if self.indeterminate_stored_twice:
            found.append(
                f"{len(self.indeterminate_stored_twice)} indeterminate sends stored more than once"
            )
        found += self.seq_problems
        for receiver, n in self.undelivered.items():
            errors = self.receiver_errors.get(receiver, [])
            found.append(
                f"receiver {receiver} never received {n} stored messages"
                + (f" (its errors: {', '.join(errors[:5])})" if errors else "")
            )
        for receiver, n in self.delivered_twice.items():
            found.append(f"receiver {receiver} received {n} messages twice")
        return found

    def summary(self) -> str:
        return (
            f"{self.sends} sends: {self.acked} acked ({self.acked_after_retry} after a retry), "
            f"{self.failed} refused, {self.indeterminate} indeterminate; {self.failed_attempts} "
            f"failed attempts {dict(self.statuses)}; {self.stored} stored; lost "
            f"{len(self.lost)}, duplicates {len(self.duplicates)}, unexpected "
            f"{len(self.unexpected)}, seq problems {len(self.seq_problems)}, undelivered "
            f"{sum(self.undelivered.values())}; socket closes "
            f"{dict(Counter(c.code for c in self.closes))}, reconnects {self.reconnects}"
        )

    def record(self, evidence: EvidenceLog, prefix: str = "journal") -> None:
        """The journal's figures and its summary, in the probe's evidence."""
        figures: list[tuple[str, float, str]] = [
            ("sends", self.sends, ""),
            ("acked", self.acked, ""),
            ("acked after a retry", self.acked_after_retry, ""),
            ("refused", self.failed, ""),
            ("indeterminate", self.indeterminate, ""),
            ("failed attempts", self.failed_attempts, ""),
            ("throttled attempts (429)", self.throttled_attempts, ""),
            ("slowest attempt", round(self.slowest_attempt_s, 3), "s"),
            ("lost", len(self.lost), ""),
            ("duplicates", len(self.duplicates), ""),
            ("unexpected", len(self.unexpected), ""),
            ("seq problems", len(self.seq_problems), ""),
            ("undelivered", sum(self.undelivered.values()), ""),
            ("socket closes", len(self.closes), ""),
            ("reconnects", self.reconnects, ""),
        ]
        for name, value, unit in figures:
            evidence.figure(f"{prefix}: {name}", value, unit)
        evidence.note(f"{prefix}: {self.summary()}")
        for receiver, errors in self.receiver_errors.items():
            evidence.note(
                f"{prefix}: receiver {receiver}: {len(errors)} errors: {', '.join(errors)}"
            )


def _own_client(actor: Actor) -> ChatClient:
    """A sender's own connection to the edge, as the actor, with the journal's timeout."""
    own = actor.client
    return ChatClient(own.base_url, own.ca_file, own.headers, REQUEST_TIMEOUT_S)


class Journal:
    """`with Journal(target, "label") as journal:` sets up an app, users and channels, starts
    the senders and receivers, and on exit stops them; `journal.verdict` holds the result.

    The workload stays well under the edge's per-address and the API's per-user limits: the
    drills judge faults, not throttling. `sender_client` makes each sender's client (default:
    the sender's own, from this machine's one address); a workload above the edge's
    per-address rate gives each sender an address of its own (checks/drills/_sources.py)."""

    def __init__(
        self,
        target: ProbeTarget,
        label: str,
        *,
        senders: int = 3,
        receivers: int = 4,
        channels: int = 2,
        rate_per_sender: float = 4.0,
        sender_client: Callable[[Actor], ChatClient] | None = None,
    ) -> None:
        self.target = target
        self._sender_client = sender_client or _own_client
        self.label = label
        self.n_senders, self._n_receivers, self._n_channels = senders, receivers, channels
        self._interval = 1.0 / rate_per_sender
        self.sends: list[Send] = []
        self.closes: list[Close] = []
        self.receivers: list[Receiver] = []
        self.channels: list[str] = []
        self.marks: dict[str, float] = {}
        self.verdict: Verdict | None = None
        self._lock = threading.Lock()
        self._stop_sending = threading.Event()
        self._stop_receiving = threading.Event()
        self._give_up_at = float("inf")
        self._threads: list[threading.Thread] = []
        self._t0 = time.monotonic()
        self._reader: Actor | None = None

    # -- life cycle --------------------------------------------------------------------------

    def __enter__(self) -> Journal:
        try:
            self._start()
        except BaseException:
            self._stop_all()
            raise
        return self

    def _start(self) -> None:
        tenant = Tenant.create(self.target, f"drill-{self.label}")
        senders = [tenant.user("sender") for _ in range(self.n_senders)]
        receivers = [tenant.user("receiver") for _ in range(self._n_receivers)]
        members = [*senders[1:], *receivers]
        self.channels = [tenant.channel(senders[0], *members) for _ in range(self._n_channels)]
        self._reader = receivers[0]
        self._t0 = time.monotonic()
        for actor in receivers:
            receiver = Receiver(
                actor, dict.fromkeys(self.channels, 0), {c: [] for c in self.channels}
            )
            self.receivers.append(receiver)
            self._spawn(f"receive-{actor.user_id}", lambda r=receiver: self._receive(r))  # type: ignore[misc]
        self._wait_connected()
        for i, actor in enumerate(senders):
            channel = self.channels[i % len(self.channels)]
            self._spawn(f"send-{actor.user_id}", lambda a=actor, c=channel: self._send_loop(a, c))  # type: ignore[misc]

    def __exit__(self, *exc: object) -> None:
        try:
            if exc[0] is None:
                self.verdict = self.finish()
        finally:
            self._stop_all()

    def _stop_all(self) -> None:
        self._stop_sending.set()
        self._stop_receiving.set()
        self._give_up_at = 0.0
        for thread in self._threads:
            thread.join(timeout=REQUEST_TIMEOUT_S + 5)

    def now(self) -> float:
        return time.monotonic() - self._t0

    def mark(self, name: str) -> None:
        """Note when something happened (the fault, the restore), for the figures."""
        self.marks[name] = round(self.now(), 3)

    def steady(self, seconds: float) -> None:
        """Let the workload run for `seconds`."""
        time.sleep(seconds)

    def finish(self) -> Verdict:
        """Stop sending (retrying what is indeterminate for up to SETTLE_S), let receivers catch
        up for up to DELIVERY_SETTLE_S, read what is stored, and judge."""
        self.mark("finish")
        self._give_up_at = time.monotonic() + SETTLE_S
        self._stop_sending.set()
        for thread in self._threads:
            if thread.name.startswith("send-"):
                thread.join(timeout=SETTLE_S + REQUEST_TIMEOUT_S + 5)
        stored = {channel: self._read_channel(channel) for channel in self.channels}
        progress, progress_at = self._received(), time.monotonic()

        def settled() -> bool:
            nonlocal progress, progress_at
            if self._caught_up(stored):
                return True
            if (now := self._received()) != progress:
                progress, progress_at = now, time.monotonic()
                return False
            # Nothing arrives any more though every receiver holds a socket: what is missing
            # stays missing. (One still reconnecting gets until the deadline.)
            return time.monotonic() - progress_at > DELIVERY_STALL_S and self._all_connected()

        until(settled, DELIVERY_SETTLE_S, interval=0.1)
        with self._lock:
            for r in self.receivers:
                r.connected_when_judged = r.connected
        self._stop_receiving.set()
        for thread in self._threads:
            thread.join(timeout=REQUEST_TIMEOUT_S + 5)
        self.mark("judged")
        return self._judge(stored)

    # -- sending -----------------------------------------------------------------------------

    def _spawn(self, name: str, work: Callable[[], None]) -> None:
        thread = threading.Thread(target=work, name=name, daemon=True)
        self._threads.append(thread)
        thread.start()

    def _send_loop(self, actor: Actor, channel: str) -> None:
        client = self._sender_client(actor)
        n = 0
        next_at = time.monotonic()
        try:
            while not self._stop_sending.is_set():
                n += 1
                send = Send(
                    f"{self.label}-{actor.user_id}-{n}-{secrets.token_hex(3)}",
                    actor.user_id,
                    channel,
                )
                with self._lock:
                    self.sends.append(send)
                self._send_until_settled(client, send)
                next_at += self._interval
                pause = next_at - time.monotonic()
                if pause > 0:
                    self._stop_sending.wait(pause)
                else:
                    next_at = time.monotonic()
        finally:
            client.close()

    def _send_until_settled(self, client: ChatClient, send: Send) -> None:
        path = f"/v1/channels/{send.channel_id}/messages"
        body = {
            "text": f"drill {self.label} {send.client_msg_id}",
            "client_msg_id": send.client_msg_id,
        }
        while True:
            started = time.monotonic()
            response: Response | None = None
            detail = ""
            try:
                response = client.post(path, body)
            except Exception as exc:  # every transport failure is "no answer"
                detail = type(exc).__name__
                client.close()  # the connection's state is unknown: a fresh one next time
            took = time.monotonic() - started
            status = response.status if response is not None else None
            retry_after: str | None = None
            leaked = False
            if response is not None:
                detail = response.error_code or ""
                retry_after = response.headers.get("retry-after")
                leaked = bool(LEAK.search(response.body.decode("utf-8", "replace")))
            send.attempts.append(
                Attempt(
                    round(started - self._t0, 3),
                    round(took, 3),
                    status,
                    detail,
                    retry_after,
                    leaked,
                )
            )
            if response is not None and status in (200, 201):
                data = response.json()
                send.state, send.message_id, send.seq = "acked", data["message_id"], data["seq"]
                return
            if status is not None and 400 <= status < 500 and status != 429:
                send.state = "failed"
                return
            if time.monotonic() >= self._give_up_at:
                send.state = "indeterminate"
                return
            time.sleep(_retry_wait(response))

    # -- receiving ---------------------------------------------------------------------------

    def _wait_connected(self, timeout: float = 15.0) -> None:
        def connected() -> bool:
            with self._lock:
                return all(r.connects for r in self.receivers)

        if not until(connected, timeout, interval=0.05):
            raise RuntimeError(
                f"drill {self.label}: the journal's receivers could not connect to "
                f"{self.target.ws_url} within {timeout:g} s"
            )

    def _receive(self, receiver: Receiver) -> None:
        name = receiver.actor.user_id
        while not self._stop_receiving.is_set():
            try:
                with connect(
                    self.target.ws_url,
                    ssl=self.target.ssl_context(),
                    open_timeout=5,
                    close_timeout=2,
                ) as conn:
                    conn.send(json.dumps({"type": "auth", "token": receiver.actor.access_token}))
                    for channel in self.channels:
                        after = receiver.last[channel]
                        conn.send(
                            json.dumps(
                                {"type": "subscribe", "channel_id": channel, "after_seq": after}
                            )
                        )
                    with self._lock:
                        receiver.connects += 1
                        receiver.connected = True
                    try:
                        while not self._stop_receiving.is_set():
                            try:
                                raw = conn.recv(timeout=0.2)
                            except TimeoutError:
                                continue
                            self._on_frame(receiver, json.loads(raw))
                    finally:
                        with self._lock:
                            receiver.connected = False
            except ConnectionClosed as exc:
                code = exc.rcvd.code if exc.rcvd is not None else 1006
                reason = exc.rcvd.reason if exc.rcvd is not None else ""
                with self._lock:
                    self.closes.append(Close(name, round(self.now(), 3), code, reason))
            except (OSError, TimeoutError, InvalidHandshake, InvalidStatus) as exc:
                with self._lock:
                    receiver.connect_failures += 1
                    receiver.errors.append(f"{round(self.now(), 2)} s: {type(exc).__name__}")
            except Exception as exc:  # a bad frame or a bug: keep receiving, say what it was
                with self._lock:
                    receiver.errors.append(f"{round(self.now(), 2)} s: {exc!r}")
            if not self._stop_receiving.is_set():
                self._stop_receiving.wait(RECONNECT_WAIT_S)

    def _on_frame(self, receiver: Receiver, frame: dict[str, Any]) -> None:
        kind = frame.get("type")
        if kind == "message.new":
            channel = str(frame.get("channel_id"))
            seq = int(frame.get("seq") or frame["data"]["seq"])
            with self._lock:
                if channel in receiver.delivered:
                    receiver.delivered[channel].append(seq)
                    receiver.last[channel] = max(receiver.last[channel], seq)
                    receiver.arrivals.setdefault((channel, seq), self.now())
        elif kind == "error":
            with self._lock:
                receiver.errors.append(
                    f"{round(self.now(), 2)} s: error frame {frame.get('code')} "
                    f"on {frame.get('channel_id') or 'the socket'}"
                )

    def _all_connected(self) -> bool:
        with self._lock:
            return all(r.connected for r in self.receivers)

    def _received(self) -> int:
        with self._lock:
            return sum(len(seqs) for r in self.receivers for seqs in r.delivered.values())

    def _caught_up(self, stored: dict[str, list[Stored]]) -> bool:
        with self._lock:
            return all(
                r.last[c] >= max((m.seq for m in stored[c]), default=0)
                for r in self.receivers
                for c in self.channels
            )

    # -- judging -----------------------------------------------------------------------------

    def _read_channel(self, channel: str) -> list[Stored]:
        assert self._reader is not None
        reader = self._reader.client
        found: list[Stored] = []
        after = 0
        path = f"/v1/channels/{channel}/messages"
        while True:
            response = polite(
                lambda a=after: reader.get(path, query={"after_seq": a, "limit": PAGE})  # type: ignore[misc]
            )
            if response.status != 200:
                raise ReadBackFailed(
                    f"drill {self.label}: reading back channel {channel} failed: {response}"
                )
            page = response.json()
            for m in page["messages"]:
                found.append(
                    Stored(m["message_id"], int(m["seq"]), m["user_id"], m["client_msg_id"])
                )
            if not page["has_more"] or not page["messages"]:
                return found
            after = found[-1].seq

    def _judge(self, stored: dict[str, list[Stored]]) -> Verdict:
        sends = {s.client_msg_id: s for s in self.sends}
        by_cmid: Counter[str] = Counter()
        unexpected: list[str] = []
        seq_problems: list[str] = []
        for channel, messages in stored.items():
            seqs = [m.seq for m in messages]
            if seqs != list(range(1, len(seqs) + 1)):
                missing = sorted(set(range(1, max(seqs, default=0) + 1)) - set(seqs))
                seq_problems.append(
                    f"channel {channel}: seqs must run 1..{len(seqs)} without gaps "
                    f"(missing {missing[:5]}, order {seqs[:3]}..)"
                )
            for m in messages:
                cmid = m.client_msg_id or f"(no client_msg_id: {m.message_id})"
                by_cmid[cmid] += 1
                send = sends.get(cmid)
                if send is None or send.state == "failed":
                    unexpected.append(cmid)
        acked = [s for s in self.sends if s.state == "acked"]
        indeterminate = [s for s in self.sends if s.state == "indeterminate"]
        attempts = [a for s in self.sends for a in s.attempts]
        failed_attempts = [a for a in attempts if a.failed]
        all_stored = [m for messages in stored.values() for m in messages]
        undelivered: dict[str, int] = {}
        delivered_twice: dict[str, int] = {}
        for r in self.receivers:
            never = sum(
                len({m.seq for m in stored[c]} - set(r.delivered[c])) for c in self.channels
            )
            twice = sum(len(r.delivered[c]) - len(set(r.delivered[c])) for c in self.channels)
            if never:
                undelivered[r.actor.user_id] = never
            if twice:
                delivered_twice[r.actor.user_id] = twice
        return Verdict(
            sends=len(self.sends),
            acked=len(acked),
            acked_after_retry=sum(1 for s in acked if s.retried),
            failed=sum(1 for s in self.sends if s.state == "failed"),
            indeterminate=len(indeterminate),
            failed_attempts=len(failed_attempts),
            throttled_attempts=sum(1 for a in attempts if a.status == 429),
            statuses=dict(
                Counter(
                    str(a.status) if a.status else f"no answer ({a.detail})"
                    for a in failed_attempts
                )
            ),
            slowest_attempt_s=max((a.took for a in attempts), default=0.0),
            lost=[s.client_msg_id for s in acked if by_cmid[s.client_msg_id] == 0],
            duplicates=[cmid for cmid, n in by_cmid.items() if n > 1],
            unexpected=unexpected,
            indeterminate_stored_twice=[
                s.client_msg_id for s in indeterminate if by_cmid[s.client_msg_id] > 1
            ],
            seq_problems=seq_problems,
            undelivered=undelivered,
            delivered_twice=delivered_twice,
            receiver_errors={
                r.actor.user_id: [
                    *r.errors,
                    *([] if r.connected_when_judged else ["no socket when judged"]),
                ]
                for r in self.receivers
                if r.errors or not r.connected_when_judged
            },
            closes=list(self.closes),
            reconnects=sum(max(r.connects - 1, 0) for r in self.receivers),
            stored=len(all_stored),
        )

    def delivery_delays(self, since: float) -> dict[str, float]:
        """For each send acked at or after `since` (journal seconds): the seconds from its ack to
        its arrival on the slowest receiver (inf: some receiver never got it)."""
        delays: dict[str, float] = {}
        for send in self.sends:
            if send.state != "acked" or send.seq is None or not send.attempts:
                continue
            last = send.attempts[-1]
            acked_at = last.at + last.took
            if acked_at < since:
                continue
            key = (send.channel_id, send.seq)
            with self._lock:
                arrived = [r.arrivals.get(key) for r in self.receivers]
            delays[send.client_msg_id] = max(
                (a - acked_at if a is not None else float("inf")) for a in arrived
            )
        return delays

    def first_success(self, since: float) -> float | None:
        """When (journal seconds) the first attempt started at or after `since` was answered
        200/201: sends succeed again. None: none was yet."""
        with self._lock:
            attempts = [a for s in self.sends for a in s.attempts]
        done = [a.at + a.took for a in attempts if a.at >= since and a.status in (200, 201)]
        return min(done, default=None)

    def failed_attempts(self, since: float = 0.0, until: float = float("inf")) -> list[Attempt]:
        """The failed attempts that started within [since, until) (journal seconds)."""
        return [a for s in self.sends for a in s.attempts if a.failed and since <= a.at < until]

    def acked_within(self, since: float, until: float) -> list[Send]:
        """The sends whose acknowledgement arrived within [since, until) (journal seconds)."""
        return [
            s
            for s in self.sends
            if s.state == "acked" and since <= s.attempts[-1].at + s.attempts[-1].took < until
        ]

    def acked_per_s(self, since: float, until: float) -> float:
        """Sends acknowledged per second among those first tried within [since, until)."""
        if until <= since:
            return 0.0
        acked = [s for s in self.sends if s.state == "acked" and since <= s.attempts[0].at < until]
        return len(acked) / (until - since)


def _retry_wait(response: Response | None) -> float:
    if response is None:
        return RECONNECT_WAIT_S
    try:
        wait = float(response.headers.get("retry-after", RECONNECT_WAIT_S))
    except ValueError:
        wait = RECONNECT_WAIT_S
    return min(max(wait, 0.1), RETRY_WAIT_MAX_S)


def assert_clean(drill: str, verdict: Verdict) -> None:
    """The common verdict of every drill."""
    __tracebackhide__ = True
    problems = verdict.problems()
    assert not problems, (
        f"drill {drill}: the client journal must show nothing lost, duplicated, reordered or "
        f"undelivered (got {'; '.join(problems)})"
    )


def statuses(attempts: Sequence[Attempt]) -> dict[str, int]:
    """How many attempts got each answer ("503 service_unavailable", "no answer (TimeoutError)")."""
    return dict(
        Counter(
            f"{a.status} {a.detail}".strip() if a.status else f"no answer ({a.detail})"
            for a in attempts
        )
    )


def closes_during(closes: Sequence[Close], since: float, until: float) -> list[Close]:
    return [c for c in closes if since <= c.at < until]
