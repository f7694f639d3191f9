"""Typed keys of application and request state."""

from __future__ import annotations

import weakref
from dataclasses import dataclass

from aiohttp import web

from chatsdk.dependencies import Dependencies
from chatsdk.metrics import Metrics
from chatsdk.settings import Settings


@dataclass
class Lifecycle:
    draining: bool = False


SETTINGS = web.AppKey("settings", Settings)
METRICS = web.AppKey("metrics", Metrics)
LIFECYCLE = web.AppKey("lifecycle", Lifecycle)
DEPENDENCIES = web.AppKey("dependencies", Dependencies)
# Open WebSockets, closed with 1001 on shutdown (the realtime endpoint registers them here).
WEBSOCKETS: web.AppKey[weakref.WeakSet[web.WebSocketResponse]] = web.AppKey("websockets")

REQUEST_ID = web.RequestKey("request_id", str)
