"""The OpenAPI 3.1 description of the public HTTP API (its prose companion: API.md), built as
data. The WebSocket and the internal routes are left out (UNDOCUMENTED says why, API.md has them).

Request body schemas mirror the validators in the handlers (validation.py specs): the same
required fields, types, lengths, enums and `additionalProperties: false` (unknown fields are
refused). Optional fields also accept null, which the validators treat as absent.
tests/api/test_openapi.py checks that every route the app registers is here (or UNDOCUMENTED)
and every operation here exists; tests/api/test_bad_input.py drives every JSON body endpoint
listed here with hostile input.
"""

from __future__ import annotations

import copy
from typing import Any

from chatsdk import status, validation
from chatsdk.outbox import PUBLIC_EVENT_TYPES
from chatsdk.version import __version__

Schema = dict[str, Any]

ID_PATTERN = f"^{validation.ID_PATTERN.pattern}$"
MAX_SEQ = 2**62
EVENT_TYPES = list(PUBLIC_EVENT_TYPES)


# -- schema building blocks -------------------------------------------------------------------


def ref(name: str) -> Schema:
    return {"$ref": f"#/components/schemas/{name}"}


def text(min_len: int = 1, max_len: int = 200) -> Schema:
    # Any character but NUL, which PostgreSQL text cannot hold (validation.string refuses it).
    return {"type": "string", "minLength": min_len, "maxLength": max_len, "pattern": "^[^\\x00]*$"}


def ident() -> Schema:
    return {"type": "string", "minLength": 1, "maxLength": 128, "pattern": ID_PATTERN}


def integer(minimum: int = 0, maximum: int = MAX_SEQ) -> Schema:
    return {"type": "integer", "minimum": minimum, "maximum": maximum}


def array(items: Schema, min_items: int = 0, max_items: int = 100, unique: bool = True) -> Schema:
    return {
        "type": "array",
        "items": items,
        "minItems": min_items,
        "maxItems": max_items,
        "uniqueItems": unique,
    }


def url(schemes: tuple[str, ...], max_len: int = 2000) -> Schema:
    """An absolute URI with a host (ASCII; validation.url refuses anything else)."""
    return {
        "type": "string",
        "format": "uri",
        "minLength": 1,
        "maxLength": max_len,
        "pattern": validation.uri_pattern(schemes),
    }


def nullable(schema: Schema) -> Schema:
    """An optional field: null is accepted and means absent."""
    out = copy.deepcopy(schema)
    if "enum" in out:
        out["enum"] = [*out["enum"], None]
    if "type" in out:
        out["type"] = [out["type"], "null"]
    return out


def body(required: dict[str, Schema], optional: dict[str, Schema] | None = None) -> Schema:
    """A request body object: unknown fields are refused (400 unknown_field)."""
    optional = optional or {}
    return {
        "type": "object",
        "properties": {**required, **{k: nullable(v) for k, v in optional.items()}},
        "required": list(required),
        "additionalProperties": False,
    }


def obj(props: dict[str, Schema], required: list[str] | None = None) -> Schema:
    """A response object: clients must ignore fields they do not know."""
    return {"type": "object", "properties": props, "required": required or list(props)}


STRING: Schema = {"type": "string"}
TIMESTAMP: Schema = {"type": "string", "format": "date-time"}
OPT_TIMESTAMP: Schema = {"type": ["string", "null"], "format": "date-time"}
OPT_STRING: Schema = {"type": ["string", "null"]}
COUNT: Schema = {"type": "integer", "minimum": 0}


# -- components -------------------------------------------------------------------------------

SCHEMAS: dict[str, Schema] = {
    "ErrorDetail": obj(
        {
            "code": {"type": "string", "pattern": "^[a-z][a-z0-9_]*$"},
            "message": STRING,
            "request_id": STRING,
        }
    ),
    "Error": obj({"error": ref("ErrorDetail")}),
    # Request bodies (keep in step with the handlers' validation specs).
    "CreateAppRequest": body({"name": text(1, 200)}),
    "CreateTokenRequest": body({"user_id": ident()}, {"name": text(1, 200)}),
    "RefreshTokenRequest": body({"refresh_token": text(1, 4096)}),
    "UpdateMeRequest": {
        **body({}, {"name": text(1, 200), "avatar_url": url(("https",))}),
        # At least one of them, not null (null is the same as leaving a field out).
        "anyOf": [
            {"required": [name], "properties": {name: {"type": "string"}}}
            for name in ("name", "avatar_url")
        ],
    },
    "CreateChannelRequest": {
        **body(
            {
                "name": text(1, 200),
                "kind": {"type": "string", "enum": ["public", "private", "direct"]},
            },
            {"member_ids": array(ident(), 0, 500)},
        ),
        # A direct channel names its one other member, or only the caller (a channel with
        # yourself); the caller may be listed too.
        "if": {"properties": {"kind": {"const": "direct"}}},
        "then": {
            "required": ["member_ids"],
            "properties": {"member_ids": array(ident(), 1, 2)},
        },
    },
    "UpdateChannelRequest": body({"name": text(1, 200)}),
    "AddMembersRequest": body({"user_ids": array(ident(), 1, 100)}),
    "MarkReadRequest": body({"seq": integer()}),
    "SendMessageRequest": body(
        {"text": text(1, 4000)},
        {"client_msg_id": ident(), "parent_id": ident(), "upload_ids": array(ident(), 0, 10)},
    ),
    "EditMessageRequest": body({"text": text(1, 4000)}),
    "CreatePollRequest": body(
        {"question": text(1, 500), "options": array(text(1, 200), 2, 10)},
        {"multiple": {"type": "boolean"}},
    ),
    "VoteRequest": body({"option_ids": array(ident(), 1, 10)}),
    "CreateWebhookRequest": body(
        {
            "url": url(("https", "http")),
            "events": array(
                {"type": "string", "enum": [*EVENT_TYPES, "*"]}, 1, len(EVENT_TYPES) + 1
            ),
        }
    ),
    # Responses.
    "App": obj(
        {"app_id": STRING, "name": STRING, "api_key": STRING, "key_id": STRING},
        ["app_id", "api_key", "key_id"],
    ),
    "ApiKey": obj({"key_id": STRING, "api_key": STRING}),
    "TokenPair": obj(
        {
            "access_token": STRING,
            "refresh_token": STRING,
            "token_type": {"const": "Bearer"},
            "expires_in": COUNT,
            "user_id": STRING,
        },
        ["access_token", "refresh_token", "expires_in"],
    ),
    "User": obj(
        {
            "user_id": STRING,
            "name": OPT_STRING,
            "avatar_url": OPT_STRING,
            "created_at": TIMESTAMP,
        },
        ["user_id", "name"],
    ),
    "Channel": obj(
        {
            "channel_id": STRING,
            "name": STRING,
            "kind": {"type": "string", "enum": ["public", "private", "direct"]},
            "created_by": STRING,
            "created_at": TIMESTAMP,
            "updated_at": TIMESTAMP,
            "last_seq": COUNT,
            "role": {"type": "string", "enum": ["owner", "member"]},
            "last_read_seq": COUNT,
            "unread": COUNT,
            "member_ids": {"type": "array", "items": STRING},
            "member_count": COUNT,
        },
        ["channel_id", "name", "kind", "last_seq"],
    ),
    "ChannelPage": obj(
        {"channels": {"type": "array", "items": ref("Channel")}, "has_more": {"type": "boolean"}}
    ),
    "MembersAdded": obj({"channel_id": STRING, "added": {"type": "array", "items": STRING}}),
    "ReadState": obj(
        {"channel_id": STRING, "last_read_seq": COUNT, "last_seq": COUNT, "unread": COUNT}
    ),
    "Message": obj(
        {
            "message_id": STRING,
            "seq": {"type": "integer", "minimum": 1},
            "channel_id": STRING,
            "user_id": STRING,
            "kind": {"type": "string", "enum": ["text", "poll"]},
            "text": OPT_STRING,
            "client_msg_id": OPT_STRING,
            "parent_id": OPT_STRING,
            "created_at": TIMESTAMP,
            "edited_at": OPT_TIMESTAMP,
            "deleted": {"type": "boolean"},
            "deleted_at": OPT_TIMESTAMP,
            "upload_ids": {"type": "array", "items": STRING},
            "reactions": {"type": "object", "additionalProperties": COUNT},
            "reply_count": COUNT,
            "poll_id": OPT_STRING,
        },
        ["message_id", "seq", "channel_id", "user_id", "text", "created_at"],
    ),
    "MessagePage": obj(
        {"messages": {"type": "array", "items": ref("Message")}, "has_more": {"type": "boolean"}}
    ),
    "Reactions": obj(
        {
            "message_id": STRING,
            "emoji": STRING,
            "reactions": {"type": "object", "additionalProperties": COUNT},
        }
    ),
    "Poll": obj(
        {
            "poll_id": STRING,
            "message_id": STRING,
            "channel_id": STRING,
            "question": STRING,
            "multiple": {"type": "boolean"},
            "created_by": STRING,
            "created_at": TIMESTAMP,
            "closed": {"type": "boolean"},
            "options": {
                "type": "array",
                "items": obj({"option_id": STRING, "text": STRING, "votes": COUNT}),
            },
            "my_votes": {"type": "array", "items": STRING},
            "seq": {"type": "integer", "minimum": 1},
        },
        ["poll_id", "message_id", "options"],
    ),
    "Upload": obj(
        {
            "upload_id": STRING,
            "size": COUNT,
            "content_type": STRING,
            "sha256": {"type": "string", "pattern": "^[0-9a-f]{64}$"},
            "filename": OPT_STRING,
            "created_at": TIMESTAMP,
        },
        ["upload_id", "size", "content_type", "sha256"],
    ),
    "WebhookCreated": obj(
        {
            "webhook_id": STRING,
            "secret": STRING,
            "url": STRING,
            "events": {"type": "array", "items": STRING},
            "created_at": TIMESTAMP,
        },
        ["webhook_id", "secret"],
    ),
    "WebhookDeliveries": obj(
        {
            "webhook": {"type": "object"},
            "deliveries": {
                "type": "array",
                "items": obj(
                    {
                        "delivery_id": STRING,
                        "event_type": STRING,
                        "status": STRING,
                        "attempts": COUNT,
                    },
                    ["delivery_id", "status"],
                ),
            },
        },
        ["deliveries"],
    ),
    "Export": {
        "type": "object",
        "description": "Everything stored about the caller (served as an attachment): profile, "
        "channels, read state, messages, reactions, votes, polls, uploads (metadata), sessions "
        "(refresh token metadata) and idempotency keys.",
        "properties": {
            "format": {"const": "chatsdk-export/1"},
            "generated_at": TIMESTAMP,
            "app_id": STRING,
            "profile": ref("User"),
            "channels": {"type": "array", "items": {"type": "object"}},
            "messages": {"type": "array", "items": {"type": "object"}},
        },
        "required": ["format", "app_id", "profile", "messages"],
    },
}

HEALTH_CHECKS: Schema = obj(
    {
        "database": {"type": "string", "enum": ["ok", "unavailable"]},
        "redis": {"type": "string", "enum": ["ok", "unavailable"]},
        "migrations": {"type": "string", "enum": ["ok", "pending", "failed"]},
    }
)

RETRY_AFTER = {
    "description": "Whole seconds to wait before retrying.",
    "schema": {"type": "integer", "minimum": 1},
}


def _error(description: str, *, retry_after: bool = False) -> dict[str, Any]:
    out: dict[str, Any] = {
        "description": description,
        "content": {"application/json": {"schema": ref("Error")}},
    }
    if retry_after:
        out["headers"] = {"Retry-After": {"$ref": "#/components/headers/RetryAfter"}}
    return out


ERROR_RESPONSES: dict[str, dict[str, Any]] = {
    "BadRequest": _error("Invalid input; the message names the field."),
    "Unauthorized": _error("Missing or bad credentials."),
    "Forbidden": _error("Authenticated but not allowed."),
    "NotFound": _error("Unknown, or not visible to the caller (other apps, non-members)."),
    "Conflict": _error("The request conflicts with the object's state."),
    "PayloadTooLarge": _error("The body is too large (JSON bodies: 64 KB)."),
    "UnsupportedMediaType": _error("The Content-Type is not accepted here."),
    "IdempotencyKeyReused": _error("The Idempotency-Key was used with a different body."),
    "RateLimited": _error(
        "Rate limited (per user and action), or too many failed authentication attempts (per "
        "client address, or per API key or user).",
        retry_after=True,
    ),
    "Unavailable": _error("A dependency is down, or the worker is draining.", retry_after=True),
}
ERROR_STATUS = {
    "400": "BadRequest",
    "401": "Unauthorized",
    "403": "Forbidden",
    "404": "NotFound",
    "409": "Conflict",
    "413": "PayloadTooLarge",
    "415": "UnsupportedMediaType",
    "422": "IdempotencyKeyReused",
    "429": "RateLimited",
    "503": "Unavailable",
}

SECURITY_SCHEMES: dict[str, Any] = {
    "AdminKey": {
        "type": "apiKey",
        "in": "header",
        "name": "X-Admin-Key",
        "description": "The operator's key (from the environment). Never in a query string.",
    },
    "ApiKey": {
        "type": "apiKey",
        "in": "header",
        "name": "X-API-Key",
        "description": "An app's backend key, shown once at creation, stored as a hash.",
    },
    "BearerAuth": {
        "type": "http",
        "scheme": "bearer",
        "bearerFormat": "JWT",
        "description": "A user's access token (15 min), minted by POST /v1/tokens.",
    },
}
Security = list[dict[str, list[str]]]
ADMIN: Security = [{"AdminKey": []}]
APP: Security = [{"ApiKey": []}]
USER: Security = [{"BearerAuth": []}]
PUBLIC: Security = []

# -- operations -------------------------------------------------------------------------------

PATH_PARAMS: dict[str, Schema] = {
    "app_id": ident(),
    "key_id": ident(),
    "user_id": ident(),
    "channel_id": ident(),
    "message_id": ident(),
    "poll_id": ident(),
    "upload_id": ident(),
    "webhook_id": ident(),
    "emoji": {
        "type": "string",
        "minLength": 1,
        "maxLength": 32,
        "pattern": validation.EMOJI_PATTERN,
    },
}
QUERY_PARAMS: dict[str, dict[str, Any]] = {
    "limit": {"schema": integer(1, 200), "description": "Page size (default 50; channels 100)."},
    "after_seq": {"schema": integer(0), "description": "Messages with a greater seq, ascending."},
    "before_seq": {"schema": integer(1), "description": "The messages just before this seq."},
    "after": {"schema": ident(), "description": "Channels after this channel_id (paging)."},
}
IDEMPOTENCY_KEY = {
    "name": "Idempotency-Key",
    "in": "header",
    "required": False,
    "description": "The same key and body replay the first response; another body is 422.",
    "schema": {"type": "string", "pattern": "^[\\x21-\\x7e]{1,255}$"},
}


def _json(schema: Schema, description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def op(
    op_id: str,
    summary: str,
    security: Security,
    ok: tuple[str, Schema | None, str],
    *,
    request: str | None = None,
    errors: tuple[str, ...] = (),
    query: tuple[str, ...] = (),
    headers: tuple[dict[str, Any], ...] = (),
    extra_ok: dict[str, Any] | None = None,
) -> dict[str, Any]:
    status, schema, description = ok
    responses: dict[str, Any] = {
        status: _json(schema, description) if schema is not None else {"description": description}
    }
    responses.update(extra_ok or {})
    codes = list(errors)
    if security:
        codes += ["401", "429"]  # 429: the throttle of failed authentication
    if request is not None:
        codes += ["400", "413", "415"]
    if security is not PUBLIC or request is not None:
        codes.append("503")
    for code in sorted(set(codes)):
        responses[code] = {"$ref": f"#/components/responses/{ERROR_STATUS[code]}"}
    out: dict[str, Any] = {"operationId": op_id, "summary": summary, "security": security}
    params = [{"$ref": f"#/components/parameters/{name}"} for name in query] + list(headers)
    if params:
        out["parameters"] = params
    if request is not None:
        out["requestBody"] = {
            "required": True,
            "content": {"application/json": {"schema": ref(request)}},
        }
    out["responses"] = responses
    return out


NO_CONTENT = ("204", None, "Done.")
WRITE = ("400", "404", "429")  # a user's write on an object: validation, visibility, rate

PATHS: dict[str, dict[str, Any]] = {
    # Apps and keys (operator)
    "/v1/apps": {
        "post": op(
            "createApp",
            "Create an app; its first API key is shown once.",
            ADMIN,
            ("201", ref("App"), "Created."),
            request="CreateAppRequest",
        )
    },
    "/v1/apps/{app_id}/keys": {
        "post": op(
            "createApiKey",
            "Add an API key to an app; shown once.",
            ADMIN,
            ("201", ref("ApiKey"), "Created."),
            errors=("400", "404"),
        )
    },
    "/v1/apps/{app_id}/keys/{key_id}": {
        "delete": op(
            "revokeApiKey",
            "Revoke an API key at once.",
            ADMIN,
            NO_CONTENT,
            errors=("400", "404"),
        )
    },
    "/v1/admin/runtime": {
        "get": op(
            "getRuntime",
            "What this worker runs with: release, configuration, dependencies (no credentials), "
            "schema version and secret hygiene (length, placeholder; never a value).",
            ADMIN,
            (
                "200",
                obj(
                    {
                        "service": STRING,
                        "version": STRING,
                        "worker_id": STRING,
                        "pid": COUNT,
                        "started_at": {"type": "number"},
                        "uptime_s": {"type": "number"},
                        "python": STRING,
                        "config": {"type": "object"},
                        "dependencies": {"type": "object"},
                        "migrations": {"type": "object"},
                        "secrets": {"type": "object"},
                    }
                ),
                "The worker's runtime.",
            ),
        )
    },
    # Tokens (app backend)
    "/v1/tokens": {
        "post": op(
            "createToken",
            "Mint an access and a refresh token for a user; creates the user if new.",
            APP,
            ("201", ref("TokenPair"), "Created."),
            request="CreateTokenRequest",
            errors=("404",),
        )
    },
    "/v1/tokens/refresh": {
        "post": op(
            "refreshToken",
            "Exchange a refresh token for a new pair; the old refresh token stops working.",
            PUBLIC,
            ("201", ref("TokenPair"), "Created."),
            request="RefreshTokenRequest",
            errors=("401", "429"),
        )
    },
    "/v1/users/{user_id}/revoke": {
        "post": op(
            "revokeUser",
            "Revoke every token of a user, on HTTP and on open sockets (closed with 4401).",
            APP,
            NO_CONTENT,
            errors=("400", "404"),
        )
    },
    # Users
    "/v1/me": {
        "get": op("getMe", "The caller's profile.", USER, ("200", ref("User"), "The profile.")),
        "patch": op(
            "updateMe",
            "Change the caller's name or avatar.",
            USER,
            ("200", ref("User"), "The new profile."),
            request="UpdateMeRequest",
            errors=("429",),
        ),
    },
    "/v1/me/export": {
        "get": op(
            "exportMe",
            "GDPR export: everything stored about the caller.",
            USER,
            ("200", ref("Export"), "The archive."),
            errors=("429",),
        )
    },
    "/v1/users/{user_id}": {
        "get": op(
            "getUser",
            "A user of the caller's app.",
            USER,
            ("200", ref("User"), "The user."),
            errors=("400", "404"),
        ),
        "delete": op(
            "eraseUser",
            "GDPR erasure: profile anonymised, messages tombstoned, uploads deleted, tokens "
            "revoked.",
            APP,
            NO_CONTENT,
            errors=("400", "404"),
        ),
    },
    # Channels
    "/v1/channels": {
        "post": op(
            "createChannel",
            "Create a channel; the caller is its owner. Honours Idempotency-Key. A member_ids "
            "entry that names no user of the caller's app: 409 naming the field.",
            USER,
            ("201", ref("Channel"), "Created (or replayed, with Idempotent-Replayed: true)."),
            request="CreateChannelRequest",
            errors=("409", "422", "429"),
            headers=(IDEMPOTENCY_KEY,),
        ),
        "get": op(
            "listChannels",
            "The caller's channels with unread counts and last_seq.",
            USER,
            ("200", ref("ChannelPage"), "A page of channels."),
            errors=("400",),
            query=("after", "limit"),
        ),
    },
    "/v1/channels/{channel_id}": {
        "get": op(
            "getChannel",
            "A channel the caller is a member of.",
            USER,
            ("200", ref("Channel"), "The channel."),
            errors=("400", "404"),
        ),
        "patch": op(
            "updateChannel",
            "Rename a channel (owner only).",
            USER,
            ("200", ref("Channel"), "The channel."),
            request="UpdateChannelRequest",
            errors=("403", *WRITE),
        ),
        "delete": op(
            "deleteChannel",
            "Delete a channel (owner only).",
            USER,
            NO_CONTENT,
            errors=("403", *WRITE),
        ),
    },
    "/v1/channels/{channel_id}/members": {
        "post": op(
            "addMembers",
            "Add members (public: any member; private: the owner; direct: never). A user_ids "
            "entry that names no user of the caller's app: 409 naming the field.",
            USER,
            ("200", ref("MembersAdded"), "The ids actually added."),
            request="AddMembersRequest",
            errors=("403", "409", *WRITE),
        )
    },
    "/v1/channels/{channel_id}/members/{user_id}": {
        "delete": op(
            "removeMember",
            "Leave a channel, or remove a member (owner only).",
            USER,
            NO_CONTENT,
            errors=("403", "409", *WRITE),
        )
    },
    "/v1/channels/{channel_id}/read": {
        "post": op(
            "markRead",
            "Move the caller's read position forward; a seq past the channel's last_seq marks "
            "everything read.",
            USER,
            ("200", ref("ReadState"), "The read state."),
            request="MarkReadRequest",
            errors=WRITE,
        )
    },
    # Messages
    "/v1/channels/{channel_id}/messages": {
        "post": op(
            "sendMessage",
            "Send a message; a repeated client_msg_id returns the original (200). A parent_id "
            "or upload_ids naming nothing the sender may reference: 409 naming the field.",
            USER,
            ("201", ref("Message"), "Created."),
            request="SendMessageRequest",
            errors=("409", *WRITE),
            extra_ok={"200": _json(ref("Message"), "The original message (same client_msg_id).")},
        ),
        "get": op(
            "listMessages",
            "History by seq (never by offset).",
            USER,
            ("200", ref("MessagePage"), "A page in ascending seq."),
            errors=("400", "404"),
            query=("after_seq", "before_seq", "limit"),
        ),
    },
    "/v1/channels/{channel_id}/messages/{message_id}": {
        "patch": op(
            "editMessage",
            "Edit a message (author only).",
            USER,
            ("200", ref("Message"), "The message."),
            request="EditMessageRequest",
            errors=("403", "409", *WRITE),
        ),
        "delete": op(
            "deleteMessage",
            "Tombstone a message (author or channel owner).",
            USER,
            NO_CONTENT,
            errors=("403", *WRITE),
        ),
    },
    "/v1/channels/{channel_id}/messages/{message_id}/replies": {
        "get": op(
            "listReplies",
            "A message's thread.",
            USER,
            ("200", ref("MessagePage"), "A page of replies in ascending seq."),
            errors=("400", "404"),
            query=("after_seq", "limit"),
        )
    },
    "/v1/channels/{channel_id}/messages/{message_id}/reactions/{emoji}": {
        "put": op(
            "addReaction",
            "React to a message (idempotent).",
            USER,
            ("200", ref("Reactions"), "The message's reaction counts."),
            errors=("409", *WRITE),
        ),
        "delete": op(
            "removeReaction",
            "Remove the caller's reaction.",
            USER,
            NO_CONTENT,
            errors=WRITE,
        ),
    },
    # Polls
    "/v1/channels/{channel_id}/polls": {
        "post": op(
            "createPoll",
            "Create a poll (a message of kind poll).",
            USER,
            ("201", ref("Poll"), "Created."),
            request="CreatePollRequest",
            errors=WRITE,
        )
    },
    "/v1/polls/{poll_id}": {
        "get": op(
            "getPoll",
            "A poll with vote counts per option.",
            USER,
            ("200", ref("Poll"), "The poll."),
            errors=("400", "404"),
        )
    },
    "/v1/polls/{poll_id}/votes": {
        "post": op(
            "vote",
            "Vote (replaces the caller's earlier vote). An option_ids entry naming no option of "
            "this poll: 409 naming the field.",
            USER,
            ("200", ref("Poll"), "The poll with its new counts."),
            request="VoteRequest",
            errors=("409", *WRITE),
        )
    },
    # Uploads
    "/v1/uploads": {
        "post": {
            **op(
                "createUpload",
                "Upload a file: a raw body with any Content-Type but multipart (stored as sent), "
                "or multipart with the one field `file`; an empty one is refused (400 "
                "empty_upload). The stored type is sniffed from the "
                "content. Over 100 MB: 413 from the edge.",
                USER,
                ("201", ref("Upload"), "Stored."),
                errors=("400", "413", "415", "429", "503"),
            ),
            "requestBody": {
                "required": True,
                "content": {
                    "application/octet-stream": {
                        "schema": {
                            "type": "string",
                            "contentMediaType": "application/octet-stream",
                            "minLength": 1,
                        }
                    },
                    "multipart/form-data": {
                        "schema": {
                            "type": "object",
                            "properties": {
                                "file": {"type": "string", "format": "binary", "minLength": 1}
                            },
                            "required": ["file"],
                            # The file is the one part: any other is refused (400).
                            "additionalProperties": False,
                        }
                    },
                    # Any other type is stored as sent, like these two (said in the summary).
                    # Not declared as */*: a generator then picks any encoding for it, JSON (a
                    # JSON "" is two bytes, not empty) or multipart around a bare string, and
                    # the document would promise what the body's bytes cannot show.
                    "text/plain": {"schema": {"type": "string", "minLength": 1}},
                },
            },
        }
    },
    "/v1/uploads/{upload_id}": {
        "get": op(
            "downloadUpload",
            "The bytes, to the uploader and members of channels where it was attached; "
            "served as an attachment with nosniff.",
            USER,
            ("200", None, "The bytes."),
            errors=("400", "404"),
        )
    },
    # Webhooks (app backend)
    "/v1/webhooks": {
        "post": op(
            "createWebhook",
            "Register a webhook; its signing secret is shown once. Deliveries carry "
            "X-ChatSDK-Signature: sha256=<hex HMAC-SHA256 of the body>.",
            APP,
            ("201", ref("WebhookCreated"), "Created."),
            request="CreateWebhookRequest",
            errors=("409",),
        )
    },
    "/v1/webhooks/{webhook_id}/deliveries": {
        "get": op(
            "listWebhookDeliveries",
            "The webhook's delivery log, newest first.",
            APP,
            ("200", ref("WebhookDeliveries"), "The log."),
            errors=("400", "404"),
            query=("limit",),
        )
    },
    # Service
    "/v1/health/live": {
        "get": op(
            "getLive",
            "The process is up.",
            PUBLIC,
            ("200", obj({"status": {"const": "live"}}), "Live."),
        )
    },
    "/v1/health/ready": {
        "get": {
            "operationId": "getReady",
            "summary": "Database, Redis and migrations ok; not draining.",
            "security": PUBLIC,
            "responses": {
                "200": _json(
                    obj({"status": {"const": "ready"}, "checks": HEALTH_CHECKS}), "Ready."
                ),
                "503": {
                    **_json(
                        obj(
                            {
                                "status": {"enum": ["not_ready", "draining"]},
                                "checks": HEALTH_CHECKS,
                                "error": ref("ErrorDetail"),
                            }
                        ),
                        "Not ready, or draining; the failing check is named.",
                    ),
                    "headers": {"Retry-After": {"$ref": "#/components/headers/RetryAfter"}},
                },
            },
        }
    },
    "/v1/openapi.json": {
        "get": op(
            "getOpenAPI",
            "This document.",
            PUBLIC,
            ("200", {"type": "object"}, "The OpenAPI document."),
        )
    },
    **status.OPENAPI_PATHS,
}


# Routes the app serves that are not plain public HTTP operations, so not in this document (a
# client generated from it, or a fuzzer run against it, must not meet them); API.md describes
# each.
UNDOCUMENTED: dict[str, str] = {
    "/v1/realtime": "the WebSocket: a plain GET answers 426; OpenAPI cannot describe the upgrade",
    "/metrics": "internal: Prometheus scrapes the workers directly, the edge never serves it",
    "/v1/admin/debug/error": "the operator's error-tracking check: answers 500 on purpose",
}


def _with_path_parameters(paths: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    out = {}
    for path, item in paths.items():
        names = [seg[1:-1] for seg in path.split("/") if seg.startswith("{")]
        params = [{"$ref": f"#/components/parameters/path_{n}"} for n in names]
        out[path] = {"parameters": params, **item} if params else item
    return out


def openapi_document() -> dict[str, Any]:
    parameters: dict[str, Any] = {
        f"path_{name}": {"name": name, "in": "path", "required": True, "schema": schema}
        for name, schema in PATH_PARAMS.items()
    }
    parameters.update(
        {
            name: {"name": name, "in": "query", "required": False, **spec}
            for name, spec in QUERY_PARAMS.items()
        }
    )
    return copy.deepcopy(
        {
            "openapi": "3.1.0",
            "info": {
                "title": "chatsdk",
                "version": __version__,
                "description": (
                    "The chat API (see API.md). JSON in and out, UTF-8; every error is "
                    "{error: {code, message, request_id}}; every response carries X-Request-ID. "
                    "Credentials are never accepted in a query string (400). The realtime "
                    "WebSocket (GET /v1/realtime) is described in API.md."
                ),
            },
            "servers": [{"url": "/"}],
            "security": USER,
            "paths": _with_path_parameters(PATHS),
            "components": {
                "schemas": SCHEMAS,
                "responses": ERROR_RESPONSES,
                "parameters": parameters,
                "headers": {"RetryAfter": RETRY_AFTER},
                "securitySchemes": SECURITY_SCHEMES,
            },
        }
    )
