"""The NGINX edge, rendered from system/nginx and run for real in front of a tiny upstream."""

from __future__ import annotations

import asyncio
import collections
import http.client
import json
import os
import shutil
import socket
import ssl
import subprocess
import sys
import tempfile
import threading
import time
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import aiohttp
import pytest
from aiohttp import web
from aiohttp.typedefs import Handler

from preflight.errors import EdgeConfigInvalid
from preflight.targets.edge import (
    TEMPLATE_DIR,
    EdgeCertificate,
    EdgeConfig,
    nginx_command,
    render_edge,
    validate_edge,
)
from preflight.targets.pki import Pki, make_pki
from preflight.targets.procs import free_port
from preflight.wsclient import connect as ws_connect

SECURITY_HEADERS = {
    "Strict-Transport-Security": "max-age=63072000; includeSubDomains",
    "Content-Security-Policy": (
        "default-src 'none'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Cross-Origin-Opener-Policy": "same-origin",
    "Cross-Origin-Resource-Policy": "same-origin",
}
UPSTREAM_ONLY_HEADERS = ("X-Powered-By",)
ONE_HUNDRED_MB = 100 * 1024 * 1024
TIMEOUT_S = 5.0


# --- the upstream: answers like an API worker and counts what reaches it ---------------------


class Upstream:
    """An aiohttp app in its own thread; `hits` counts requests per path. A draining upstream
    answers 503 to everything, as an API worker does between SIGTERM and exit."""

    def __init__(self, *, draining: bool = False) -> None:
        self.draining = draining
        self.hits: collections.Counter[str] = collections.Counter()
        self.port = 0
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._run, name="edge-upstream", daemon=True)
        self._ready = threading.Event()

    def start(self) -> None:
        self._thread.start()
        if not self._ready.wait(TIMEOUT_S):
            raise RuntimeError("the test upstream did not start within 5 s")

    def stop(self) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        # Generous: a busy machine (the suite runs in parallel) must not leave the cleanup
        # half done, with transports the garbage collector then warns about in a later test.
        self._thread.join(6 * TIMEOUT_S)

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        runner = web.AppRunner(self._app(), access_log=None, shutdown_timeout=1.0)
        self._loop.run_until_complete(runner.setup())
        site = web.TCPSite(runner, "127.0.0.1", 0)
        self._loop.run_until_complete(site.start())
        self.port = runner.addresses[0][1]
        self._ready.set()
        self._loop.run_forever()
        self._loop.run_until_complete(runner.cleanup())
        self._loop.run_until_complete(asyncio.sleep(0.05))  # closed transports call back
        self._loop.close()

    def _app(self) -> web.Application:
        @web.middleware
        async def count(request: web.Request, handler: Handler) -> web.StreamResponse:
            self.hits[request.path] += 1
            if self.draining:
                await request.read()
                return web.json_response(
                    {"error": {"code": "draining", "message": "draining", "request_id": "x"}},
                    status=503,
                    headers={"Retry-After": "1"},
                )
            return await handler(request)

        app = web.Application(middlewares=[count], client_max_size=2 * ONE_HUNDRED_MB)
        app.router.add_get("/v1/health/ready", self._ready_handler)
        app.router.add_route("*", "/v1/echo", self._echo)
        app.router.add_post("/v1/uploads", self._echo)
        app.router.add_get("/v1/realtime", self._realtime)
        app.router.add_route("*", "/{tail:.*}", self._not_found)
        return app

    async def _ready_handler(self, request: web.Request) -> web.Response:
        # Conflicting and revealing headers: the edge must replace or drop every one of them.
        return web.json_response(
            {"status": "ready"},
            headers={
                "X-Frame-Options": "SAMEORIGIN",
                "Strict-Transport-Security": "max-age=60",
                "X-Powered-By": "upstream-test/1.0",
                "X-Upstream": "1",
            },
        )

    async def _echo(self, request: web.Request) -> web.Response:
        body = await request.read()
        return web.json_response(
            {"headers": [[k, v] for k, v in request.headers.items()], "body_size": len(body)}
        )

    async def _realtime(self, request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        async for message in ws:
            if message.type is aiohttp.WSMsgType.TEXT:
                await ws.send_str(f"echo:{message.data}")
        return ws

    async def _not_found(self, request: web.Request) -> web.Response:
        if "metrics" in request.path:
            return web.Response(text="api_secret_metric 1\n")
        return web.json_response(
            {"error": {"code": "upstream_not_found", "message": "no", "request_id": "x"}},
            status=404,
            headers={"X-Powered-By": "upstream-test/1.0", "X-Content-Type-Options": "nosniff"},
        )


# --- the edge: rendered, validated and run in the foreground ----------------------------------


@dataclass
class Edge:
    https_port: int
    http_port: int
    conf: Path
    ca: Path
    process: subprocess.Popen[bytes]


class EdgeFactory(Protocol):
    def __call__(
        self,
        upstreams: Sequence[tuple[str, int]] | None = None,
        template_dir: Path | None = None,
        api_rate_per_s: int = 100,
        api_burst: int = 50,
        acme_webroot: Path | None = None,
    ) -> Edge: ...


@dataclass
class Reply:
    status: int
    headers: list[tuple[str, str]]
    body: bytes
    where: str = ""

    def get_all(self, name: str) -> list[str]:
        return [v for k, v in self.headers if k.lower() == name.lower()]

    def header(self, name: str) -> str | None:
        values = self.get_all(name)
        return values[0] if values else None

    def json(self) -> Any:
        return json.loads(self.body)


@pytest.fixture(scope="module")
def edge_pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return make_pki(tmp_path_factory.mktemp("edge-pki"))


@pytest.fixture(scope="module")
def upstream() -> Iterator[Upstream]:
    server = Upstream()
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def draining_upstream() -> Iterator[Upstream]:
    server = Upstream(draining=True)
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def edge_factory(edge_pki: Pki, upstream: Upstream) -> Iterator[EdgeFactory]:
    started: list[tuple[Edge, Path]] = []

    def start(
        upstreams: Sequence[tuple[str, int]] | None = None,
        template_dir: Path | None = None,
        api_rate_per_s: int = 100,
        api_burst: int = 50,
        acme_webroot: Path | None = None,
    ) -> Edge:
        # Not tmp_path: /tmp/pytest-of-root is 0700, which nginx's workers cannot traverse.
        workdir = Path(tempfile.mkdtemp(prefix="preflight-edge-test-"))
        cfg = EdgeConfig(
            workdir=workdir,
            https_port=free_port(),
            http_port=free_port(),
            upstreams=upstreams or [("127.0.0.1", upstream.port)],
            pki=edge_pki,
            api_rate_per_s=api_rate_per_s,
            api_burst=api_burst,
            # An ACME client's certificate: here the same files, named by path and names.
            certificate=EdgeCertificate(edge_pki.server_chain, edge_pki.server_key, ("localhost",))
            if acme_webroot
            else None,
            acme_webroot=acme_webroot,
        )
        conf = render_edge(cfg, template_dir=template_dir)
        validate_edge(conf)
        log = (workdir / "nginx.stderr").open("wb")
        process = subprocess.Popen(nginx_command(conf), stdout=log, stderr=log)
        log.close()
        edge = Edge(cfg.https_port, cfg.http_port, conf, edge_pki.ca_cert, process)
        started.append((edge, workdir))
        _wait_listening(edge, workdir)
        return edge

    yield start
    for edge, workdir in started:
        edge.process.terminate()
        try:
            edge.process.wait(TIMEOUT_S)
        except subprocess.TimeoutExpired:
            edge.process.kill()
            edge.process.wait(TIMEOUT_S)
        shutil.rmtree(workdir, ignore_errors=True)


def _wait_listening(edge: Edge, workdir: Path) -> None:
    deadline = time.monotonic() + TIMEOUT_S
    while time.monotonic() < deadline:
        if edge.process.poll() is not None:
            log = (workdir / "nginx.stderr").read_text(errors="replace")
            raise RuntimeError(f"nginx exited with {edge.process.returncode}: {log}")
        try:
            socket.create_connection(("127.0.0.1", edge.https_port), timeout=0.2).close()
            socket.create_connection(("127.0.0.1", edge.http_port), timeout=0.2).close()
        except OSError:
            time.sleep(0.01)
        else:
            return
    raise RuntimeError(f"nginx did not listen on {edge.https_port} within {TIMEOUT_S} s")


@pytest.fixture(scope="module")
def edge(edge_factory: EdgeFactory) -> Edge:
    """The edge most tests share; rate-limit tests get their own so nobody else sees 429."""
    return edge_factory()


@pytest.fixture(scope="module")
def edge_weak_templates(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of the templates with TLS 1.0/1.1 and a CBC suite: what the probes must catch."""
    copy = tmp_path_factory.mktemp("weak") / "nginx"
    shutil.copytree(TEMPLATE_DIR, copy)
    tls = copy / "tls" / "intermediate.conf"
    text = tls.read_text()
    weakened = text.replace(
        "ssl_protocols TLSv1.2 TLSv1.3;", "ssl_protocols TLSv1 TLSv1.1 TLSv1.2 TLSv1.3;"
    ).replace("-POLY1305;\n", "-POLY1305:ECDHE-ECDSA-AES128-SHA:@SECLEVEL=0;\n", 1)
    assert weakened.count("TLSv1.1") == 1, "tls/intermediate.conf changed shape"
    assert "AES128-SHA:" in weakened, "tls/intermediate.conf changed shape"
    tls.write_text(weakened)
    return copy


@pytest.fixture(scope="module")
def weak_edge(edge_factory: EdgeFactory, edge_weak_templates: Path) -> Edge:
    return edge_factory(template_dir=edge_weak_templates)


def client_context(ca: Path) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=str(ca))


def https(
    edge: Edge,
    method: str,
    path: str,
    *,
    headers: Mapping[str, str] | None = None,
    body: bytes | None = None,
    source: str | None = None,
) -> Reply:
    conn = http.client.HTTPSConnection(
        "127.0.0.1",
        edge.https_port,
        context=client_context(edge.ca),
        timeout=TIMEOUT_S,
        source_address=(source, 0) if source else None,
    )
    try:
        conn.request(method, path, body=body, headers=dict(headers or {}))
        resp = conn.getresponse()
        return Reply(resp.status, resp.getheaders(), resp.read(), f"{method} https {path}")
    finally:
        conn.close()


def plain(
    edge: Edge, method: str, path: str, *, body: bytes | None = None, host: str | None = None
) -> Reply:
    conn = http.client.HTTPConnection("127.0.0.1", edge.http_port, timeout=TIMEOUT_S)
    try:
        conn.request(method, path, body=body, headers={"Host": host} if host else {})
        resp = conn.getresponse()
        return Reply(resp.status, resp.getheaders(), resp.read(), f"{method} http {path}")
    finally:
        conn.close()


def assert_security_headers(reply: Reply) -> None:
    __tracebackhide__ = True
    for name, value in SECURITY_HEADERS.items():
        got = reply.get_all(name)
        assert got == [value], f"{name} on {reply.where} must be exactly [{value!r}] (got {got!r})"
    for name in UPSTREAM_ONLY_HEADERS:
        assert not reply.get_all(name), f"{name} on {reply.where} must be hidden by the edge"


def assert_json_error(reply: Reply, status: int, code: str) -> None:
    __tracebackhide__ = True
    assert reply.status == status, f"{reply.where} must answer {status} (got {reply.status})"
    content_type = reply.header("Content-Type") or ""
    assert content_type.split(";")[0] == "application/json", f"{reply.where}: {content_type!r}"
    error = reply.json()["error"]
    assert error["code"] == code, f"{reply.where} error code must be {code} (got {error})"
    assert error["message"]
    assert error["request_id"] == reply.header("X-Request-ID") != ""


def echoed_headers(reply: Reply) -> dict[str, list[str]]:
    seen: dict[str, list[str]] = collections.defaultdict(list)
    for name, value in reply.json()["headers"]:
        seen[name.lower()].append(value)
    return seen


# --- rendering and validation -------------------------------------------------------------------


def test_rendered_config_passes_nginx_t(edge_pki: Pki) -> None:
    workdir = Path(tempfile.mkdtemp(prefix="preflight-edge-test-"))
    try:
        cfg = EdgeConfig(workdir, 1443, 1080, [("127.0.0.1", 1001), ("::1", 1002)], edge_pki)
        conf = render_edge(cfg)
        validate_edge(conf)
        text = conf.read_text()
        assert "listen 127.0.0.1:1443 ssl http2;" in text
        assert "server 127.0.0.1:1001 max_fails=3 fail_timeout=2s;" in text
        assert "server [::1]:1002 max_fails=3 fail_timeout=2s;" in text
        for temp in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"):
            assert (conf.parent / "tmp" / temp).is_dir()
            assert f'{conf.parent / "tmp" / temp}";' in text
        if os.geteuid() == 0:
            assert "user nobody nogroup;" in text
            assert workdir.stat().st_mode & 0o777 == 0o711
    finally:
        shutil.rmtree(workdir)


def test_the_acme_challenge_is_served_on_plain_http_only_with_a_webroot(
    edge: Edge, edge_factory: EdgeFactory
) -> None:
    """http-01 (RFC 8555 8.3): the CA fetches the token over plain HTTP; an edge without an ACME
    client redirects that path like any other."""
    webroot = Path(tempfile.mkdtemp(prefix="preflight-acme-webroot-"))
    try:
        webroot.chmod(0o755)
        challenges = webroot / ".well-known" / "acme-challenge"
        challenges.mkdir(parents=True)
        (challenges / "t0ken").write_text("t0ken.thumbprint")
        for folder in (webroot / ".well-known", challenges):
            folder.chmod(0o755)
        (challenges / "t0ken").chmod(0o644)
        acme_edge = edge_factory(acme_webroot=webroot)
        served = plain(acme_edge, "GET", "/.well-known/acme-challenge/t0ken")
        assert (served.status, served.body) == (200, b"t0ken.thumbprint"), served
        assert_security_headers(served)
        assert plain(acme_edge, "GET", "/.well-known/acme-challenge/nope").status == 404
        assert https(acme_edge, "GET", "/v1/health/ready").status == 200
        assert plain(edge, "GET", "/.well-known/acme-challenge/t0ken").status == 301
    finally:
        shutil.rmtree(webroot)


def _broken_copy(tmp_path: Path, include: str, line: str) -> tuple[Path, int]:
    copy = tmp_path / "nginx"
    shutil.copytree(TEMPLATE_DIR, copy)
    target = copy / include
    lines = target.read_text().splitlines(keepends=True)
    lines.append(line + "\n")
    target.write_text("".join(lines))
    return copy, len(lines)


def test_nginx_rejection_names_the_rendered_file_and_its_template(
    edge_pki: Pki, tmp_path: Path
) -> None:
    templates, _ = _broken_copy(tmp_path, "limits/body.conf", "client_max_bodysize 1m;")
    workdir = Path(tempfile.mkdtemp(prefix="preflight-edge-test-"))
    try:
        conf = render_edge(
            EdgeConfig(workdir, 1443, 1080, [("127.0.0.1", 1001)], edge_pki), templates
        )
        with pytest.raises(EdgeConfigInvalid) as excinfo:
            validate_edge(conf)
    finally:
        shutil.rmtree(workdir)
    message = str(excinfo.value)
    assert f"{workdir.resolve()}/nginx/limits/body.conf line " in message
    assert ': unknown directive "client_max_bodysize"; ' in message
    assert f"fix the template {templates}/limits/body.conf" in message


@pytest.mark.parametrize(
    ("line", "problem"),
    [("{{ no_such_setting }}", "does not render"), ("{% if %}", "does not parse")],
    ids=["undefined-variable", "syntax-error"],
)
def test_template_error_names_the_template_and_line(
    edge_pki: Pki, tmp_path: Path, line: str, problem: str
) -> None:
    templates, lineno = _broken_copy(tmp_path, "proxy/api.conf", line)
    workdir = Path(tempfile.mkdtemp(prefix="preflight-edge-test-"))
    try:
        with pytest.raises(EdgeConfigInvalid) as excinfo:
            render_edge(EdgeConfig(workdir, 1443, 1080, [("127.0.0.1", 1001)], edge_pki), templates)
    finally:
        shutil.rmtree(workdir)
    assert f"template {templates}/proxy/api.conf line {lineno} {problem}" in str(excinfo.value)


@pytest.mark.skipif(os.geteuid() != 0, reason="only root runs nginx workers as nobody")
def test_workdir_the_workers_cannot_reach_is_refused(edge_pki: Pki) -> None:
    outer = Path(tempfile.mkdtemp(prefix="preflight-edge-test-"))
    try:
        outer.chmod(0o700)
        conf = render_edge(EdgeConfig(outer / "w", 1443, 1080, [("127.0.0.1", 1001)], edge_pki))
        with pytest.raises(EdgeConfigInvalid, match=r"mode 0700\) cannot be traversed"):
            validate_edge(conf)
        outer.chmod(0o711)
        validate_edge(conf)
    finally:
        shutil.rmtree(outer)


def test_untrusted_looking_values_are_refused_before_rendering(edge_pki: Pki) -> None:
    workdir = Path(tempfile.mkdtemp(prefix="preflight-edge-test-"))
    try:
        with pytest.raises(EdgeConfigInvalid, match="server_name"):
            render_edge(
                EdgeConfig(
                    workdir, 1443, 1080, [("127.0.0.1", 1001)], edge_pki, server_name="x; evil"
                )
            )
        with pytest.raises(EdgeConfigInvalid, match="upstreams host"):
            render_edge(EdgeConfig(workdir, 1443, 1080, [("a b", 1001)], edge_pki))
        with pytest.raises(EdgeConfigInvalid, match="log_server host"):
            render_edge(
                EdgeConfig(
                    workdir, 1443, 1080, [("127.0.0.1", 1001)], edge_pki, log_server=("x;y", 514)
                )
            )
    finally:
        shutil.rmtree(workdir)


def test_a_log_server_gets_the_access_and_error_logs_over_syslog(edge_pki: Pki) -> None:
    workdir = Path(tempfile.mkdtemp(prefix="preflight-edge-test-"))
    try:
        upstreams = [("127.0.0.1", 1001)]
        conf = render_edge(
            EdgeConfig(workdir, 1443, 1080, upstreams, edge_pki, log_server=("127.0.0.1", 5514))
        )
        validate_edge(conf)
        text = conf.read_text()
        assert "access_log syslog:server=127.0.0.1:5514,tag=nginx,severity=info edge;" in text
        assert "error_log syslog:server=127.0.0.1:5514,tag=nginx warn;" in text
        without = render_edge(EdgeConfig(workdir / "plain", 1443, 1080, upstreams, edge_pki))
        assert "syslog:" not in without.read_text()
    finally:
        shutil.rmtree(workdir)


# --- security headers on every kind of response -----------------------------------------------


def test_upstream_200_carries_every_security_header_once(edge: Edge) -> None:
    reply = https(edge, "GET", "/v1/health/ready")
    assert reply.status == 200
    assert reply.json() == {"status": "ready"}
    assert reply.get_all("X-Upstream") == ["1"], "other upstream headers must pass through"
    assert_security_headers(reply)


def test_upstream_404_carries_every_security_header_once(edge: Edge) -> None:
    reply = https(edge, "GET", "/v1/no-such-thing")
    assert reply.status == 404
    assert reply.json()["error"]["code"] == "upstream_not_found", "must be the API's own 404"
    assert_security_headers(reply)


@pytest.mark.parametrize("path", ["/metrics", "/v1/metrics", "/v1/metrics/", "/v1//metrics"])
def test_metrics_are_not_reachable_through_the_edge(
    edge: Edge, upstream: Upstream, path: str
) -> None:
    before = sum(n for p, n in upstream.hits.items() if "metrics" in p)
    reply = https(edge, "GET", path)
    assert_json_error(reply, 404, "not_found")
    assert_security_headers(reply)
    assert b"api_secret_metric" not in reply.body
    assert sum(n for p, n in upstream.hits.items() if "metrics" in p) == before


def test_paths_outside_the_api_are_not_proxied(edge: Edge, upstream: Upstream) -> None:
    reply = https(edge, "GET", "/etc/passwd")
    assert_json_error(reply, 404, "not_found")
    assert_security_headers(reply)
    assert upstream.hits["/etc/passwd"] == 0


@pytest.mark.parametrize(
    ("path", "allow"),
    [("/v1/channels/c1/messages?limit=1", "GET, HEAD, POST"), ("/v1/tokens", "POST")],
)
def test_trace_is_a_json_405_naming_the_allowed_methods(
    edge: Edge, upstream: Upstream, path: str, allow: str
) -> None:
    before = sum(upstream.hits.values())
    reply = https(edge, "TRACE", path)
    assert_json_error(reply, 405, "method_not_allowed")
    assert_security_headers(reply)
    assert reply.get_all("Allow") == [allow]
    assert sum(upstream.hits.values()) == before


# --- limits ------------------------------------------------------------------------------------


def test_body_over_100mb_is_refused_before_the_upstream_sees_it(
    edge: Edge, upstream: Upstream
) -> None:
    conn = http.client.HTTPSConnection(
        "127.0.0.1", edge.https_port, context=client_context(edge.ca), timeout=TIMEOUT_S
    )
    try:
        conn.putrequest("POST", "/v1/uploads")
        conn.putheader("Content-Type", "application/octet-stream")
        conn.putheader("Content-Length", str(ONE_HUNDRED_MB + 1))
        conn.endheaders()  # no body sent: the edge must decide from Content-Length alone
        resp = conn.getresponse()
        reply = Reply(resp.status, resp.getheaders(), resp.read(), "POST https /v1/uploads")
    finally:
        conn.close()
    assert_json_error(reply, 413, "payload_too_large")
    assert_security_headers(reply)
    assert upstream.hits["/v1/uploads"] == 0


def test_body_over_16kb_reaches_the_upstream(edge: Edge, upstream: Upstream) -> None:
    """Bodies over 16 KB spill to client_body_temp; a dir the workers cannot reach gives 500."""
    before = upstream.hits["/v1/uploads"]
    reply = https(edge, "POST", "/v1/uploads", body=b"x" * 1_048_576)
    assert reply.status == 200, reply.body
    assert reply.json()["body_size"] == 1_048_576
    assert upstream.hits["/v1/uploads"] == before + 1


# --- what the upstream learns about the client -------------------------------------------------


def test_upstream_sees_the_real_peer_and_https_despite_forged_headers(edge: Edge) -> None:
    reply = https(
        edge,
        "GET",
        "/v1/echo",
        headers={
            "X-Forwarded-For": "203.0.113.7",
            "X-Real-IP": "203.0.113.7",
            "X-Forwarded-Proto": "http",
            "Forwarded": "for=203.0.113.7;proto=http",
        },
    )
    assert reply.status == 200
    seen = echoed_headers(reply)
    assert seen["x-forwarded-for"] == ["127.0.0.1"]
    assert seen["x-real-ip"] == ["127.0.0.1"]
    assert seen["x-forwarded-proto"] == ["https"]
    assert "forwarded" not in seen


@pytest.mark.parametrize(
    ("sent", "kept"),
    [("client-id-123", True), ('bad"id', False), ("x" * 200, False), (None, False)],
    ids=["sane", "quote", "too-long", "absent"],
)
def test_request_id_reaches_upstream_and_client(edge: Edge, sent: str | None, kept: bool) -> None:
    reply = https(edge, "GET", "/v1/echo", headers={"X-Request-ID": sent} if sent else {})
    upstream_saw = echoed_headers(reply)["x-request-id"]
    assert reply.get_all("X-Request-ID") == upstream_saw, "client and upstream must see one id"
    if kept:
        assert upstream_saw == [sent]
    else:
        assert len(upstream_saw[0]) == 32
        assert upstream_saw[0] != sent


def test_edge_request_id_is_logged(edge: Edge) -> None:
    reply = https(edge, "GET", "/v1/health/ready", headers={"X-Request-ID": "log-me-4711"})
    assert reply.status == 200
    log = edge.conf.parent / "logs" / "access.log"
    deadline = time.monotonic() + TIMEOUT_S
    while '"request_id":"log-me-4711"' not in log.read_text() and time.monotonic() < deadline:
        time.sleep(0.02)
    assert '"request_id":"log-me-4711"' in log.read_text()


def test_json_is_compressed(edge: Edge) -> None:
    padding = "p" * 2000  # the echo body must pass gzip_min_length
    reply = https(
        edge, "GET", "/v1/echo", headers={"Accept-Encoding": "gzip", "X-Padding": padding}
    )
    assert reply.status == 200
    assert reply.header("Content-Encoding") == "gzip"
    assert "Accept-Encoding" in (reply.header("Vary") or "")


# --- protocols ---------------------------------------------------------------------------------


def test_http2_is_negotiated_with_alpn(edge: Edge) -> None:
    context = client_context(edge.ca)
    context.set_alpn_protocols(["h2", "http/1.1"])
    with (
        socket.create_connection(("127.0.0.1", edge.https_port), timeout=TIMEOUT_S) as sock,
        context.wrap_socket(sock, server_hostname="localhost") as tls,
    ):
        assert tls.selected_alpn_protocol() == "h2"
        assert tls.version() in {"TLSv1.2", "TLSv1.3"}


def _tls11_handshake(edge: Edge) -> str:
    """The negotiated version, or the OpenSSL reason the handshake failed."""
    with warnings.catch_warnings():
        # TLSVersion.TLSv1_1 is deprecated in Python 3.11+; this probe needs it to offer 1.1.
        warnings.simplefilter("ignore", DeprecationWarning)
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        context.minimum_version = ssl.TLSVersion.TLSv1_1
        context.maximum_version = ssl.TLSVersion.TLSv1_1
    context.set_ciphers("ALL:@SECLEVEL=0")  # OpenSSL 3 refuses to offer TLS 1.1 above level 0
    context.load_verify_locations(cafile=str(edge.ca))
    with socket.create_connection(("127.0.0.1", edge.https_port), timeout=TIMEOUT_S) as sock:
        try:
            with context.wrap_socket(sock, server_hostname="localhost") as tls:
                return str(tls.version())
        except ssl.SSLError as exc:
            return str(exc.reason)


def test_tls11_is_refused(edge: Edge) -> None:
    outcome = _tls11_handshake(edge)
    assert outcome in {"TLSV1_ALERT_PROTOCOL_VERSION", "UNSUPPORTED_PROTOCOL"}, (
        f"a TLS 1.1 handshake with the edge must be refused by the server (got {outcome})"
    )


def test_tls11_probe_can_succeed_against_a_weak_edge(weak_edge: Edge) -> None:
    """Control: the probe above fails for the right reason, not because it cannot offer 1.1."""
    assert _tls11_handshake(weak_edge) == "TLSv1.1"


def test_websocket_upgrade_is_proxied(edge: Edge) -> None:
    url = f"wss://127.0.0.1:{edge.https_port}/v1/realtime"
    with ws_connect(url, ssl=client_context(edge.ca), open_timeout=TIMEOUT_S) as ws:
        ws.send("hello")
        assert ws.recv(timeout=TIMEOUT_S) == "echo:hello"


# --- plain HTTP --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("host", "redirect_host"),
    [(None, "127.0.0.1"), ("localhost", "localhost"), ("evil.example", "localhost")],
    ids=["by-ip", "by-name", "forged-host"],
)
def test_plain_http_browser_get_is_redirected_to_https(
    edge: Edge, host: str | None, redirect_host: str
) -> None:
    """Only hosts the certificate covers are kept; a forged Host cannot steer the redirect."""
    reply = plain(edge, "GET", "/some/page?x=1", host=host)
    assert reply.status == 301
    assert reply.header("Location") == f"https://{redirect_host}:{edge.https_port}/some/page?x=1"
    assert_security_headers(reply)


@pytest.mark.parametrize(
    ("method", "path"),
    [("POST", "/v1/apps"), ("GET", "/v1/health/ready"), ("POST", "/some/form")],
)
def test_plain_http_api_call_is_refused_not_redirected(
    edge: Edge, upstream: Upstream, method: str, path: str
) -> None:
    before = upstream.hits[path]
    reply = plain(edge, method, path, body=b'{"name":"x"}' if method == "POST" else None)
    assert_json_error(reply, 403, "https_required")
    assert reply.header("Location") is None
    assert upstream.hits[path] == before


def test_plain_http_metrics_are_not_reachable(edge: Edge) -> None:
    reply = plain(edge, "GET", "/metrics")
    assert_json_error(reply, 404, "not_found")
    assert_security_headers(reply)


def test_plain_http_to_the_https_port_gets_a_json_400(edge: Edge) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", edge.https_port, timeout=TIMEOUT_S)
    try:
        conn.request("GET", "/v1/health/ready")
        resp = conn.getresponse()
        reply = Reply(resp.status, resp.getheaders(), resp.read(), "GET http->https port")
    finally:
        conn.close()
    assert_json_error(reply, 400, "invalid_request")
    assert_security_headers(reply)


# --- failing upstreams -------------------------------------------------------------------------


def test_dead_upstream_is_a_json_502(edge_factory: EdgeFactory) -> None:
    dead = edge_factory(upstreams=[("127.0.0.1", free_port())])
    reply = https(dead, "GET", "/v1/health/ready")
    assert_json_error(reply, 502, "bad_gateway")
    assert_security_headers(reply)


def test_a_dead_worker_is_skipped(edge_factory: EdgeFactory, upstream: Upstream) -> None:
    mixed = edge_factory(upstreams=[("127.0.0.1", free_port()), ("127.0.0.1", upstream.port)])
    statuses = [https(mixed, "GET", "/v1/health/ready").status for _ in range(6)]
    assert statuses == [200] * 6


def test_a_post_refused_by_a_closed_listener_goes_to_another_worker(
    edge_factory: EdgeFactory, upstream: Upstream
) -> None:
    """A stopped or draining worker refuses connections once its listener is closed: nothing
    was sent, so the edge passes even a POST to the next worker (proxy_next_upstream error),
    and a rolling restart needs no one to take the worker out of the edge first."""
    mixed = edge_factory(upstreams=[("127.0.0.1", free_port()), ("127.0.0.1", upstream.port)])
    before = upstream.hits["/v1/echo"]
    statuses = [https(mixed, "POST", "/v1/echo", body=b"{}").status for _ in range(6)]
    assert statuses == [200] * 6
    assert upstream.hits["/v1/echo"] - before == 6


def test_a_workers_own_503_reaches_the_client_and_does_not_mark_it_down(
    edge_factory: EdgeFactory, upstream: Upstream, draining_upstream: Upstream
) -> None:
    """A worker answering 503 (its database is down) is answering: the client gets its 503 with
    Retry-After, and the edge keeps the worker in rotation. Were 503s to count as failures, a
    database outage would get every worker marked down and the edge would answer its own 502
    without Retry-After until fail_timeout (the PostgreSQL drills in checks/drills saw it)."""
    pair = edge_factory(
        upstreams=[("127.0.0.1", draining_upstream.port), ("127.0.0.1", upstream.port)]
    )
    before = draining_upstream.hits["/v1/health/ready"]
    answers = [https(pair, "GET", "/v1/health/ready") for _ in range(12)]
    statuses = [a.status for a in answers]
    assert set(statuses) == {200, 503}, statuses
    assert all(a.get_all("Retry-After") == ["1"] for a in answers if a.status == 503)
    assert draining_upstream.hits["/v1/health/ready"] - before == 6, "it stays in rotation"


def test_a_post_is_never_replayed_to_another_worker(
    edge_factory: EdgeFactory, upstream: Upstream, draining_upstream: Upstream
) -> None:
    pair = edge_factory(
        upstreams=[("127.0.0.1", draining_upstream.port), ("127.0.0.1", upstream.port)]
    )
    before = draining_upstream.hits["/v1/echo"] + upstream.hits["/v1/echo"]
    statuses = [https(pair, "POST", "/v1/echo", body=b"{}").status for _ in range(4)]
    assert 503 in statuses, (
        f"a POST that reached the draining worker must not be retried ({statuses})"
    )
    assert draining_upstream.hits["/v1/echo"] + upstream.hits["/v1/echo"] - before == 4


# --- TLS configuration, judged by sslyze -------------------------------------------------------


def _sslyze(edge: Edge) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "sslyze",
            "--mozilla_config=intermediate",
            "--certinfo_ca_file",
            str(edge.ca),
            f"localhost:{edge.https_port}{{127.0.0.1}}",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_sslyze_finds_the_edge_mozilla_intermediate_compliant(edge: Edge) -> None:
    result = _sslyze(edge)
    assert "OK - Compliant" in result.stdout, result.stdout[-3000:]
    assert result.returncode == 0


def test_sslyze_finds_a_weakened_edge_not_compliant(weak_edge: Edge) -> None:
    """Control: the compliance probe does fail when the TLS settings regress."""
    result = _sslyze(weak_edge)
    assert "Not compliant" in result.stdout, result.stdout[-3000:]
    assert "TLSv1.1" in result.stdout or "tls_versions" in result.stdout
    assert result.returncode != 0


# --- rate limits (each on its own edge, so no other test sees 429) -----------------------------


@dataclass
class FloodResult:
    replies: list[Reply] = field(default_factory=list)

    def statuses(self) -> collections.Counter[int]:
        return collections.Counter(r.status for r in self.replies)


FLOOD_CONNECTIONS = 16


def flood(edge: Edge, count: int, headers_for: Callable[[int], dict[str, str]]) -> FloodResult:
    """`count` GETs from FLOOD_CONNECTIONS kept-alive connections at once. Blocking sockets in
    threads: each connection is closed before this returns, so none is left for the garbage
    collector to warn about during a later test (as an event loop closed mid TLS shutdown did)."""

    def one_connection(indices: range) -> list[Reply]:
        conn = http.client.HTTPSConnection(
            "127.0.0.1", edge.https_port, context=client_context(edge.ca), timeout=30
        )
        replies = []
        try:
            for i in indices:
                conn.request("GET", "/v1/health/ready", headers=headers_for(i))
                resp = conn.getresponse()
                replies.append(Reply(resp.status, resp.getheaders(), resp.read(), "flood GET"))
        finally:
            conn.close()
        return replies

    shares = [range(start, count, FLOOD_CONNECTIONS) for start in range(FLOOD_CONNECTIONS)]
    with ThreadPoolExecutor(FLOOD_CONNECTIONS) as pool:
        return FloodResult([reply for part in pool.map(one_connection, shares) for reply in part])


def test_flood_gets_429_with_retry_after_and_security_headers(
    edge_factory: EdgeFactory,
) -> None:
    limited = edge_factory()
    result = flood(limited, 400, lambda i: {})
    statuses = result.statuses()
    assert set(statuses) == {200, 429}, statuses
    assert statuses[429] >= 100, f"400 requests at once must see many 429 (got {statuses})"
    for reply in (r for r in result.replies if r.status == 429):
        assert_json_error(reply, 429, "rate_limited")
        assert_security_headers(reply)
        retry_after = reply.get_all("Retry-After")
        assert len(retry_after) == 1
        assert retry_after[0].isdigit()
        assert int(retry_after[0]) >= 1


def test_limit_is_per_client_address(edge_factory: EdgeFactory) -> None:
    # A rate of 1/s so the bucket cannot refill between these few requests.
    limited = edge_factory(api_rate_per_s=1, api_burst=5)
    statuses = [https(limited, "GET", "/v1/health/ready").status for _ in range(8)]
    assert statuses == [200] * 6 + [429] * 2
    assert https(limited, "GET", "/v1/health/ready", source="127.0.0.2").status == 200
    assert https(limited, "GET", "/v1/health/ready").status == 429


def test_forged_forwarded_for_does_not_escape_the_limit(edge_factory: EdgeFactory) -> None:
    limited = edge_factory()
    result = flood(
        limited,
        400,
        lambda i: {
            "X-Forwarded-For": f"198.51.{i // 256}.{i % 256}",
            "X-Real-IP": f"198.51.{i // 256}.{i % 256}",
        },
    )
    statuses = result.statuses()
    assert statuses[429] >= 100, f"forged X-Forwarded-For must still be limited (got {statuses})"
