"""The edge probes against deliberately broken edges: each defect turns exactly its items red
among the edge probes (security headers, TLS, limits, CORS, surface, network, compression)."""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable, Mapping
from pathlib import Path

import pytest

from preflight.targets.native import NativeTestOptions
from tests.checks.support import edge_templates, failing, native, outcomes, probe

# The probe files of the edge family; other families' probes have their own variant tests.
EDGE_PROBES = (
    "security/test_headers.py",
    "security/test_tls.py",
    "security/test_plain_http.py",
    "security/test_cors.py",
    "security/test_ratelimit.py",
    "security/test_edge_limits.py",
    "security/test_edge_surface.py",
    "security/test_edge_security_txt.py",
    "infrastructure/test_network.py",
    "performance/test_edge_http.py",
)

Edit = Callable[[str], str]


def _sub(pattern: str, replacement: str) -> Edit:
    return lambda text: re.sub(pattern, replacement, text, flags=re.MULTILINE)


def _append(line: str) -> Edit:
    return lambda text: text + line + "\n"


def _tls10_and_cbc_sha1(text: str) -> str:
    return text.replace(
        "ssl_protocols TLSv1.2 TLSv1.3;", "ssl_protocols TLSv1 TLSv1.2 TLSv1.3;"
    ).replace("-POLY1305;\n", "-POLY1305:ECDHE-ECDSA-AES128-SHA:@SECLEVEL=0;\n", 1)


def _metrics_proxied(text: str) -> str:
    # The https server's metrics location proxies to the workers instead of answering 404.
    return text.replace(
        "metrics(?:/|$) {\n            include security/headers.conf;\n            return 404;",
        "metrics(?:/|$) {\n            include security/headers.conf;\n"
        "            include proxy/api.conf;",
        1,
    )


# Each variant seeds several defects whose items do not overlap (one edge start per variant, not
# one per defect); every defect must turn exactly its own items red, with a reason naming it.
EDGE_DEFECTS: list[object] = [
    pytest.param(
        {
            "security/baseline.conf": _sub(r"^add_header Strict-Transport-Security .*$", ""),
            "tls/intermediate.conf": _tls10_and_cbc_sha1,
            # The http-level limit is what the API locations inherit.
            "limits/rate.conf": _sub(r"^limit_req zone=api .*$", ""),
            "compression/gzip.conf": _sub(r"^gzip on;$", "gzip off;"),
            "security/security-txt.conf": _sub(r"Expires: \d{4}-", "Expires: 2020-"),
        },
        ["listen_addresses=*"],
        {
            "SEC-HDR-HSTS": "Strict-Transport-Security",
            "SEC-TLS-MIN": "TLSv1",
            "SEC-TLS-CIPHERS": "TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA",
            "SEC-RATELIMIT": "429",
            "PERF-GZIP": "Content-Encoding identity",
            "OPS-CONTACT": "Expires",
            "INF-NET-FIREWALL": "PostgreSQL",
            "SEC-PORTS-CLOSED": "listen",
        },
        marks=pytest.mark.turns_red(
            "SEC-HDR-HSTS",
            "SEC-TLS-MIN",
            "SEC-TLS-CIPHERS",
            "SEC-RATELIMIT",
            "PERF-GZIP",
            "OPS-CONTACT",
            "INF-NET-FIREWALL",
            "SEC-PORTS-CLOSED",
            defect="An edge without HSTS, accepting TLS 1.0 and a CBC-SHA1 cipher, with no API "
            "rate limit, gzip off and an expired security.txt, and a PostgreSQL listening "
            "on every address.",
        ),
        id="no-hsts-tls1.0-cbc-sha1-no-rate-limit-gzip-off-expired-contact-db-on-every-address",
    ),
    pytest.param(
        {
            "security/baseline.conf": _append(
                "add_header Access-Control-Allow-Origin $http_origin always;\n"
                'add_header Access-Control-Allow-Credentials "true" always;'
            ),
            "limits/rate.conf": _append("limit_req_dry_run on;"),
            "limits/body.conf": _sub(r"^client_max_body_size .*;$", "client_max_body_size 1g;"),
            "proxy/api.conf": _sub(r"^add_header Cache-Control .*$", ""),
            "nginx.conf.j2": _metrics_proxied,
        },
        [],
        {
            "SEC-CORS": "Access-Control-Allow-Origin: https://evil.example",
            "SEC-RATELIMIT": "429",
            "SEC-BODY-LIMIT": "100 Continue",
            "PERF-CACHE-HEADERS": "no-store",
            "SEC-PORTS-CLOSED": "/metrics",
        },
        marks=pytest.mark.turns_red(
            "SEC-CORS",
            "SEC-RATELIMIT",
            "SEC-BODY-LIMIT",
            "PERF-CACHE-HEADERS",
            "SEC-PORTS-CLOSED",
            defect="An edge that reflects any Origin with credentials, runs its rate limit dry, "
            "accepts 1 GB bodies, sends no Cache-Control on the API and proxies /metrics to "
            "the workers.",
        ),
        id="cors-reflects-rate-limit-dry-run-body-limit-raised-no-cache-policy-metrics-exposed",
    ),
]


@pytest.mark.native
@pytest.mark.parametrize(("edits", "postgres", "expected"), EDGE_DEFECTS)
def test_edge_defects_turn_exactly_their_items_red(
    tmp_path: Path, edits: Mapping[str, Edit], postgres: list[str], expected: Mapping[str, str]
) -> None:
    templates = edge_templates(tmp_path, edits)
    with native(
        test=NativeTestOptions(edge_template_dir=templates, postgres_settings=postgres)
    ) as info:
        results = probe(info, *EDGE_PROBES)
    red = failing(results)
    assert set(red) == set(expected), red
    for item, named in expected.items():
        assert named in red[item], (item, red[item])


@pytest.mark.turns_red(
    "INF-NET-DNS",
    defect="An edge URL whose host name does not resolve.",
)
@pytest.mark.native
def test_the_dns_probe_judges_names_and_skips_addresses_and_loopback_names() -> None:
    with native() as info:
        port = info.edge.url.rsplit(":", 1)[1]
        by_address = outcomes(probe(info, "infrastructure", items=["INF-NET-DNS"]))
        by_name = outcomes(
            probe(
                dataclasses.replace(
                    info, edge=dataclasses.replace(info.edge, url=f"https://localhost:{port}")
                ),
                "infrastructure",
                items=["INF-NET-DNS"],
            )
        )
        unresolvable = dataclasses.replace(
            info, edge=dataclasses.replace(info.edge, url=f"https://preflight-edge.invalid:{port}")
        )
        missing = failing(probe(unresolvable, "infrastructure", items=["INF-NET-DNS"]))
    assert by_address["INF-NET-DNS"][0].value == "skip", by_address
    # localhost is no public record: this machine's own name for itself.
    assert by_name["INF-NET-DNS"][0].value == "skip", by_name
    assert "loopback only" in by_name["INF-NET-DNS"][1], by_name
    assert set(missing) == {"INF-NET-DNS"}, missing
    assert "must resolve" in missing["INF-NET-DNS"], missing
