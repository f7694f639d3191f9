"""Where upload bytes live: local disk (the default) or an S3-compatible bucket.

Keys are generated here (random hex), never taken from a client, so no filename can steer a
write. `put` streams: bytes are hashed and written as they arrive, and at most one part (8 MiB,
S3) or one write buffer (1 MiB, local) is held in memory, whatever the upload's size. Blocking
file and boto3 calls run in threads so the event loop keeps serving.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import importlib
import os
import re
import secrets
from collections.abc import AsyncIterable, AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from aiohttp import web

from chatsdk.errors import ChatSDKError
from chatsdk.settings import Settings

READ_CHUNK = 256 * 1024
LOCAL_WRITE_BUFFER = 1024 * 1024
S3_PART_SIZE = 8 * 1024 * 1024  # S3's minimum part size is 5 MiB
S3_CONNECT_TIMEOUT = 3.0
S3_READ_TIMEOUT = 20.0
KEY_PATTERN = re.compile(r"[0-9a-f]{32}")


class StorageError(ChatSDKError):
    """The storage backend failed (disk, network, bucket)."""


class StoredObjectMissing(StorageError):
    """No object under this key."""


@dataclass(frozen=True)
class StoredObject:
    key: str
    size: int
    sha256: str  # hex


class ObjectStream:
    """An opened object, read in chunks in a thread; always `aclose` it."""

    def __init__(self, read: Callable[[int], bytes], close: Callable[[], None]) -> None:
        self._read = read
        self._close = close
        self._closed = False

    def __aiter__(self) -> AsyncIterator[bytes]:
        return self

    async def __anext__(self) -> bytes:
        if self._closed:
            raise StopAsyncIteration
        chunk = await asyncio.to_thread(self._read, READ_CHUNK)
        if not chunk:
            await self.aclose()
            raise StopAsyncIteration
        return chunk

    async def aclose(self) -> None:
        if not self._closed:
            self._closed = True
            await asyncio.to_thread(self._close)


class Storage(Protocol):
    async def put(self, chunks: AsyncIterable[bytes]) -> StoredObject:
        """Store the stream under a new key; nothing is left behind if `chunks` raises."""

    async def open(self, key: str) -> ObjectStream:
        """The object's bytes; raises StoredObjectMissing."""

    async def delete(self, key: str) -> None:
        """Remove the object; deleting a missing key is not an error (retries are safe)."""

    async def exists(self, key: str) -> bool: ...

    async def close(self) -> None: ...


# The application's storage, created from the settings by uploads.py's cleanup context.
STORAGE: web.AppKey[Storage] = web.AppKey("storage")


def new_key() -> str:
    return secrets.token_hex(16)


def _checked(key: str) -> str:
    # Keys come from our own database; still, nothing but a generated key ever names a path.
    if not KEY_PATTERN.fullmatch(key):
        raise StorageError("not a storage key")
    return key


class LocalStorage:
    """Files at <dir>/<key[:2]>/<key>, written to a temp file and renamed into place, so a reader
    never sees half an object; directories 0700, files 0600."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory

    def _path(self, key: str) -> Path:
        key = _checked(key)
        return self.directory / key[:2] / key

    async def put(self, chunks: AsyncIterable[bytes]) -> StoredObject:
        key = new_key()
        final = self._path(key)
        tmp_dir = self.directory / ".tmp"
        tmp = tmp_dir / f"{key}.part"

        def create() -> int:
            for d in (self.directory, tmp_dir, final.parent):
                d.mkdir(mode=0o700, parents=True, exist_ok=True)
            return os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)

        fd = await asyncio.to_thread(create)
        digest = hashlib.sha256()
        size = 0
        buffer = bytearray()
        try:
            try:
                async for chunk in chunks:
                    digest.update(chunk)
                    size += len(chunk)
                    buffer += chunk
                    if len(buffer) >= LOCAL_WRITE_BUFFER:
                        await asyncio.to_thread(_write_all, fd, bytes(buffer))
                        buffer.clear()
                if buffer:
                    await asyncio.to_thread(_write_all, fd, bytes(buffer))
                await asyncio.to_thread(os.fsync, fd)
            finally:
                os.close(fd)
            await asyncio.to_thread(os.replace, tmp, final)
        except BaseException:
            with contextlib.suppress(OSError):
                tmp.unlink()
            raise
        return StoredObject(key, size, digest.hexdigest())

    async def open(self, key: str) -> ObjectStream:
        path = self._path(key)
        try:
            handle = await asyncio.to_thread(path.open, "rb")
        except FileNotFoundError:
            raise StoredObjectMissing(key) from None
        return ObjectStream(handle.read, handle.close)

    async def delete(self, key: str) -> None:
        path = self._path(key)
        await asyncio.to_thread(path.unlink, missing_ok=True)

    async def exists(self, key: str) -> bool:
        return await asyncio.to_thread(self._path(key).is_file)

    async def close(self) -> None:
        return None


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        view = view[written:]


class S3Storage:
    """Objects at <prefix><key> in one bucket. Small objects are one PUT; larger ones a multipart
    upload of 8 MiB parts, aborted if the stream fails, so at most one part is in memory."""

    def __init__(
        self,
        bucket: str,
        *,
        prefix: str = "",
        endpoint_url: str | None = None,
        region: str = "us-east-1",
        access_key: str | None = None,
        secret_key: str | None = None,
    ) -> None:
        # Imported here: a deployment on local disk does not need boto3 installed. The module
        # is untyped, so it is used as Any.
        boto3: Any = importlib.import_module("boto3")
        botocore_config: Any = importlib.import_module("botocore.config")
        self.bucket = bucket
        self.prefix = prefix
        self._client: Any = boto3.session.Session().client(
            "s3",
            endpoint_url=endpoint_url or None,
            region_name=region,
            aws_access_key_id=access_key or None,
            aws_secret_access_key=secret_key or None,
            config=botocore_config.Config(
                connect_timeout=S3_CONNECT_TIMEOUT,
                read_timeout=S3_READ_TIMEOUT,
                retries={"max_attempts": 3, "mode": "standard"},
                # Path-style addressing works with MinIO and any endpoint without wildcard DNS.
                s3={"addressing_style": "path"},
            ),
        )
        self._errors: Any = importlib.import_module("botocore.exceptions")

    def _object(self, key: str) -> str:
        return self.prefix + _checked(key)

    async def _call(self, method: str, **kwargs: Any) -> Any:
        try:
            return await asyncio.to_thread(getattr(self._client, method), **kwargs)
        except self._errors.ClientError as exc:
            code = str(exc.response.get("Error", {}).get("Code", ""))
            if code in {"NoSuchKey", "404", "NotFound"}:
                raise StoredObjectMissing(kwargs.get("Key", "")) from None
            raise StorageError(f"S3 {method} failed ({code or 'error'})") from None
        except self._errors.BotoCoreError as exc:
            raise StorageError(f"S3 {method} failed ({type(exc).__name__})") from None

    async def put(self, chunks: AsyncIterable[bytes]) -> StoredObject:
        key = new_key()
        name = self._object(key)
        digest = hashlib.sha256()
        size = 0
        buffer = bytearray()
        upload_id: str | None = None
        parts: list[dict[str, Any]] = []
        try:
            async for chunk in chunks:
                digest.update(chunk)
                size += len(chunk)
                buffer += chunk
                while len(buffer) >= S3_PART_SIZE:
                    if upload_id is None:
                        created = await self._call(
                            "create_multipart_upload", Bucket=self.bucket, Key=name
                        )
                        upload_id = str(created["UploadId"])
                    part = bytes(buffer[:S3_PART_SIZE])
                    del buffer[:S3_PART_SIZE]
                    number = len(parts) + 1
                    done = await self._call(
                        "upload_part",
                        Bucket=self.bucket,
                        Key=name,
                        UploadId=upload_id,
                        PartNumber=number,
                        Body=part,
                    )
                    parts.append({"PartNumber": number, "ETag": done["ETag"]})
            if upload_id is None:
                await self._call("put_object", Bucket=self.bucket, Key=name, Body=bytes(buffer))
            else:
                if buffer:
                    number = len(parts) + 1
                    done = await self._call(
                        "upload_part",
                        Bucket=self.bucket,
                        Key=name,
                        UploadId=upload_id,
                        PartNumber=number,
                        Body=bytes(buffer),
                    )
                    parts.append({"PartNumber": number, "ETag": done["ETag"]})
                await self._call(
                    "complete_multipart_upload",
                    Bucket=self.bucket,
                    Key=name,
                    UploadId=upload_id,
                    MultipartUpload={"Parts": parts},
                )
        except BaseException:
            if upload_id is not None:
                with contextlib.suppress(StorageError):
                    await self._call(
                        "abort_multipart_upload", Bucket=self.bucket, Key=name, UploadId=upload_id
                    )
            raise
        return StoredObject(key, size, digest.hexdigest())

    async def open(self, key: str) -> ObjectStream:
        got = await self._call("get_object", Bucket=self.bucket, Key=self._object(key))
        body = got["Body"]
        return ObjectStream(body.read, body.close)

    async def delete(self, key: str) -> None:
        # S3 answers 204 for a missing key too: deleting is idempotent.
        await self._call("delete_object", Bucket=self.bucket, Key=self._object(key))

    async def exists(self, key: str) -> bool:
        try:
            await self._call("head_object", Bucket=self.bucket, Key=self._object(key))
        except StoredObjectMissing:
            return False
        return True

    async def close(self) -> None:
        await asyncio.to_thread(self._client.close)


def storage_from_settings(settings: Settings) -> Storage:
    if settings.storage == "s3":
        return S3Storage(
            settings.s3_bucket,
            prefix=settings.s3_prefix,
            endpoint_url=settings.s3_endpoint or None,
            region=settings.s3_region,
            access_key=settings.s3_access_key or None,
            secret_key=settings.s3_secret_key or None,
        )
    return LocalStorage(settings.upload_dir)
