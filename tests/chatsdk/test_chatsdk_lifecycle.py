from __future__ import annotations

import asyncio
import dataclasses
import socket
import time
from collections.abc import Callable
from typing import Any

import aiohttp
import pytest
from aiohttp import WSCloseCode, WSMsgType, web
from chatsdk.keys import LIFECYCLE, WEBSOCKETS
from chatsdk.server import RunningServer
from chatsdk.settings import Settings

Wait = Callable[..., Any]
RunApp = Callable[..., Any]


def test_the_api_waits_for_postgresql_and_recovers_when_it_comes_back(
    own_postgres: Any,
    redis_server: Any,
    env_for: Callable[..., dict[str, str]],
    run_app: RunApp,
    wait_status: Wait,
) -> None:
    database_url = own_postgres.create_database()
    own_postgres.stop()  # workers start before the databases in the drill
    settings = Settings.from_env(env_for(database_url, redis_server.url))

    async def scenario(server: RunningServer, client: aiohttp.ClientSession) -> None:
        body = await wait_status(client, "/v1/health/ready", 503)
        assert body["checks"]["database"] == "unavailable"
        async with client.get("/v1/health/live") as response:
            assert response.status == 200

        await asyncio.to_thread(own_postgres.launch)
        body = await wait_status(client, "/v1/health/ready", 200, within=12)
        assert body["checks"]["migrations"] == "ok"

        await asyncio.to_thread(own_postgres.stop)
        body = await wait_status(client, "/v1/health/ready", 503)
        assert body["checks"]["database"] == "unavailable"

        await asyncio.to_thread(own_postgres.launch)
        await wait_status(client, "/v1/health/ready", 200, within=12)

    run_app(settings, scenario, ready=False)


def test_drain_lets_in_flight_requests_finish_and_closes_sockets_with_1001(
    settings: Settings, run_app: RunApp
) -> None:
    async def slow(request: web.Request) -> web.Response:
        await asyncio.sleep(0.8)
        return web.json_response({"slow": "done"})

    async def socket(request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        request.app[WEBSOCKETS].add(ws)
        async for _ in ws:
            pass
        return ws

    async def scenario(server: RunningServer, client: aiohttp.ClientSession) -> None:
        ws = await client.ws_connect("/v1/test-socket")
        in_flight = asyncio.create_task(client.get("/v1/slow"))
        await asyncio.sleep(0.2)  # the slow request is being handled
        started = time.monotonic()
        await server.drain()
        drained_in = time.monotonic() - started
        response = await in_flight
        async with response:
            assert response.status == 200
            assert await response.json() == {"slow": "done"}
        message = await ws.receive(timeout=2)
        assert message.type is WSMsgType.CLOSE
        assert message.data == WSCloseCode.GOING_AWAY
        await ws.close()
        assert drained_in < settings.shutdown_timeout + 1

    # Extra routes go on this test's own app instance, never on the real app.
    run_app(
        settings,
        scenario,
        extra_routes=[web.get("/v1/slow", slow), web.get("/v1/test-socket", socket)],
    )


def test_while_draining_every_answer_closes_its_connection(
    settings: Settings, run_app: RunApp
) -> None:
    """A proxy's pooled connections to a draining worker are retired one answer at a time while
    the listener is still open, not cut under a request the proxy has just sent."""

    async def scenario(server: RunningServer, client: aiohttp.ClientSession) -> None:
        async with client.get("/v1/health/live") as before:
            assert before.status == 200
            assert before.headers.get("Connection", "").lower() != "close"
        draining = asyncio.create_task(server.drain())
        await asyncio.sleep(0)  # the drain has begun: readiness 503, the delay running
        async with client.get("/v1/health/ready") as ready:
            assert ready.status == 503
            assert ready.headers.get("Connection", "").lower() == "close"
        async with client.get("/v1/health/live") as live:
            assert live.status == 200
            assert live.headers.get("Connection", "").lower() == "close"
        await draining

    run_app(dataclasses.replace(settings, drain_delay=3.0), scenario)


def test_drain_finishes_a_request_whose_body_arrives_after_the_listener_closed(
    settings: Settings, run_app: RunApp
) -> None:
    """An upload the edge is still streaming to the worker when it stops listening is in
    flight too: the drain reads its body to the end and answers it."""

    async def echo(request: web.Request) -> web.Response:
        return web.json_response({"got": len(await request.read())})

    async def scenario(server: RunningServer, client: aiohttp.ClientSession) -> None:
        reader, writer = await asyncio.open_connection(server.host, server.port)
        body = b"x" * 1000
        writer.write(
            b"POST /v1/test-echo HTTP/1.1\r\nHost: test\r\nContent-Type: text/plain\r\n"
            + f"Content-Length: {len(body)}\r\n\r\n".encode()
            + body[:500]
        )
        await writer.drain()
        await asyncio.sleep(0.2)  # the request is being handled, its body half there
        draining = asyncio.create_task(server.drain())
        deadline = time.monotonic() + 10
        while server.runner.sites:  # until the drain has closed the listener
            assert time.monotonic() < deadline, "the listener must close during the drain"
            await asyncio.sleep(0.02)
        writer.write(body[500:])
        await writer.drain()
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), timeout=10)
        await asyncio.wait_for(reader.read(), timeout=10)  # to the end: the worker closes
        writer.close()
        await writer.wait_closed()
        await draining
        assert head.startswith(b"HTTP/1.1 200"), head
        assert b"connection: close" in head.lower(), head

    run_app(settings, scenario, extra_routes=[web.post("/v1/test-echo", echo)])


def test_drain_answers_the_connections_waiting_in_the_accept_queue(
    settings: Settings, run_app: RunApp
) -> None:
    """Connections the kernel completed but the worker had not accepted yet when it stops
    listening already carry a request (a proxy sends at once): they are accepted and answered,
    not reset, and what connects afterwards is refused."""

    def connect_and_send(host: str, port: int, n: int) -> list[socket.socket]:
        clients = []
        for _ in range(n):
            sock = socket.create_connection((host, port), timeout=10)
            sock.sendall(b"GET /v1/health/live HTTP/1.1\r\nHost: test\r\n\r\n")
            clients.append(sock)
        return clients

    def answers(clients: list[socket.socket]) -> list[bytes]:
        heads = []
        for sock in clients:
            with sock:
                try:
                    heads.append(sock.recv(200).split(b"\r\n", 1)[0])
                except ConnectionResetError:
                    heads.append(b"reset")
        return heads

    async def scenario(server: RunningServer, client: aiohttp.ClientSession) -> None:
        server.app[LIFECYCLE].draining = True  # as the drain delay has begun
        # The loop is held, so nothing is accepted: the kernel queues the connections.
        clients = connect_and_send(server.host, server.port, 5)
        await server.drain()
        heads = await asyncio.to_thread(answers, clients)
        assert heads == [b"HTTP/1.1 200 OK"] * 5, heads
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection((server.host, server.port), timeout=5).close()

    run_app(dataclasses.replace(settings, drain_delay=0.0), scenario)
