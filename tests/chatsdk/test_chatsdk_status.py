"""GET /v1/status, the status page's source: public, cached briefly, each component's state as
this worker sees it, and nothing more."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import aiohttp
from chatsdk.server import RunningServer
from chatsdk.settings import Settings

RunApp = Callable[..., Any]


async def _status(client: aiohttp.ClientSession) -> tuple[dict[str, Any], str]:
    async with client.get("/v1/status") as response:
        assert response.status == 200
        return await response.json(), response.headers["Cache-Control"]


def test_every_component_is_up_with_the_stores_up(settings: Settings, run_app: RunApp) -> None:
    async def scenario(server: RunningServer, client: aiohttp.ClientSession) -> None:
        body, cache = await _status(client)
        assert set(body) == {"status", "components", "checked_at"}, body
        assert body["status"] == "up"
        assert body["components"] == dict.fromkeys(("api", "database", "redis", "realtime"), "up")
        assert cache == "public, max-age=5"

    run_app(settings, scenario)


def test_stores_that_do_not_answer_are_shown_down_without_saying_why(
    env_for: Callable[..., dict[str, str]], run_app: RunApp
) -> None:
    settings = Settings.from_env(
        env_for("postgresql://u:p@127.0.0.1:1/none", "redis://:p@127.0.0.1:1/0")
    )

    async def scenario(server: RunningServer, client: aiohttp.ClientSession) -> None:
        body, _ = await _status(client)
        assert body["status"] == "down"
        assert body["components"] == {
            "api": "degraded",
            "database": "down",
            "redis": "down",
            "realtime": "down",
        }
        assert "127.0.0.1" not in str(body)

    run_app(settings, scenario, ready=False)
