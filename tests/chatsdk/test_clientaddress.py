"""The client address the API keys its throttles on: the TCP peer, or the address a trusted
proxy (the edge) forwards, never what an untrusted client writes into the headers."""

from __future__ import annotations

import dataclasses

import pytest
from aiohttp import web
from aiohttp.test_utils import make_mocked_request
from chatsdk.clientaddress import client_address
from chatsdk.keys import SETTINGS
from chatsdk.settings import DEFAULT_TRUSTED_PROXIES, Settings

SETTINGS_ = Settings(
    database_url="postgresql://u:p@127.0.0.1:1/db",
    redis_url="redis://127.0.0.1:1/0",
    admin_key="a" * 32,
    jwt_secret="j" * 48,
)


def address_of(peer: str, headers: dict[str, str], settings: Settings = SETTINGS_) -> str:
    app = web.Application()
    app[SETTINGS] = settings
    request = make_mocked_request("GET", "/v1/me", headers=headers, app=app)
    return client_address(request.clone(remote=peer))


@pytest.mark.parametrize(
    ("peer", "headers", "expected"),
    [
        pytest.param("203.0.113.9", {}, "203.0.113.9", id="a direct client"),
        pytest.param(
            "203.0.113.9",
            {"X-Real-IP": "198.51.100.1", "X-Forwarded-For": "198.51.100.2"},
            "203.0.113.9",
            id="an untrusted peer's headers are ignored",
        ),
        pytest.param("127.0.0.1", {"X-Real-IP": "198.51.100.1"}, "198.51.100.1", id="the edge"),
        pytest.param(
            "127.0.0.1",
            {"X-Forwarded-For": "10.9.9.9, 198.51.100.2"},
            "198.51.100.2",
            id="the rightmost X-Forwarded-For entry, the one the edge added",
        ),
        pytest.param(
            "127.0.0.1",
            {"X-Real-IP": "not-an-address", "X-Forwarded-For": "198.51.100.2, junk"},
            "198.51.100.2",
            id="invalid entries are skipped",
        ),
        pytest.param("127.0.0.1", {}, "127.0.0.1", id="the edge's own request"),
        pytest.param(
            "::1", {"X-Real-IP": "2001:db8:1:2:3:4:5:6"}, "2001:db8:1:2::/64", id="IPv6 by /64"
        ),
        pytest.param("::ffff:203.0.113.9", {}, "203.0.113.9", id="IPv4-mapped IPv6"),
    ],
)
def test_client_address(peer: str, headers: dict[str, str], expected: str) -> None:
    assert address_of(peer, headers) == expected


def test_no_trusted_proxy_means_the_peer_always() -> None:
    settings = dataclasses.replace(SETTINGS_, trusted_proxies=())
    assert address_of("127.0.0.1", {"X-Real-IP": "198.51.100.1"}, settings) == "127.0.0.1"
    assert SETTINGS_.trusted_proxies == DEFAULT_TRUSTED_PROXIES
