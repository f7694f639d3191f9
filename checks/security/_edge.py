"""What the edge probes share: raw HTTP/1.1 exchanges over TLS (for requests a well-behaved client
library refuses to send), a flood that provokes the edge's rate limit, and the live NGINX
configuration of an edge that runs on this host (read through `nginx -T`, as the running master
process was started)."""

from __future__ import annotations

import fnmatch
import ipaddress
import itertools
import os
import re
import shlex
import socket
import ssl
import subprocess
import time
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from cryptography import x509

from preflight.client import ChatClient, Response
from preflight.polling import until
from preflight.probe.target import ProbeTarget

TIMEOUT_S = 10.0
NGINX_T_TIMEOUT_S = 10.0
CLOSE_WAIT_S = 2.0
# Enough requests at once to pass any per-address burst an edge would sensibly allow (the
# bundled edge: 100 r/s with a burst of 50), sent from a few connections in parallel.
FLOOD_REQUESTS = 400
FLOOD_CONNECTIONS = 16
FLOOD_PATH = "/v1/health/live"
FLOOD_LIMITED = 50  # 429s that show the limit bites, whatever the exact burst of the target
FLOOD_ROUNDS = 5  # of FLOOD_REQUESTS each, at most; and for at most FLOOD_WITHIN_S
FLOOD_WITHIN_S = 30.0
RECOVERY_S = 10.0
# system/chatsdk/API.md, Uploads: over 100 MB the edge answers 413 before the API reads it.
MAX_BODY_BYTES = 100 * 1024 * 1024


# --- raw HTTP/1.1 over TLS -------------------------------------------------------------------


@dataclass(frozen=True)
class RawReply:
    """One response read off a raw connection; `closed` says whether the server then closed it."""

    status: int
    header_list: list[tuple[str, str]]
    body: bytes
    closed: bool

    @property
    def headers(self) -> dict[str, str]:
        """Lower-cased names; the last of repeated headers wins."""
        return {name.lower(): value for name, value in self.header_list}

    def get_all(self, name: str) -> list[str]:
        return [v for k, v in self.header_list if k.lower() == name.lower()]

    def as_response(self, method: str, path: str) -> Response:
        return Response(self.status, self.headers, self.body, method, path)


@dataclass
class _Reader:
    sock: ssl.SSLSocket
    buffer: bytes = b""
    eof: bool = False

    def fill(self) -> bool:
        try:
            chunk = self.sock.recv(65536)
        except (TimeoutError, ssl.SSLError, ConnectionError):
            chunk = b""
        if not chunk:
            self.eof = True
            return False
        self.buffer += chunk
        return True

    def until(self, marker: bytes) -> bytes:
        while marker not in self.buffer:
            if not self.fill():
                raise ConnectionError(f"the connection ended before {marker!r} ({self.buffer!r})")
        head, self.buffer = self.buffer.split(marker, 1)
        return head

    def exactly(self, size: int) -> bytes:
        while len(self.buffer) < size and self.fill():
            pass
        data, self.buffer = self.buffer[:size], self.buffer[size:]
        return data


def _read_reply(reader: _Reader, method: str, check_closed: bool) -> RawReply:
    head = reader.until(b"\r\n\r\n").decode("latin-1")
    status_line, *lines = head.split("\r\n")
    status = int(status_line.split()[1])
    headers = [(k.strip(), v.strip()) for k, v in (line.split(":", 1) for line in lines)]
    length = next((int(v) for k, v in headers if k.lower() == "content-length"), 0)
    no_body = method == "HEAD" or status in (100, 101, 204, 304)
    body = b"" if no_body else reader.exactly(length)
    closed = False
    if check_closed:
        # A server that keeps the connection open sends nothing more: wait a little, not long.
        reader.sock.settimeout(CLOSE_WAIT_S)
        closed = not reader.buffer and not reader.fill()
    return RawReply(status, headers, body, closed)


def raw_exchange(
    target: ProbeTarget,
    head: str,
    body: bytes = b"",
    *,
    method: str = "GET",
    check_closed: bool = False,
    timeout: float = TIMEOUT_S,
) -> RawReply:
    """Send `head` (request line and headers, CRLF-separated, without the blank line) and
    `body` exactly as given over one TLS connection (ALPN http/1.1) and read one response."""
    host, port = target.edge_address
    context = target.ssl_context()
    context.set_alpn_protocols(["http/1.1"])
    with (
        socket.create_connection((host, port), timeout=timeout) as plain,
        context.wrap_socket(plain, server_hostname=host) as sock,
    ):
        sock.sendall(head.encode("latin-1") + b"\r\n\r\n" + body)
        reader = _Reader(sock)
        return _read_reply(reader, method, check_closed)


def request_head(
    target: ProbeTarget, method: str, path: str, headers: Mapping[str, str] | None = None
) -> str:
    host = target.edge_url.split("://", 1)[1].split("/", 1)[0]
    lines = [f"{method} {path} HTTP/1.1", f"Host: {host}"]
    lines += [f"{name}: {value}" for name, value in (headers or {}).items()]
    return "\r\n".join(lines)


# --- the rate limit ----------------------------------------------------------------------------


@dataclass
class Flood:
    responses: list[Response] = field(default_factory=list)
    seconds: float = 0.0

    def statuses(self) -> dict[int, int]:
        counts: dict[int, int] = {}
        for r in self.responses:
            counts[r.status] = counts.get(r.status, 0) + 1
        return dict(sorted(counts.items()))

    def first(self, status: int) -> Response | None:
        return next((r for r in self.responses if r.status == status), None)

    def describe(self) -> str:
        """'N requests in S s (R/s)': what the flood achieved, for the evidence and messages."""
        rate = len(self.responses) / self.seconds if self.seconds > 0 else 0.0
        return f"{len(self.responses)} requests in {self.seconds:.1f} s ({rate:.0f}/s)"


def flood(
    target: ProbeTarget,
    headers_for: Callable[[int], Mapping[str, str]] = lambda _i: {},
    count: int = FLOOD_REQUESTS,
    path: str = FLOOD_PATH,
) -> Flood:
    """Rounds of `count` GETs of `path` from FLOOD_CONNECTIONS parallel connections, until
    FLOOD_LIMITED answers were 429 (or FLOOD_ROUNDS rounds, or FLOOD_WITHIN_S), then wait until
    the edge serves this address again, so the probes after this one do not inherit its 429s.
    More than one round is needed only where this machine sends slower than the edge's rate
    refills (a busy CI machine); an edge with no limit answers every round with 200s, and the
    probes fail."""
    clients = [ChatClient.for_target(target.info) for _ in range(FLOOD_CONNECTIONS)]

    def one(i: int) -> Response:
        return clients[i % FLOOD_CONNECTIONS].get(path, headers=dict(headers_for(i)))

    responses: list[Response] = []
    started = time.monotonic()
    try:
        with ThreadPoolExecutor(FLOOD_CONNECTIONS) as pool:
            # Each thread keeps its own kept-alive connection per client.
            for _ in range(FLOOD_ROUNDS):
                responses += pool.map(one, range(len(responses), len(responses) + count))
                limited = sum(1 for r in responses if r.status == 429)
                if limited >= FLOOD_LIMITED or time.monotonic() - started >= FLOOD_WITHIN_S:
                    break
    finally:
        for client in clients:
            client.close()
    seconds = time.monotonic() - started
    wait_until_served(target)
    return Flood(responses, seconds)


def wait_until_served(target: ProbeTarget, path: str = FLOOD_PATH) -> None:
    client = ChatClient.for_target(target.info)
    try:
        until(lambda: client.get(path).status != 429, RECOVERY_S, interval=0.2)
    finally:
        client.close()


_floods: dict[int, Flood] = {}


def plain_flood(target: ProbeTarget) -> Flood:
    """One flood without forged headers per target and session, shared by the probes that need
    the edge's 429 (its semantics, its headers)."""
    key = id(target)
    if key not in _floods:
        _floods[key] = flood(target)
    return _floods[key]


# --- an edge on this host and its live configuration -------------------------------------------


def is_local_address(host: str) -> bool:
    """Whether `host` (an IP literal or a name) is an address of this machine."""
    try:
        infos = socket.getaddrinfo(host, None, proto=socket.IPPROTO_TCP)
    except OSError:
        return False
    addresses = {str(ipaddress.ip_address(str(info[4][0]).split("%")[0])) for info in infos}
    return bool(addresses) and all(
        ipaddress.ip_address(a).is_loopback or a in host_addresses() for a in addresses
    )


def host_addresses() -> set[str]:
    """This machine's non-loopback IP addresses (from the kernel's own tables)."""
    found: set[str] = set()
    try:
        with open("/proc/net/if_inet6") as f:
            for line in f:
                raw = line.split()[0]
                address = ipaddress.IPv6Address(int(raw, 16))
                if not address.is_loopback and not address.is_link_local:
                    found.add(str(address))
    except OSError:
        pass
    try:
        with open("/proc/net/fib_trie") as f:
            lines = f.read().splitlines()
        for previous, line in itertools.pairwise(lines):
            if "/32 host LOCAL" in line:
                address4 = ipaddress.IPv4Address(previous.split()[-1])
                if not address4.is_loopback:
                    found.add(str(address4))
    except (OSError, ValueError):
        pass
    return found


@dataclass(frozen=True)
class Listener:
    address: str
    port: int
    inode: int


def listeners() -> list[Listener]:
    """Every listening TCP socket of this host's network namespace."""
    found = []
    for table, version in (("/proc/net/tcp", 4), ("/proc/net/tcp6", 6)):
        try:
            with open(table) as f:
                rows = f.read().splitlines()[1:]
        except OSError:
            continue
        for row in rows:
            parts = row.split()
            if parts[3] != "0A":  # LISTEN
                continue
            raw_address, raw_port = parts[1].split(":")
            found.append(
                Listener(_proc_address(raw_address, version), int(raw_port, 16), int(parts[9]))
            )
    return found


def _proc_address(raw: str, version: int) -> str:
    data = bytes.fromhex(raw)
    # /proc prints each 32-bit word in host (little-endian) order.
    words = b"".join(data[i : i + 4][::-1] for i in range(0, len(data), 4))
    return str(ipaddress.IPv4Address(words) if version == 4 else ipaddress.IPv6Address(words))


def socket_owners() -> dict[int, set[int]]:
    """socket inode -> pids holding it."""
    owners: dict[int, set[int]] = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            fds = os.scandir(f"/proc/{entry.name}/fd")
            with fds:
                for fd in fds:
                    link = os.readlink(fd.path)
                    if link.startswith("socket:["):
                        owners.setdefault(int(link[8:-1]), set()).add(int(entry.name))
        except OSError:
            continue
    return owners


def pids_listening_on(port: int) -> set[int]:
    inodes = {listener.inode for listener in listeners() if listener.port == port}
    owners = socket_owners()
    return {pid for inode in inodes for pid in owners.get(inode, set())}


def parent_of(pid: int) -> int:
    with open(f"/proc/{pid}/stat") as f:
        return int(f.read().rsplit(")", 1)[1].split()[1])


def cmdline(pid: int) -> list[str]:
    with open(f"/proc/{pid}/cmdline", "rb") as f:
        raw = f.read()
    args = [a.decode(errors="replace") for a in raw.split(b"\0") if a]
    # nginx rewrites its title into one string: "nginx: master process /usr/sbin/nginx -c ..."
    return shlex.split(args[0]) if len(args) == 1 else args


def local_edge(target: ProbeTarget) -> tuple[int, list[str]]:
    """The pid and command line of the NGINX master serving the edge, when it runs on this host;
    skips the probe otherwise (an external edge's configuration cannot be read from here)."""
    host, port = target.edge_address
    if not is_local_address(host):
        pytest.skip(
            f"the edge {host}:{port} runs on another host, so its configuration cannot be read "
            "here; run this probe on the edge host or audit its `nginx -T` there"
        )
    for pid in sorted(pids_listening_on(port)):
        args = cmdline(pid)
        if "master" in args and any("nginx" in a for a in args):
            return pid, args
    pytest.skip(
        f"no NGINX master process on this host listens on port {port} (or it is not ours to read)"
    )


def live_config(target: ProbeTarget) -> str:
    """`nginx -T` of the running edge's configuration: as the target gives it (Edge.config),
    else run the way the NGINX master on this host was started."""
    if target.info.edge.config is not None:
        return target.info.edge.config()
    _pid, args = local_edge(target)
    options: list[str] = []
    for flag in ("-p", "-c"):
        if flag in args and args.index(flag) + 1 < len(args):
            options += [flag, args[args.index(flag) + 1]]
    binary = next((a for a in args if a.endswith("/nginx")), "nginx")
    result = subprocess.run(
        [binary, "-T", "-q", *options],
        capture_output=True,
        text=True,
        timeout=NGINX_T_TIMEOUT_S,
        check=False,
    )
    if result.returncode != 0:
        raise RuntimeError(f"`nginx -T {' '.join(options)}` failed: {result.stderr.strip()[-500:]}")
    return result.stdout


# --- a small NGINX configuration parser --------------------------------------------------------


@dataclass
class Directive:
    name: str
    args: list[str]
    block: list[Directive] | None = None
    where: str = ""

    def children(self, name: str) -> Iterator[Directive]:
        return (d for d in self.block or [] if d.name == name)


_TOKEN = re.compile(
    r"""\s*(?:(#[^\n]*)|("(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*')|([{};])|([^\s{};"'#]+))"""
)


def files_of_dump(dump: str) -> dict[str, str]:
    """`nginx -T` output -> file path -> its text."""
    files: dict[str, str] = {}
    current: str | None = None
    lines: list[str] = []
    for line in dump.splitlines():
        marker = re.match(r"^# configuration file (.+):$", line)
        if marker:
            if current is not None:
                files[current] = "\n".join(lines)
            current, lines = marker[1], []
        elif current is not None:
            lines.append(line)
    if current is not None:
        files[current] = "\n".join(lines)
    return files


def parse(files: Mapping[str, str], path: str) -> list[Directive]:
    """The directives of `path` with every include inlined (includes are resolved among the
    files the dump holds, relative to the main file's directory)."""
    base = Path(path).parent
    return _parse_text(files, files[path], path, base)


def _parse_text(files: Mapping[str, str], text: str, path: str, base: Path) -> list[Directive]:
    tokens = [
        (m[2][1:-1] if m[2] else m[3] or m[4], bool(m[3]), text.count("\n", 0, m.start()) + 1)
        for m in _TOKEN.finditer(text)
        if not m[1] and (m[2] or m[3] or m[4])
    ]
    stack: list[list[Directive]] = [[]]
    words: list[str] = []
    line = 0
    for piece, special, piece_line in tokens:
        if not special:
            if not words:
                line = piece_line
            words.append(piece)
            continue
        if piece == "{":
            directive = Directive(words[0], words[1:], [], f"{path}:{line}")
            stack[-1].append(directive)
            assert directive.block is not None
            stack.append(directive.block)
        elif piece == ";":
            if words[0] == "include":
                for included in _resolve(files, base, words[1]):
                    stack[-1].extend(_parse_text(files, files[included], included, base))
            else:
                stack[-1].append(Directive(words[0], words[1:], None, f"{path}:{line}"))
        else:  # "}"
            stack.pop()
        words = []
    return stack[0]


def _resolve(files: Mapping[str, str], base: Path, pattern: str) -> list[str]:
    absolute = pattern if pattern.startswith("/") else str(base / pattern)
    return sorted(f for f in files if fnmatch.fnmatch(f, absolute))


# --- the served certificate ------------------------------------------------------------------


@dataclass(frozen=True)
class Served:
    """What a verifying client saw in a handshake with the edge."""

    certificate: x509.Certificate
    version: str
    alpn: str | None


def deployment_certificate(target: ProbeTarget) -> None:
    """Skip a certificate probe when the edge serves a certificate the harness minted for this
    run: its chain, life and renewal say nothing about the deployment's own."""
    if target.info.edge.harness_certificate:
        pytest.skip(
            f"target {target.info.name}'s edge serves a certificate the harness minted for this "
            "run (its own per-run CA), not one the deployment obtained: the certificate items "
            "are judged only where the deployment's own CA or ACME client issued it (a target "
            "that runs the deployment's ACME client, or a target file for the real edge)"
        )


def verified_handshake(target: ProbeTarget, alpn: list[str] | None = None) -> Served:
    """A handshake that verifies the chain against the target's CA (the system's when it names
    none) and the certificate against the edge's host name; raises ssl.SSLCertVerificationError
    when either does not hold."""
    host, port = target.edge_address
    context = target.ssl_context()
    if alpn:
        context.set_alpn_protocols(alpn)
    with (
        socket.create_connection((host, port), timeout=TIMEOUT_S) as plain,
        context.wrap_socket(plain, server_hostname=host) as tls,
    ):
        der = tls.getpeercert(binary_form=True)
        assert der is not None
        return Served(
            x509.load_der_x509_certificate(der), str(tls.version()), tls.selected_alpn_protocol()
        )


def served_certificate(target: ProbeTarget) -> x509.Certificate:
    """The certificate the edge serves now, whether or not it verifies (a deployment whose
    first certificate never reached the edge still serves its bootstrap one)."""
    host, port = target.edge_address
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    with (
        socket.create_connection((host, port), timeout=TIMEOUT_S) as plain,
        context.wrap_socket(plain, server_hostname=host) as tls,
    ):
        der = tls.getpeercert(binary_form=True)
    assert der is not None
    return x509.load_der_x509_certificate(der)


def target_processes(target: ProbeTarget) -> set[int]:
    """The processes of a target whose edge runs on this host: every descendant of the process
    that started the edge (the launcher starts the edge, workers and databases side by side);
    skips when the edge runs elsewhere."""
    master, _args = local_edge(target)
    launcher = parent_of(master)
    children: dict[int, set[int]] = {}
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            try:
                children.setdefault(parent_of(int(entry.name)), set()).add(int(entry.name))
            except (OSError, ValueError, IndexError):
                continue
    found: set[int] = set()
    todo = [launcher]
    while todo:
        for child in children.get(todo.pop(), set()):
            if child not in found:
                found.add(child)
                todo.append(child)
    return found
