"""The OpenAPI document at /v1/openapi.json matches the implementation: every route the app
registers is documented (except the routes openapi.UNDOCUMENTED names), every documented operation
exists, and the document is valid 3.1."""

from __future__ import annotations

from typing import Any

import pytest
from chatsdk.app import create_app
from chatsdk.openapi import UNDOCUMENTED, openapi_document
from chatsdk.settings import Settings
from openapi_spec_validator import validate

from preflight.client import ChatClient, expect

METHODS = frozenset({"get", "put", "post", "delete", "patch", "options", "head", "trace"})


def app_operations() -> set[tuple[str, str]]:
    settings = Settings(
        database_url="postgresql://u:p@127.0.0.1:1/db",
        redis_url="redis://127.0.0.1:1/0",
        admin_key="a" * 32,
        jwt_secret="j" * 48,
    )
    ops = set()
    for route in create_app(settings).router.routes():
        path = route.resource.canonical if route.resource is not None else None
        if route.method == "HEAD" or path is None or path in UNDOCUMENTED:
            continue
        ops.add((str(path), route.method.lower()))
    return ops


def documented_operations(doc: dict[str, Any]) -> set[tuple[str, str]]:
    return {
        (path, method)
        for path, item in doc["paths"].items()
        for method in item
        if method in METHODS
    }


@pytest.fixture(scope="module")
def served(chat: ChatClient) -> dict[str, Any]:
    doc: dict[str, Any] = expect(chat.get("/v1/openapi.json"), 200)
    return doc


def test_the_document_is_valid_openapi_3_1(served: dict[str, Any]) -> None:
    """An invalid document breaks every generated client and doc site."""
    assert served["openapi"].startswith("3.1"), f"openapi must be 3.1.x (got {served['openapi']})"
    validate(served)


def test_the_served_document_is_the_built_one(served: dict[str, Any]) -> None:
    assert served == openapi_document()


def test_every_route_of_the_app_is_documented() -> None:
    """An undocumented route is an untested, unreviewed surface."""
    missing = app_operations() - documented_operations(openapi_document())
    assert not missing, f"routes served but not in /v1/openapi.json: {sorted(missing)}"


def test_every_documented_operation_exists() -> None:
    """A documented route that does not exist sends clients to a 404."""
    extra = documented_operations(openapi_document()) - app_operations()
    assert not extra, f"operations in /v1/openapi.json that the app does not serve: {sorted(extra)}"


def test_the_checker_notices_a_missing_route() -> None:
    """Positive control: dropping one documented path is detected by the comparison."""
    doc = openapi_document()
    doc["paths"].pop("/v1/channels/{channel_id}/messages")
    assert app_operations() - documented_operations(doc)


def test_every_operation_declares_the_error_shape_and_its_security() -> None:
    doc = openapi_document()
    schemes = set(doc["components"]["securitySchemes"])
    assert schemes >= {"AdminKey", "ApiKey", "BearerAuth"}
    for path, item in doc["paths"].items():
        for method, op in item.items():
            if method not in METHODS:
                continue
            errors = [code for code in op["responses"] if code.startswith(("4", "5"))]
            if path.startswith("/v1/") and path not in ("/v1/health/live", "/v1/openapi.json"):
                assert errors, f"{method.upper()} {path} must document its error responses"
            for requirement in op.get("security", []):
                assert set(requirement) <= schemes, f"{method.upper()} {path}: unknown scheme"
            body = op.get("requestBody", {}).get("content", {}).get("application/json")
            if body is not None:
                schema = body["schema"]
                if "$ref" in schema:
                    name = schema["$ref"].rsplit("/", 1)[-1]
                    schema = doc["components"]["schemas"][name]
                assert schema.get("additionalProperties") is False, (
                    f"{method.upper()} {path}: the body schema must refuse unknown fields"
                )
