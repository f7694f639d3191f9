"""The OpenAPI 3.1 description of the routes that exist today."""

from __future__ import annotations

from typing import Any

from chatsdk.version import __version__

_ERROR = {"$ref": "#/components/schemas/Error"}
_HEALTH_CHECKS = {
    "type": "object",
    "properties": {
        "database": {"type": "string", "enum": ["ok", "unavailable"]},
        "redis": {"type": "string", "enum": ["ok", "unavailable"]},
        "migrations": {"type": "string", "enum": ["ok", "pending", "failed"]},
    },
    "required": ["database", "redis", "migrations"],
}


def _json(schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def openapi_document() -> dict[str, Any]:
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "chatsdk",
            "version": __version__,
            "description": "Minimal chat API; every error is {error: {code, message, request_id}}.",
        },
        "paths": {
            "/v1/health/live": {
                "get": {
                    "operationId": "getLive",
                    "summary": "The process is up.",
                    "responses": {
                        "200": _json(
                            {
                                "type": "object",
                                "properties": {"status": {"const": "live"}},
                                "required": ["status"],
                            },
                            "Live.",
                        )
                    },
                }
            },
            "/v1/health/ready": {
                "get": {
                    "operationId": "getReady",
                    "summary": "Database, Redis and migrations ok; not draining.",
                    "responses": {
                        "200": _json(
                            {
                                "type": "object",
                                "properties": {
                                    "status": {"const": "ready"},
                                    "checks": _HEALTH_CHECKS,
                                },
                                "required": ["status", "checks"],
                            },
                            "Ready.",
                        ),
                        "503": {
                            **_json(
                                {
                                    "type": "object",
                                    "properties": {
                                        "status": {"enum": ["not_ready", "draining"]},
                                        "checks": _HEALTH_CHECKS,
                                        "error": {"$ref": "#/components/schemas/ErrorDetail"},
                                    },
                                    "required": ["status", "checks", "error"],
                                },
                                "Not ready, or draining; the failing check is named.",
                            ),
                            "headers": {
                                "Retry-After": {"schema": {"type": "integer", "minimum": 1}}
                            },
                        },
                    },
                }
            },
            "/v1/openapi.json": {
                "get": {
                    "operationId": "getOpenAPI",
                    "summary": "This document.",
                    "responses": {"200": _json({"type": "object"}, "The OpenAPI document.")},
                }
            },
            "/metrics": {
                "get": {
                    "operationId": "getMetrics",
                    "summary": "Prometheus metrics (internal; not served by the edge).",
                    "responses": {
                        "200": {
                            "description": "Prometheus text exposition format.",
                            "content": {"text/plain": {"schema": {"type": "string"}}},
                        }
                    },
                }
            },
        },
        "components": {
            "schemas": {
                "ErrorDetail": {
                    "type": "object",
                    "properties": {
                        "code": {"type": "string", "pattern": "^[a-z][a-z0-9_]*$"},
                        "message": {"type": "string"},
                        "request_id": {"type": "string"},
                    },
                    "required": ["code", "message", "request_id"],
                },
                "Error": {
                    "type": "object",
                    "properties": {"error": {"$ref": "#/components/schemas/ErrorDetail"}},
                    "required": ["error"],
                },
            },
            "responses": {
                "NotFound": _json(_ERROR, "No resource matches the path."),
                "MethodNotAllowed": _json(_ERROR, "The method is not allowed on the path."),
                "InternalError": _json(_ERROR, "The server failed; no details are exposed."),
            },
        },
    }
