"""Uploads: bytes streamed into storage, typed by their content, served only to those allowed.

- The type is sniffed from the bytes (a small allowlist); the client's Content-Type and filename
  are never trusted. Markup (HTML, SVG, XML, scripts) is never labelled as an image or as text:
  it is application/octet-stream. Everything is served as an attachment, with nosniff and a
  sandboxing CSP, so no upload ever renders in the API's origin.
- The storage key is generated; the original filename is kept only as data, sanitised.
- Visible to the uploader, and to members of a live channel where a live message attached it.
- Deleted uploads (erasure) are purged from storage after the commit; `purged_at` records
  success, and a sweeper finishes what a crash or a storage outage left behind.
"""

from __future__ import annotations

import asyncio
import base64
import codecs
import contextlib
import logging
import random
import re
import unicodedata
from collections.abc import AsyncIterable, AsyncIterator
from typing import Any
from urllib.parse import quote

import asyncpg
from aiohttp import BodyPartReader, MultipartReader, web
from aiohttp.http_exceptions import HttpProcessingError

from chatsdk import db, ratelimit
from chatsdk.auth import require_user
from chatsdk.background import stop_task
from chatsdk.errors import ApiError, bad_request, not_found, unavailable
from chatsdk.ids import new_id
from chatsdk.keys import SETTINGS
from chatsdk.storage import (
    STORAGE,
    Storage,
    StorageError,
    StoredObjectMissing,
    storage_from_settings,
)
from chatsdk.validation import path_id

log = logging.getLogger("chatsdk.uploads")

routes = web.RouteTableDef()

# The edge's client_max_body_size is 100m (MiB); the API enforces the same cap on the bytes it
# actually receives (a body may be chunked, or decompressed by aiohttp).
MAX_UPLOAD_BYTES = 100 * 1024 * 1024
RECEIVE_CHUNK = 64 * 1024
SNIFF_BYTES = 4096
MAX_FILENAME_CHARS = 255
PURGE_INTERVAL = 30.0
PURGE_BATCH = 20

IMAGE_TYPES = ("image/png", "image/jpeg", "image/gif", "image/webp")
EXTENSIONS = {
    "image/png": "png",
    "image/jpeg": "jpg",
    "image/gif": "gif",
    "image/webp": "webp",
    "application/pdf": "pdf",
    "application/zip": "zip",
    "text/plain": "txt",
    "application/octet-stream": "bin",
}
# Anything that looks like a tag (or a comment, doctype, processing instruction) near the start
# makes a text file "markup": browsers' sniffers look at the first bytes the same way.
MARKUP = re.compile(rb"<\s*[!?/A-Za-z]")
# C0 controls other than tab, LF, FF, CR and ESC do not occur in text files.
BINARY_CONTROLS = re.compile(rb"[\x00-\x08\x0b\x0e-\x1a\x1c-\x1f\x7f]")

VISIBLE_SQL = """
SELECT u.id, u.size, u.content_type, u.sha256, u.storage_key, u.filename
FROM uploads u
WHERE u.id = $1 AND u.app_id = $2 AND u.deleted_at IS NULL
  AND (u.user_id = $3 OR EXISTS (
        SELECT 1 FROM message_uploads mu
        JOIN messages m ON m.id = mu.message_id
        JOIN channels c ON c.id = m.channel_id
        JOIN channel_members cm ON cm.channel_id = m.channel_id AND cm.user_id = $3
        WHERE mu.upload_id = u.id AND m.app_id = $2 AND m.deleted_at IS NULL
          AND c.app_id = $2 AND c.deleted_at IS NULL AND cm.app_id = $2))
"""


# What aiohttp's multipart reader raises on a malformed body (a part with unparsable headers
# raises InvalidHeader, an HttpProcessingError): invalid input, never a 500.
MULTIPART_ERRORS = (ValueError, AssertionError, RuntimeError, HttpProcessingError)


def too_large() -> ApiError:
    return ApiError(
        413, "payload_too_large", f"An upload must be at most {MAX_UPLOAD_BYTES} bytes."
    )


class Sniffer:
    """Collects the first bytes and checks UTF-8 validity while the stream passes through."""

    def __init__(self) -> None:
        self.head = bytearray()
        self.size = 0
        self._utf8: Any = codecs.getincrementaldecoder("utf-8")()
        self.maybe_text = True

    def feed(self, chunk: bytes) -> None:
        self.size += len(chunk)
        if len(self.head) < SNIFF_BYTES:
            self.head += chunk[: SNIFF_BYTES - len(self.head)]
        if self.maybe_text:
            if b"\x00" in chunk:
                self.maybe_text = False
                return
            try:
                self._utf8.decode(chunk)
            except UnicodeDecodeError:
                self.maybe_text = False

    def content_type(self) -> str:
        if self.maybe_text:
            try:
                self._utf8.decode(b"", final=True)
            except UnicodeDecodeError:
                self.maybe_text = False
        return sniff(bytes(self.head), self.maybe_text)


# (offset, magic bytes, type): the formats we recognise; everything else is octet-stream.
SIGNATURES = (
    (0, b"\x89PNG\r\n\x1a\n", "image/png"),
    (0, b"\xff\xd8\xff", "image/jpeg"),
    (0, b"GIF87a", "image/gif"),
    (0, b"GIF89a", "image/gif"),
    (8, b"WEBP", "image/webp"),  # after "RIFF" and a length, checked below
    (0, b"%PDF-", "application/pdf"),
    (0, b"PK\x03\x04", "application/zip"),
    (0, b"PK\x05\x06", "application/zip"),
    (0, b"PK\x07\x08", "application/zip"),
)


def sniff(head: bytes, valid_utf8: bool) -> str:
    for offset, magic, content_type in SIGNATURES:
        if head[offset : offset + len(magic)] == magic and (offset == 0 or head[:4] == b"RIFF"):
            return content_type
    if valid_utf8 and not BINARY_CONTROLS.search(head) and not MARKUP.search(head):
        return "text/plain"
    return "application/octet-stream"


def sanitise_filename(raw: str | None) -> str | None:
    """The last path segment, NFC, without control or format characters, at most 255 chars; a
    label for humans only, never a path."""
    if raw is None:
        return None
    name = unicodedata.normalize("NFC", raw)
    name = re.split(r"[/\\]", name)[-1]
    name = "".join(c for c in name if unicodedata.category(c)[0] not in {"C", "Z"} or c == " ")
    name = name.strip().lstrip(".").strip()
    if len(name) > MAX_FILENAME_CHARS:
        stem, dot, ext = name.rpartition(".")
        if dot and 0 < len(ext) <= 16 and stem:
            name = stem[: MAX_FILENAME_CHARS - len(ext) - 1] + "." + ext
        else:
            name = name[:MAX_FILENAME_CHARS]
    return name or None


async def _capped(source: AsyncIterable[bytes], sniffer: Sniffer) -> AsyncIterator[bytes]:
    async for chunk in source:
        if not chunk:
            continue
        sniffer.feed(chunk)
        if sniffer.size > MAX_UPLOAD_BYTES:
            raise too_large()
        yield chunk


async def _part_chunks(part: BodyPartReader) -> AsyncIterator[bytes]:
    while chunk := await part.read_chunk(RECEIVE_CHUNK):
        yield chunk


def upload_json(row: Any) -> dict[str, Any]:
    return {
        "upload_id": row["id"],
        "size": row["size"],
        "content_type": row["content_type"],
        "sha256": row["sha256"],
        "filename": row["filename"],
        "created_at": row["created_at"].isoformat(),
    }


def _bad_multipart() -> ApiError:
    return bad_request(
        "A multipart upload must have exactly one part, the file (form field name 'file').",
        "invalid_multipart",
    )


async def _incoming(
    request: web.Request,
) -> tuple[AsyncIterable[bytes], str | None, MultipartReader | None]:
    """The bytes to store, the sanitised original filename, and the multipart reader if any."""
    if request.content_type != "multipart/form-data":
        # A raw body: the optional original name comes as ?filename=.
        filename = sanitise_filename(request.query.get("filename"))
        return request.content.iter_chunked(RECEIVE_CHUNK), filename, None
    try:
        reader = await request.multipart()
        part = await reader.next()
    except MULTIPART_ERRORS:
        raise _bad_multipart() from None
    if not isinstance(part, BodyPartReader) or (part.name != "file" and not part.filename):
        raise _bad_multipart()
    encoding = part.headers.get("Content-Transfer-Encoding", "binary").lower()
    if encoding not in {"binary", "8bit", "7bit"}:
        raise ApiError(415, "unsupported_media_type", "Content-Transfer-Encoding is not supported.")
    return _part_chunks(part), sanitise_filename(part.filename), reader


async def _no_more_parts(reader: MultipartReader | None) -> None:
    if reader is None:
        return
    try:
        extra = await reader.next()
    except MULTIPART_ERRORS:
        raise _bad_multipart() from None
    if extra is not None:
        raise _bad_multipart()


@routes.post("/v1/uploads")
async def create_upload(request: web.Request) -> web.Response:
    user = await require_user(request)
    await ratelimit.limit(request, user, "upload")
    if request.content_length is not None and request.content_length > MAX_UPLOAD_BYTES:
        raise too_large()
    storage = request.app[STORAGE]
    source, filename, reader = await _incoming(request)
    sniffer = Sniffer()
    try:
        stored = await storage.put(_capped(source, sniffer))
    except StorageError:
        log.warning("upload storage failed", exc_info=True)
        raise unavailable("Upload storage") from None
    except (ValueError, HttpProcessingError):  # a malformed multipart body
        raise _bad_multipart() from None

    try:
        if stored.size == 0:
            raise bad_request("The upload is empty.", "empty_upload")
        await _no_more_parts(reader)
        async with db.transaction(request) as conn:
            row = await conn.fetchrow(
                "INSERT INTO uploads "
                "(id, app_id, user_id, size, content_type, sha256, storage_key, filename) "
                "VALUES ($1, $2, $3, $4, $5, $6, $7, $8) "
                "RETURNING id, size, content_type, sha256, filename, created_at",
                new_id("up"),
                user.app_id,
                user.user_id,
                stored.size,
                sniffer.content_type(),
                stored.sha256,
                stored.key,
                filename,
            )
    except BaseException:
        # Nothing of a refused or failed upload stays in storage.
        with contextlib.suppress(StorageError):
            await storage.delete(stored.key)
        raise
    return web.json_response(upload_json(row), status=201)


def _disposition(upload_id: str, content_type: str, filename: str | None) -> str:
    fallback = f"{upload_id}.{EXTENSIONS.get(content_type, 'bin')}"
    value = f'attachment; filename="{fallback}"'
    if filename:
        value += f"; filename*=UTF-8''{quote(filename, safe='')}"
    return value


@routes.get("/v1/uploads/{upload_id}")
async def download(request: web.Request) -> web.StreamResponse:
    user = await require_user(request)
    upload_id = path_id(request, "upload_id")
    row = await db.pool(request).fetchrow(VISIBLE_SQL, upload_id, user.app_id, user.user_id)
    if row is None:
        raise not_found("upload")
    try:
        stream = await request.app[STORAGE].open(row["storage_key"])
    except StoredObjectMissing:
        log.warning("upload %s has no stored object", upload_id)
        raise not_found("upload") from None
    except StorageError:
        log.warning("upload storage failed", exc_info=True)
        raise unavailable("Upload storage") from None
    content_type = row["content_type"]
    sha256 = row["sha256"]
    response = web.StreamResponse(
        headers={
            "Content-Type": (
                "text/plain; charset=utf-8" if content_type == "text/plain" else content_type
            ),
            "Content-Disposition": _disposition(upload_id, content_type, row["filename"]),
            "X-Content-Type-Options": "nosniff",
            "Cache-Control": "private, no-store",
            # Even if a browser were talked into rendering it, it runs nothing and loads nothing.
            "Content-Security-Policy": "default-src 'none'; sandbox",
            "ETag": f'"{sha256}"',
            "Digest": "sha-256=" + base64.b64encode(bytes.fromhex(sha256)).decode(),
        }
    )
    response.content_length = row["size"]
    try:
        await response.prepare(request)
        if request.method != "HEAD":
            async for chunk in stream:
                await response.write(chunk)
        await response.write_eof()
    finally:
        await stream.aclose()
    return response


async def purge_batch(
    conn: Any, storage: Storage, app_id: str | None = None, user_id: str | None = None
) -> tuple[int, int]:
    """Remove the bytes of one batch of deleted uploads (of one user, or of everyone) from
    storage: (rows looked at, rows purged). In a transaction, the rows stay locked meanwhile."""
    rows = await conn.fetch(
        "SELECT id, storage_key FROM uploads "
        "WHERE deleted_at IS NOT NULL AND purged_at IS NULL "
        "AND ($1::text IS NULL OR (app_id = $1 AND user_id = $2)) "
        "ORDER BY deleted_at LIMIT $3 FOR UPDATE SKIP LOCKED",
        app_id,
        user_id,
        PURGE_BATCH,
    )
    done: list[str] = []
    for row in rows:
        try:
            await storage.delete(row["storage_key"])
        except StorageError:
            log.warning("could not purge upload %s yet", row["id"], exc_info=True)
        else:
            done.append(row["id"])
    if done:
        await conn.execute("UPDATE uploads SET purged_at = now() WHERE id = any($1::text[])", done)
    return len(rows), len(done)


def purge_finished(looked_at: int, purged: int) -> bool:
    """After a batch: nothing more to purge now (a short batch, or storage refused some)."""
    return looked_at < PURGE_BATCH or purged < looked_at


async def purge_deleted(
    app: web.Application, app_id: str | None = None, user_id: str | None = None
) -> int:
    """Remove the bytes of deleted uploads from storage; returns how many were purged. Safe to
    repeat and to run on every worker at once (SKIP LOCKED; storage deletes are idempotent)."""
    purged = 0
    while True:
        async with db.transaction(app) as conn:
            looked_at, done = await purge_batch(conn, app[STORAGE], app_id, user_id)
        purged += done
        if purge_finished(looked_at, done):
            return purged


async def storage_context(app: web.Application) -> AsyncIterator[None]:
    storage = storage_from_settings(app[SETTINGS])
    app[STORAGE] = storage
    task = asyncio.create_task(_purge_loop(app), name="chatsdk-upload-purge")
    yield
    await stop_task(task)
    await storage.close()


async def _purge_loop(app: web.Application) -> None:
    while True:
        await asyncio.sleep(PURGE_INTERVAL * random.uniform(0.8, 1.2))  # noqa: S311
        try:
            purged = await purge_deleted(app)
        except (ApiError, OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
            log.debug("upload purge skipped: %s", type(exc).__name__)
        except Exception:
            log.exception("upload purge failed")
        else:
            if purged:
                log.info("purged deleted uploads", extra={"fields": {"purged": purged}})


cleanup_contexts = [storage_context]
