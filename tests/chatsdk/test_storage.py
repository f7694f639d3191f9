"""Upload storage backends: local disk, and S3 against a real S3-compatible server (moto in
server mode on a loopback port; no mocks of the HTTP layer)."""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import importlib
import os
import stat
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from chatsdk.errors import SettingsError
from chatsdk.settings import Settings
from chatsdk.storage import (
    S3_PART_SIZE,
    LocalStorage,
    S3Storage,
    Storage,
    StorageError,
    StoredObjectMissing,
    storage_from_settings,
)

from preflight.targets.procs import free_port

BUCKET = "chatsdk-test"


SMALL = b"hello, storage\n" * 100
# Two parts and a tail: exercises the multipart path (S3 parts must be >= 5 MiB but the last).
LARGE = os.urandom(1024) * ((2 * S3_PART_SIZE + 12345) // 1024)


async def chunks(data: bytes, size: int = 64 * 1024) -> AsyncIterator[bytes]:
    for i in range(0, len(data), size):
        yield data[i : i + size]


class Boom(Exception):
    pass


async def failing(data: bytes) -> AsyncIterator[bytes]:
    async for chunk in chunks(data):
        yield chunk
    raise Boom


async def read_all(storage: Storage, key: str) -> bytes:
    stream = await storage.open(key)
    try:
        return b"".join([chunk async for chunk in stream])
    finally:
        await stream.aclose()


@dataclass
class S3Server:
    endpoint: str
    client: Any


@pytest.fixture(scope="module")
def s3_server() -> Iterator[S3Server]:
    server_module: Any = importlib.import_module("moto.server")
    boto3: Any = importlib.import_module("boto3")
    port = free_port()
    server = server_module.ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    endpoint = f"http://127.0.0.1:{port}"
    client = boto3.session.Session().client(
        "s3",
        endpoint_url=endpoint,
        region_name="us-east-1",
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    )
    client.create_bucket(Bucket=BUCKET)
    try:
        yield S3Server(endpoint, client)
    finally:
        client.close()
        server.stop()


def s3_storage(server: S3Server, prefix: str = "uploads/") -> S3Storage:
    return S3Storage(
        BUCKET,
        prefix=prefix,
        endpoint_url=server.endpoint,
        region="us-east-1",
        access_key="testing",
        secret_key="testing",
    )


def files_under(directory: Path) -> list[Path]:
    return [p for p in directory.rglob("*") if p.is_file()]


# --- local disk -------------------------------------------------------------------------------


def test_local_put_read_delete_round_trip(tmp_path: Path) -> None:
    storage = LocalStorage(tmp_path / "store")

    async def scenario() -> None:
        stored = await storage.put(chunks(SMALL))
        assert stored.size == len(SMALL)
        assert stored.sha256 == hashlib.sha256(SMALL).hexdigest()
        assert await storage.exists(stored.key)
        assert await read_all(storage, stored.key) == SMALL
        await storage.delete(stored.key)
        assert not await storage.exists(stored.key)
        await storage.delete(stored.key)  # idempotent: a retried purge must not fail
        with pytest.raises(StoredObjectMissing):
            await storage.open(stored.key)

    asyncio.run(scenario())


def test_local_files_are_private_and_named_by_generated_keys(tmp_path: Path) -> None:
    root = tmp_path / "store"
    storage = LocalStorage(root)
    stored = asyncio.run(storage.put(chunks(SMALL)))
    (path,) = files_under(root)
    assert path.name == stored.key
    assert len(stored.key) == 32
    assert stat.S_IMODE(path.stat().st_mode) == 0o600, "stored files must be 0600"
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700, "directories must be 0700"
    assert stat.S_IMODE(root.stat().st_mode) == 0o700


def test_local_put_of_a_failing_stream_leaves_nothing(tmp_path: Path) -> None:
    """A refused upload (too large, client gone) must not leave a file or a temp file."""
    root = tmp_path / "store"
    storage = LocalStorage(root)
    with pytest.raises(Boom):
        asyncio.run(storage.put(failing(LARGE[: 3 * 1024 * 1024])))
    assert files_under(root) == []


@pytest.mark.parametrize("key", ["../../etc/passwd", "a" * 32 + "/x", "", "ABCDEF" * 6])
def test_local_storage_refuses_anything_but_a_generated_key(tmp_path: Path, key: str) -> None:
    storage = LocalStorage(tmp_path / "store")
    with pytest.raises(StorageError):
        asyncio.run(storage.open(key))
    with pytest.raises(StorageError):
        asyncio.run(storage.delete(key))


def test_settings_choose_the_backend(tmp_path: Path) -> None:
    base = Settings(
        database_url="postgresql://u:p@127.0.0.1:1/db",
        redis_url="redis://127.0.0.1:1/0",
        admin_key="a" * 32,
        jwt_secret="j" * 48,
        upload_dir=tmp_path,
    )
    local = storage_from_settings(base)
    assert isinstance(local, LocalStorage)
    assert local.directory == tmp_path
    s3 = storage_from_settings(
        dataclasses.replace(
            base,
            storage="s3",
            s3_bucket=BUCKET,
            s3_endpoint="http://127.0.0.1:1",
            s3_access_key="ak",
            s3_secret_key="sk",
        )
    )
    assert isinstance(s3, S3Storage)
    assert s3.bucket == BUCKET
    asyncio.run(s3.close())


# --- S3 (moto server) -------------------------------------------------------------------------


@pytest.mark.parametrize("data", [SMALL, LARGE], ids=["single-put", "multipart"])
def test_s3_put_read_delete_round_trip(s3_server: S3Server, data: bytes) -> None:
    storage = s3_storage(s3_server)

    async def scenario() -> None:
        try:
            stored = await storage.put(chunks(data))
            assert stored.size == len(data)
            assert stored.sha256 == hashlib.sha256(data).hexdigest()
            assert await storage.exists(stored.key)
            assert await read_all(storage, stored.key) == data
            await storage.delete(stored.key)
            assert not await storage.exists(stored.key)
            await storage.delete(stored.key)  # idempotent
            with pytest.raises(StoredObjectMissing):
                await storage.open(stored.key)
        finally:
            await storage.close()

    asyncio.run(scenario())


def test_s3_objects_live_under_the_prefix(s3_server: S3Server) -> None:
    storage = s3_storage(s3_server, prefix="tenant-a/")
    stored = asyncio.run(storage.put(chunks(SMALL)))
    asyncio.run(storage.close())
    listed = s3_server.client.list_objects_v2(Bucket=BUCKET, Prefix="tenant-a/")
    keys = [o["Key"] for o in listed.get("Contents", [])]
    assert keys == [f"tenant-a/{stored.key}"]
    s3_server.client.delete_object(Bucket=BUCKET, Key=keys[0])


def test_s3_put_of_a_failing_stream_aborts_the_multipart_upload(s3_server: S3Server) -> None:
    """Parts already sent are not left behind (they cost money and hold the user's bytes)."""
    storage = s3_storage(s3_server, prefix="failing/")
    with pytest.raises(Boom):
        asyncio.run(storage.put(failing(LARGE)))
    asyncio.run(storage.close())
    pending = s3_server.client.list_multipart_uploads(Bucket=BUCKET, Prefix="failing/")
    assert pending.get("Uploads", []) == []
    listed = s3_server.client.list_objects_v2(Bucket=BUCKET, Prefix="failing/")
    assert listed.get("Contents", []) == []


def test_s3_unreachable_endpoint_is_a_storage_error() -> None:
    storage = S3Storage(
        BUCKET,
        endpoint_url=f"http://127.0.0.1:{free_port()}",
        access_key="testing",
        secret_key="testing",
    )

    async def scenario() -> None:
        try:
            with pytest.raises(StorageError):
                await storage.put(chunks(SMALL))
        finally:
            await storage.close()

    asyncio.run(scenario())


# --- settings ---------------------------------------------------------------------------------

ENV = {
    "CHATSDK_DATABASE_URL": "postgresql://chatsdk:pw@127.0.0.1:5432/chatsdk",
    "CHATSDK_REDIS_URL": "redis://127.0.0.1:6379/0",
    "CHATSDK_ADMIN_KEY": "admin-key-" + "k" * 30,
    "CHATSDK_JWT_SECRET": "jwt-secret-" + "s" * 30,
}
S3_ENV = {
    **ENV,
    "CHATSDK_STORAGE": "s3",
    "CHATSDK_S3_ENDPOINT": "http://minio:9000",
    "CHATSDK_S3_BUCKET": "chat-uploads",
    "CHATSDK_S3_REGION": "eu-central-1",
    "CHATSDK_S3_ACCESS_KEY": "AKIAEXAMPLEACCESS",
    "CHATSDK_S3_SECRET_KEY": "very-secret-s3-key-0815",
}


def test_storage_defaults_to_local_disk() -> None:
    settings = Settings.from_env(ENV)
    assert settings.storage == "local"
    assert settings.webhook_backoff_base == 1.0


def test_s3_settings_are_read_and_secrets_stay_out_of_repr() -> None:
    settings = Settings.from_env(S3_ENV)
    assert settings.storage == "s3"
    assert settings.s3_bucket == "chat-uploads"
    assert settings.s3_region == "eu-central-1"
    assert settings.s3_endpoint == "http://minio:9000"
    text = repr(settings)
    assert "chat-uploads" in text
    assert "AKIAEXAMPLEACCESS" not in text
    assert "very-secret-s3-key-0815" not in text


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        ({"CHATSDK_STORAGE": "ftp"}, "CHATSDK_STORAGE must be one of local, s3"),
        ({"CHATSDK_S3_BUCKET": ""}, "CHATSDK_S3_BUCKET is required when"),
        ({"CHATSDK_S3_BUCKET": "Bad_Bucket"}, "CHATSDK_S3_BUCKET must be an S3 bucket name"),
        ({"CHATSDK_S3_ENDPOINT": "minio:9000"}, "CHATSDK_S3_ENDPOINT must be a URL"),
        ({"CHATSDK_S3_REGION": "eu central"}, "CHATSDK_S3_REGION must be a region"),
        ({"CHATSDK_S3_PREFIX": "../up"}, "CHATSDK_S3_PREFIX must be a key prefix"),
        ({"CHATSDK_S3_SECRET_KEY": ""}, "must be set together"),
        ({"CHATSDK_WEBHOOK_BACKOFF_BASE": "0"}, "CHATSDK_WEBHOOK_BACKOFF_BASE must be between"),
    ],
)
def test_bad_storage_settings_name_the_variable(change: dict[str, str], expected: str) -> None:
    with pytest.raises(SettingsError, match=expected):
        Settings.from_env({**S3_ENV, **change})
