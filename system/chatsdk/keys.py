"""Typed keys of application and request state."""

from __future__ import annotations

import asyncio
import weakref
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from chatsdk.dependencies import Dependencies
from chatsdk.metrics import Metrics
from chatsdk.settings import Settings


@dataclass
class Lifecycle:
    draining: bool = False
    # HTTP requests being served (WebSockets not counted: the drain closes them with 1001).
    requests: int = 0
    idle: asyncio.Event = field(default_factory=asyncio.Event)

    def __post_init__(self) -> None:
        self.idle.set()

    def begin(self) -> None:
        self.requests += 1
        self.idle.clear()

    def end(self) -> None:
        self.requests -= 1
        if self.requests == 0:
            self.idle.set()


SETTINGS = web.AppKey("settings", Settings)
METRICS = web.AppKey("metrics", Metrics)
LIFECYCLE = web.AppKey("lifecycle", Lifecycle)
DEPENDENCIES = web.AppKey("dependencies", Dependencies)
# Open WebSockets, closed with 1001 on shutdown (the realtime endpoint registers them here).
WEBSOCKETS: web.AppKey[weakref.WeakSet[web.WebSocketResponse]] = web.AppKey("websockets")

# Set after a commit that wrote outbox rows: the drainer publishes at once.
OUTBOX_WAKE = web.AppKey("outbox_wake", asyncio.Event)

# Called by the drainer with (connection, outbox rows) inside the transaction that marks the
# rows published, e.g. to turn events into webhook deliveries.
OutboxConsumer = Callable[[Any, list[Any]], Awaitable[None]]
OUTBOX_CONSUMERS: web.AppKey[list[OutboxConsumer]] = web.AppKey("outbox_consumers")

REQUEST_ID = web.RequestKey("request_id", str)
