"""Request input: JSON bodies read with limits, then checked field by field against a small
declarative spec. Unknown fields are refused (never stored), every error names the field."""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from aiohttp import web

from chatsdk import faults
from chatsdk.errors import ApiError, bad_request

MAX_JSON_BYTES = 64 * 1024
MAX_JSON_DEPTH = 16
ID_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.:@-]{0,127}")
# A reaction: an emoji or a short name ("thumbs_up", ":+1:", "merci", "спасибо"), 1 to 32
# characters. ASCII is limited to letters, digits and _+-: (never markup, quotes or path syntax);
# beyond ASCII any character counts except controls, spaces, and the invisible formatting and
# direction marks that could disguise one name as another (the zero-width joiner U+200D that
# emoji sequences need stays). The OpenAPI document publishes this same pattern.
EMOJI_PATTERN = (
    r"^(?:[A-Za-z0-9_+:-]|[^\x00-\xa0\xad\u1680\u180e\u2000-\u200c\u200e-\u202f"
    r"\u205f-\u206f\u3000\ufeff])+$"
)
EMOJI = re.compile(EMOJI_PATTERN)


async def read_json(request: web.Request, max_bytes: int = MAX_JSON_BYTES) -> dict[str, Any]:
    """The body as a JSON object, or the contract's 400/413/415."""
    if request.content_type != "application/json":
        raise ApiError(
            415,
            "unsupported_media_type",
            f"Content-Type must be application/json (got {request.content_type or 'none'}).",
        )
    if request.content_length is not None and request.content_length > max_bytes:
        raise ApiError(
            413, "payload_too_large", f"The JSON body must be at most {max_bytes} bytes."
        )
    # StreamReader.read(n) returns what has arrived so far (up to n), not n bytes: keep reading
    # until EOF or past the limit, or a body larger than one chunk arrives truncated.
    raw = b""
    while len(raw) <= max_bytes:
        chunk = await request.content.read(max_bytes + 1 - len(raw))
        if not chunk:
            break
        raw += chunk
    if len(raw) > max_bytes:
        raise ApiError(
            413, "payload_too_large", f"The JSON body must be at most {max_bytes} bytes."
        )
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise bad_request("The body is not valid UTF-8.", "invalid_json") from None
    # The depth guard runs on the raw text first: json.loads recurses and would raise
    # RecursionError on a deeply nested body before we could look at the result.
    if _bracket_depth(text) > MAX_JSON_DEPTH:
        raise bad_request(
            f"The JSON body nests deeper than {MAX_JSON_DEPTH} levels.", "invalid_json"
        )
    try:
        body = json.loads(text)
    except json.JSONDecodeError as exc:
        raise bad_request(f"The body is not valid JSON ({exc.msg}).", "invalid_json") from None
    except ValueError:  # e.g. an integer literal past Python's digit limit
        raise bad_request("The body is not valid JSON.", "invalid_json") from None
    if not isinstance(body, dict):
        raise bad_request("The JSON body must be an object.", "invalid_json")
    try:
        # JSON may spell lone UTF-16 surrogates ("\ud800"); they are not text and PostgreSQL
        # cannot store them, so they are refused here rather than failing deep in a query.
        json.dumps(body, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError:
        raise bad_request("The JSON body contains invalid Unicode (lone surrogates).") from None
    return body


def _bracket_depth(text: str) -> int:
    depth = deepest = 0
    in_string = escaped = False
    for ch in text:
        if in_string:
            if escaped:
                escaped = False
            elif ch == "\\":
                escaped = True
            elif ch == '"':
                in_string = False
        elif ch == '"':
            in_string = True
        elif ch in "[{":
            depth += 1
            deepest = max(deepest, depth)
        elif ch in "]}":
            depth -= 1
    return deepest


Check = Callable[[str, Any], Any]


@dataclass(frozen=True)
class Field:
    check: Check
    required: bool = True


def string(min_len: int = 1, max_len: int = 200, pattern: re.Pattern[str] | None = None) -> Check:
    def check(name: str, value: Any) -> str:
        if not isinstance(value, str):
            raise bad_request(f"Field {name} must be a string.")
        if not min_len <= len(value) <= max_len:
            raise bad_request(f"Field {name} must be {min_len} to {max_len} characters long.")
        if "\x00" in value:
            raise bad_request(f"Field {name} must not contain NUL characters.")
        if pattern is not None and not pattern.fullmatch(value):
            raise bad_request(f"Field {name} has characters that are not allowed.")
        return value

    return check


def identifier() -> Check:
    return string(1, 128, ID_PATTERN)


def integer(minimum: int = 0, maximum: int = 2**62) -> Check:
    def check(name: str, value: Any) -> int:
        # JSON has one number type: 5.0 is the integer 5 (JSON Schema says so too), 5.5 is not.
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        if isinstance(value, bool) or not isinstance(value, int):
            raise bad_request(f"Field {name} must be an integer.")
        if not minimum <= value <= maximum:
            raise bad_request(f"Field {name} must be between {minimum} and {maximum}.")
        return value

    return check


def boolean() -> Check:
    def check(name: str, value: Any) -> bool:
        if not isinstance(value, bool):
            raise bad_request(f"Field {name} must be true or false.")
        return value

    return check


def one_of(*choices: str) -> Check:
    def check(name: str, value: Any) -> str:
        if value not in choices:
            raise bad_request(f"Field {name} must be one of {', '.join(choices)}.")
        return str(value)

    return check


def list_of(item: Check, min_items: int = 0, max_items: int = 100, unique: bool = True) -> Check:
    def check(name: str, value: Any) -> list[Any]:
        if not isinstance(value, list):
            raise bad_request(f"Field {name} must be a list.")
        if not min_items <= len(value) <= max_items:
            raise bad_request(f"Field {name} must have {min_items} to {max_items} items.")
        items = [item(f"{name}[{i}]", v) for i, v in enumerate(value)]
        if unique and len(set(map(repr, items))) != len(items):
            raise bad_request(f"Field {name} must not repeat items.")
        return items

    return check


# An absolute URI of RFC 3986: ASCII only (an IRI's other characters are percent-encoded), a
# host, and nothing outside the URI character set; the OpenAPI document's `uri` fields say so.
URI_PATTERN = (
    r"://(?:[A-Za-z0-9\-._~!$&'()*+,;=:@]|%[0-9A-Fa-f]{2})+"
    r"(?:[/?#](?:[A-Za-z0-9\-._~!$&'()*+,;=:@/?]|%[0-9A-Fa-f]{2})*)?"
)


def uri_pattern(schemes: tuple[str, ...]) -> str:
    return f"^(?:{'|'.join(schemes)}){URI_PATTERN}$"


def url(max_len: int = 2000, schemes: tuple[str, ...] = ("https", "http")) -> Check:
    base = string(1, max_len)
    pattern = re.compile(uri_pattern(schemes))

    def check(name: str, value: Any) -> str:
        text: str = base(name, value)
        try:
            parts = urlsplit(text)
            valid = bool(pattern.fullmatch(text)) and bool(parts.hostname)
            parts.port  # noqa: B018 - raises ValueError on a port that is not a number
        except ValueError:
            valid = False
        if not valid:
            raise bad_request(f"Field {name} must be an {' or '.join(schemes)} URL.")
        return text

    return check


def validate(body: Mapping[str, Any], spec: Mapping[str, Field]) -> dict[str, Any]:
    """Check `body` against `spec`; unknown fields are an error, never silently stored."""
    unknown = sorted(set(body) - set(spec))
    if unknown and not faults.injected(faults.LENIENT_BODIES):  # test-only (chatsdk/faults.py)
        raise bad_request(f"Unknown field {unknown[0]}.", "unknown_field")
    out: dict[str, Any] = {}
    for name, field in spec.items():
        if name not in body or body[name] is None:
            if field.required:
                raise bad_request(f"Field {name} is required.")
            continue
        out[name] = field.check(name, body[name])
    return out


async def read_body(request: web.Request, spec: Mapping[str, Field]) -> dict[str, Any]:
    return validate(await read_json(request), spec)


def path_id(request: web.Request, name: str) -> str:
    value = str(request.match_info[name])
    if not ID_PATTERN.fullmatch(value):
        raise bad_request(f"Path parameter {name} is not a valid id.")
    return value


def query_int(request: web.Request, name: str, default: int | None, lo: int, hi: int) -> int | None:
    raw = request.query.get(name)
    if raw is None:
        return default
    # 19 digits hold every bound in use (seqs go up to 2**62); the range check does the rest.
    if not raw.isdigit() or len(raw) > 19:
        raise bad_request(f"Query parameter {name} must be a non-negative integer.")
    value = int(raw)
    if not lo <= value <= hi:
        raise bad_request(f"Query parameter {name} must be between {lo} and {hi}.")
    return value
