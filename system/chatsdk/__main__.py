"""`python -m chatsdk`: serve until SIGTERM or SIGINT, then drain and exit 0."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import sys

from chatsdk import faults
from chatsdk.errors import SettingsError
from chatsdk.errortracking import ErrorTracking, init_error_tracking
from chatsdk.logs import configure_logging, url_password
from chatsdk.server import start_server
from chatsdk.settings import Settings

log = logging.getLogger("chatsdk.server")

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_BAD_SETTINGS = 2


async def serve(settings: Settings) -> int:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        if signum == signal.SIGTERM and faults.injected(faults.EXIT_ON_SIGTERM):
            continue  # test-only fault (chatsdk/faults.py): SIGTERM kills without a drain
        if signum == signal.SIGTERM and faults.injected(faults.QUIT_ON_SIGTERM):
            # test-only fault: SIGTERM exits 0 at once, nothing drained
            loop.add_signal_handler(signum, os._exit, EXIT_OK)
            continue
        loop.add_signal_handler(signum, stop.set)
    server = await start_server(settings, startup_wait=settings.startup_wait)
    log.info("listening", extra={"fields": {"url": server.url}})
    await stop.wait()
    try:
        await server.drain()
    except TimeoutError:
        log.error("drain did not finish within 15 s; exiting anyway")
        return EXIT_FAILED
    return EXIT_OK


def main() -> int:
    try:
        settings = Settings.from_env()
        tracking = ErrorTracking.from_env()
        faults.active()  # validated here, so a misspelt fault is a settings error (exit 2)
    except SettingsError as exc:
        print(f"chatsdk: invalid settings: {exc}", file=sys.stderr)
        return EXIT_BAD_SETTINGS
    # Masked in every log line, wherever they would appear.
    secrets = (
        settings.admin_key,
        settings.jwt_secret,
        url_password(settings.database_url),
        url_password(settings.redis_url),
        settings.s3_secret_key,
    )
    configure_logging(
        settings.log_level, settings.worker_id, secrets=secrets, ship_to=settings.log_server
    )
    init_error_tracking(tracking, settings.worker_id, secrets)
    try:
        return asyncio.run(serve(settings))
    except OSError as exc:
        log.error("cannot serve on %s:%s: %s", settings.host, settings.port, exc.strerror)
        return EXIT_FAILED


if __name__ == "__main__":
    sys.exit(main())
