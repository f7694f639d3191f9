"""What a probe saw, as small JSON entries (see preflight/outcomes.py), with secrets redacted
before anything is stored."""

from __future__ import annotations

import base64
import math
import re
from collections.abc import Callable, Iterable, Mapping
from typing import Any
from urllib.parse import quote, unquote, urlsplit

from preflight.client import Response
from preflight.outcomes import Evidence as Entry

REDACTED = "[redacted]"
BODY_LIMIT = 2048  # characters of a body kept in a request entry
NOTE_LIMIT = 4096
ATTACHMENT_LIMIT = 256 * 1024
SCAN_LIMIT = 64 * 1024  # redaction looks at this much of a body before the excerpt is cut
MAX_ENTRIES = 200
# Images (screenshots) are kept whole or refused: a cut image is a broken one. Magic bytes by
# media type, so an attachment is what it claims to be before it reaches the report.
IMAGE_MAGIC = {
    "image/png": b"\x89PNG\r\n\x1a\n",
    "image/jpeg": b"\xff\xd8\xff",
    "image/gif": b"GIF8",
    "image/webp": b"RIFF",
}
# Shorter secrets are not replaced inside text: a 2-character password would shred every
# entry, and such a password is a finding for SEC-PASSWORDS-STRONG, not something to hide.
MIN_SECRET_LENGTH = 4

# Header names whose values are credentials, and parameter or field names that carry them.
SECRET_HEADERS = frozenset(
    {"authorization", "proxy-authorization", "cookie", "set-cookie", "x-api-key", "x-admin-key"}
)
# A header, query parameter or JSON field whose name ends in one of these words holds a secret
# (`api_key`, `X-Admin-Key`, `access_token`, `client_secret`; not `key_id` or `token_type`).
_SECRET_NAME = re.compile(
    r"(?i)(?:^|[_.-])(?:access[_-]?token|refresh[_-]?token|token|secret|password|passwd|pwd"
    r"|api[_-]?key|apikey|admin[_-]?key|private[_-]?key|key|signature|sig|credentials?"
    r"|cookie|authorization)$"
)
_JWT = re.compile(r"eyJ[A-Za-z0-9_-]{4,}(?:\.[A-Za-z0-9_-]*){0,2}")
_USERINFO = re.compile(r"(?P<head>[a-zA-Z][a-zA-Z0-9+.-]*://[^/\s:@]*:)[^/\s@]+(?P<tail>@)")
_QUERY_PARAM = re.compile(r"(?P<head>[?&;](?P<name>[\w.-]+)=)(?P<value>[^&#\s\"'<>]*)")
_JSON_FIELD = re.compile(
    r'(?P<head>"(?P<name>[\w.-]+)"\s*:\s*")(?P<value>(?:[^"\\]|\\.)*)(?P<tail>")'
)
_HEADER_LINE = re.compile(
    r"(?im)^(?P<head>(?:proxy-)?authorization|cookie|set-cookie|x-api-key|x-admin-key)"
    r"(?P<sep>\s*:\s*).*$"
)
_AUTH_SCHEME = re.compile(r"(?i)\b(?P<head>bearer|basic)\s+[A-Za-z0-9._~+/=-]{4,}")


def is_secret_name(name: str) -> bool:
    return name.lower() in SECRET_HEADERS or _SECRET_NAME.search(name) is not None


def _redact_named(match: re.Match[str]) -> str:
    if not match["value"] or not is_secret_name(match["name"]):
        return match[0]
    tail = match.groupdict().get("tail") or ""
    return f"{match['head']}{REDACTED}{tail}"


def secrets_of_url(url: str | None) -> list[str]:
    """The password in a DSN or URL (`postgresql://user:pw@host/db`), raw and decoded."""
    if not url:
        return []
    password = urlsplit(url).password
    if not password:
        return []
    return [password, unquote(password)]


class Redactor:
    """Replaces known secrets and anything that looks like a credential with `[redacted]`."""

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        self._secrets: set[str] = set()
        self.add(*secrets)

    def add(self, *secrets: str) -> None:
        for secret in secrets:
            if len(secret) >= MIN_SECRET_LENGTH:
                self._secrets |= {secret, quote(secret, safe=""), quote(secret)}

    def text(self, text: str) -> str:
        # Longest first, so a secret that contains another is replaced whole.
        for secret in sorted(self._secrets, key=len, reverse=True):
            text = text.replace(secret, REDACTED)
        text = _JWT.sub(REDACTED, text)
        text = _USERINFO.sub(rf"\g<head>{REDACTED}\g<tail>", text)
        text = _QUERY_PARAM.sub(_redact_named, text)
        text = _JSON_FIELD.sub(_redact_named, text)
        text = _HEADER_LINE.sub(rf"\g<head>\g<sep>{REDACTED}", text)
        return _AUTH_SCHEME.sub(rf"\g<head> {REDACTED}", text)

    def headers(self, headers: Mapping[str, str]) -> dict[str, str]:
        return {
            str(name): REDACTED if is_secret_name(str(name)) else self.text(str(value))
            for name, value in headers.items()
        }

    def value(self, value: Any) -> Any:
        """Strings, and strings inside lists and mappings (by key name too), redacted."""
        if isinstance(value, str):
            return self.text(value)
        if isinstance(value, Mapping):
            return {
                str(k): REDACTED
                if is_secret_name(str(k)) and isinstance(v, str | int)
                else self.value(v)
                for k, v in value.items()
            }
        if isinstance(value, list | tuple):
            return [self.value(v) for v in value]
        return value

    def binary(self, data: bytes) -> bytes:
        for secret in sorted(self._secrets, key=len, reverse=True):
            data = data.replace(secret.encode(), REDACTED.encode())
        return data


def _excerpt(redactor: Redactor, body: str | bytes | None, limit: int) -> tuple[str, int]:
    """A redacted excerpt of at most `limit` characters, and the body's full size."""
    if body is None:
        return "", 0
    size = len(body)
    raw = body[:SCAN_LIMIT]
    text = raw.decode("utf-8", errors="replace") if isinstance(raw, bytes) else raw
    text = redactor.text(text)  # before cutting: a secret cut in half would leak its prefix
    if len(text) > limit or size > len(raw):
        text = text[:limit] + f"... [{size} bytes in all]"
    return text, size


class EvidenceLog:
    """The evidence one probe records (the `evidence` fixture)."""

    def __init__(
        self, redactor: Redactor, base_url: Callable[[], str | None] = lambda: None
    ) -> None:
        self._redactor = redactor
        self._base_url = base_url
        self.entries: list[Entry] = []
        self.dropped = 0

    def _add(self, entry: Entry) -> Entry:
        if len(self.entries) >= MAX_ENTRIES:
            self.dropped += 1
            return entry
        self.entries.append(entry)
        return entry

    def snapshot(self) -> tuple[Entry, ...]:
        if not self.dropped:
            return tuple(self.entries)
        more = {"kind": "note", "text": f"{self.dropped} more entries were not kept"}
        return (*self.entries, more)

    def request(self, response: Response | Mapping[str, Any] | None = None, **fields: Any) -> Entry:
        """A request/response summary: from a client Response, from a mapping, or from keywords
        (method, url, status, headers, body, request_headers, request_body, elapsed_ms)."""
        data: dict[str, Any] = {}
        if isinstance(response, Response):
            base = self._base_url() or ""
            url = response.path if "://" in response.path else base + response.path
            data = {
                "method": response.method,
                "url": url,
                "status": response.status,
                "headers": dict(response.headers),
                "body": response.body,
            }
        elif response is not None:
            data = dict(response)
        data.update(fields)
        missing = [name for name in ("method", "url") if not data.get(name)]
        if missing:
            raise TypeError(f"evidence.request needs {' and '.join(missing)} (got {sorted(data)})")
        entry: Entry = {"kind": "request"}
        for key, value in data.items():
            if key in ("headers", "request_headers"):
                entry[key] = self._redactor.headers(value or {})
            elif key in ("body", "request_body"):
                entry[key], entry[f"{key}_bytes"] = _excerpt(self._redactor, value, BODY_LIMIT)
            elif key == "status" and value is not None:
                entry[key] = int(value)
            else:
                entry[key] = self._redactor.value(value)
        return self._add(entry)

    def figure(self, name: str, value: float, unit: str = "") -> Entry:
        if (
            isinstance(value, bool)
            or not isinstance(value, int | float)
            or not math.isfinite(value)
        ):
            raise TypeError(f"evidence figure {name!r} must be a finite number (got {value!r})")
        return self._add({"kind": "figure", "name": name, "value": value, "unit": unit})

    def note(self, text: str) -> Entry:
        excerpt, _ = _excerpt(self._redactor, text, NOTE_LIMIT)
        return self._add({"kind": "note", "text": excerpt})

    def attach(self, name: str, content: str | bytes, media_type: str = "text/plain") -> Entry:
        """A file as evidence: text (redacted, cut at ATTACHMENT_LIMIT), binary (base64), or an
        image (PNG, JPEG, GIF, WebP: base64, whole, shown inline in the report)."""
        entry: Entry = {"kind": "attachment", "name": name, "media_type": media_type}
        magic = IMAGE_MAGIC.get(media_type.split(";", maxsplit=1)[0].strip().lower())
        if magic is not None:
            return self._add({**entry, **_image(name, content, media_type, magic)})
        text = content
        if isinstance(content, bytes):
            try:
                text = content.decode("utf-8")
            except UnicodeDecodeError:
                data = self._redactor.binary(content)[:ATTACHMENT_LIMIT]
                entry["encoding"] = "base64"
                entry["content"] = base64.b64encode(data).decode()
                return self._add(entry)
        entry["encoding"] = "text"
        entry["content"], _ = _excerpt(self._redactor, text, ATTACHMENT_LIMIT)
        return self._add(entry)


def _image(name: str, content: str | bytes, media_type: str, magic: bytes) -> Entry:
    if not isinstance(content, bytes) or not content.startswith(magic):
        raise ValueError(
            f"attachment {name!r} is not a {media_type} image (its bytes say otherwise)"
        )
    if len(content) > ATTACHMENT_LIMIT:
        raise ValueError(
            f"image {name!r} has {len(content)} bytes, over the {ATTACHMENT_LIMIT} byte limit of "
            "an attachment; downscale it or lower its JPEG quality (a cut image is unreadable)"
        )
    return {"encoding": "base64", "content": base64.b64encode(content).decode()}
