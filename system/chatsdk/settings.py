"""Settings read once from CHATSDK_* environment variables, cast and validated."""

from __future__ import annotations

import ipaddress
import os
import socket
import tempfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar
from urllib.parse import urlsplit

from chatsdk.dsn import hosts
from chatsdk.errors import SettingsError

PREFIX = "CHATSDK_"
MIN_SECRET_LENGTH = 32
# The whole drain (delay, in-flight requests, closing pools) must end within 15 s; closing the
# pools gets what is left after the delay and the in-flight budget.
DRAIN_BUDGET_SECONDS = 15.0
POOL_CLOSE_RESERVE_SECONDS = 3.0
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
STORAGE_BACKENDS = ("local", "s3")
# Whose X-Real-IP / X-Forwarded-For the API believes (chatsdk/clientaddress.py): loopback, where
# the edge of the native target runs. A deployment names its edge's network.
DEFAULT_TRUSTED_PROXIES: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...] = (
    ipaddress.IPv4Network("127.0.0.0/8"),
    ipaddress.IPv6Network("::1/128"),
)
NO_PROXIES = "none"
MAX_FAILURE_LIMIT = 100_000

_T = TypeVar("_T")


def default_upload_dir() -> Path:
    return Path(tempfile.gettempdir()) / "chatsdk-uploads"


def _redact_url(url: str) -> str:
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
    return parts._replace(netloc=netloc).geturl()


@dataclass(frozen=True)
class Settings:
    database_url: str = field(repr=False)
    redis_url: str = field(repr=False)
    admin_key: str = field(repr=False)
    jwt_secret: str = field(repr=False)
    host: str = "127.0.0.1"
    port: int = 8080
    worker_id: str = "0"
    shutdown_timeout: float = 10.0
    drain_delay: float = 1.0
    # At start, how long the worker waits for its databases (ready, or migrations failed) before
    # it opens its listener anyway: an edge without health checks sends requests to whatever
    # listens, so a worker listens once it can serve them. 0: listen at once.
    startup_wait: float = 10.0
    log_level: str = "INFO"
    # The central log store's host:port (RFC 5424 over TCP); empty: the lines go to stderr only.
    log_server: str = ""
    upload_dir: Path = field(default_factory=default_upload_dir)
    allowed_origins: tuple[str, ...] = ()
    # Upload storage: local disk (upload_dir) or an S3-compatible bucket (MinIO, AWS S3).
    storage: str = "local"
    s3_endpoint: str = ""  # empty: the AWS endpoint of s3_region
    s3_bucket: str = ""
    s3_region: str = "us-east-1"
    s3_prefix: str = "uploads/"
    s3_access_key: str = field(default="", repr=False)  # empty: boto3's credential chain
    s3_secret_key: str = field(default="", repr=False)
    # Webhook retries wait base * 2^(attempt-1) seconds (with jitter, capped).
    webhook_backoff_base: float = 1.0
    # Demo sign-in for the web client (chatsdk/demo.py): anyone may become a demo user. Never on
    # in production; off unless CHATSDK_DEMO is set.
    demo: bool = False
    # Data retention (chatsdk/retention.py): days messages and uploads are kept (0: for ever),
    # and how often each worker applies the policy.
    # Seven years with their leap days: the data retention policy the product publishes.
    retention_messages_days: int = 2557
    retention_uploads_days: int = 2557
    retention_interval: float = 3600.0
    # Throttling of failed authentication (chatsdk/auththrottle.py). Per client address: at most
    # auth_failure_burst failures in auth_burst_window seconds and auth_failures_per_address in
    # auth_throttle_window; per API key id, token subject or the admin key: at most
    # auth_failures_per_credential in auth_throttle_window. Numbers no real client meets: a
    # client that has a valid credential sends it, and an expired or revoked one never counts.
    auth_throttle_window: float = 600.0
    auth_failures_per_address: int = 200
    auth_burst_window: float = 10.0
    auth_failure_burst: int = 25
    auth_failures_per_credential: int = 30
    # Proxies whose X-Real-IP / X-Forwarded-For name the client (chatsdk/clientaddress.py).
    trusted_proxies: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...] = (
        DEFAULT_TRUSTED_PROXIES
    )

    def __repr__(self) -> str:
        # URLs are shown with their password masked; keys and secrets are never shown.
        return (
            f"Settings(host={self.host!r}, port={self.port}, worker_id={self.worker_id!r}, "
            f"database_url={_redact_url(self.database_url)!r}, "
            f"redis_url={_redact_url(self.redis_url)!r}, admin_key='***', jwt_secret='***', "
            f"shutdown_timeout={self.shutdown_timeout}, drain_delay={self.drain_delay}, "
            f"startup_wait={self.startup_wait}, log_level={self.log_level!r}, "
            f"log_server={self.log_server!r}, "
            f"upload_dir={str(self.upload_dir)!r}, "
            f"allowed_origins={self.allowed_origins!r}, storage={self.storage!r}, "
            f"s3_endpoint={_redact_url(self.s3_endpoint)!r}, s3_bucket={self.s3_bucket!r}, "
            f"s3_region={self.s3_region!r}, s3_prefix={self.s3_prefix!r}, "
            f"s3_access_key={'***' if self.s3_access_key else ''!r}, "
            f"s3_secret_key={'***' if self.s3_secret_key else ''!r}, "
            f"webhook_backoff_base={self.webhook_backoff_base}, demo={self.demo}, "
            f"retention_messages_days={self.retention_messages_days}, "
            f"retention_uploads_days={self.retention_uploads_days}, "
            f"retention_interval={self.retention_interval}, "
            f"auth_throttle_window={self.auth_throttle_window}, "
            f"auth_failures_per_address={self.auth_failures_per_address}, "
            f"auth_burst_window={self.auth_burst_window}, "
            f"auth_failure_burst={self.auth_failure_burst}, "
            f"auth_failures_per_credential={self.auth_failures_per_credential}, "
            f"trusted_proxies={tuple(str(n) for n in self.trusted_proxies)!r})"
        )

    @classmethod
    def from_env(cls, environ: Mapping[str, str] = os.environ) -> Settings:
        env = _Env(environ)
        settings = cls(
            host=env.get("HOST", str, default="127.0.0.1", check=_non_empty),
            port=env.get("PORT", _port, default=8080),
            database_url=env.get("DATABASE_URL", str, check=_url({"postgresql", "postgres"})),
            redis_url=env.get("REDIS_URL", str, check=_url({"redis", "rediss"})),
            admin_key=env.get("ADMIN_KEY", str, check=_secret),
            jwt_secret=env.get("JWT_SECRET", str, check=_secret),
            worker_id=env.get("WORKER_ID", str, default=host_worker_id(), check=_worker_id),
            shutdown_timeout=env.get(
                "SHUTDOWN_TIMEOUT", _seconds, default=10.0, check=_between(0.1, 11.0)
            ),
            drain_delay=env.get("DRAIN_DELAY", _seconds, default=1.0, check=_between(0.0, 5.0)),
            startup_wait=env.get("STARTUP_WAIT", _seconds, default=10.0, check=_between(0.0, 30.0)),
            log_level=env.get("LOG_LEVEL", _log_level, default="INFO"),
            log_server=env.get("LOG_SERVER", str, default="", check=_log_server),
            upload_dir=env.get(
                "UPLOAD_DIR",
                Path,
                default=default_upload_dir(),
                check=_absolute,
            ),
            allowed_origins=env.get("ALLOWED_ORIGINS", _origins, default=()),
            storage=env.get("STORAGE", _storage, default="local"),
            s3_endpoint=env.get("S3_ENDPOINT", str, default="", check=_url({"http", "https"})),
            s3_bucket=env.get("S3_BUCKET", str, default="", check=_bucket),
            s3_region=env.get("S3_REGION", str, default="us-east-1", check=_region),
            s3_prefix=env.get("S3_PREFIX", str, default="uploads/", check=_prefix),
            s3_access_key=env.get("S3_ACCESS_KEY", str, default=""),
            s3_secret_key=env.get("S3_SECRET_KEY", str, default=""),
            webhook_backoff_base=env.get(
                "WEBHOOK_BACKOFF_BASE", _seconds, default=1.0, check=_between(0.01, 60.0)
            ),
            demo=env.get("DEMO", _flag, default=False),
            retention_messages_days=env.get(
                "RETENTION_MESSAGES_DAYS", _days, default=2557, check=_at_most(36500)
            ),
            retention_uploads_days=env.get(
                "RETENTION_UPLOADS_DAYS", _days, default=2557, check=_at_most(36500)
            ),
            retention_interval=env.get(
                "RETENTION_INTERVAL", _seconds, default=3600.0, check=_between(1.0, 86400.0)
            ),
            auth_throttle_window=env.get(
                "AUTH_THROTTLE_WINDOW", _seconds, default=600.0, check=_between(1.0, 86400.0)
            ),
            auth_failures_per_address=env.get(
                "AUTH_FAILURES_PER_ADDRESS", _count, default=200, check=_count_at_most
            ),
            auth_burst_window=env.get(
                "AUTH_BURST_WINDOW", _seconds, default=10.0, check=_between(1.0, 3600.0)
            ),
            auth_failure_burst=env.get(
                "AUTH_FAILURE_BURST", _count, default=25, check=_count_at_most
            ),
            auth_failures_per_credential=env.get(
                "AUTH_FAILURES_PER_CREDENTIAL", _count, default=30, check=_count_at_most
            ),
            trusted_proxies=env.get("TRUSTED_PROXIES", _networks, default=DEFAULT_TRUSTED_PROXIES),
        )
        if settings.storage == "s3" and not settings.s3_bucket:
            raise SettingsError(f"{PREFIX}S3_BUCKET is required when {PREFIX}STORAGE is s3")
        if bool(settings.s3_access_key) != bool(settings.s3_secret_key):
            raise SettingsError(
                f"{PREFIX}S3_ACCESS_KEY and {PREFIX}S3_SECRET_KEY must be set together "
                "(or both left empty for the default credential chain)"
            )
        if settings.auth_burst_window > settings.auth_throttle_window:
            raise SettingsError(
                f"{PREFIX}AUTH_BURST_WINDOW must be at most {PREFIX}AUTH_THROTTLE_WINDOW "
                f"(got {settings.auth_burst_window:g} > {settings.auth_throttle_window:g})"
            )
        budget = DRAIN_BUDGET_SECONDS - POOL_CLOSE_RESERVE_SECONDS
        if settings.drain_delay + settings.shutdown_timeout > budget:
            raise SettingsError(
                f"{PREFIX}DRAIN_DELAY plus {PREFIX}SHUTDOWN_TIMEOUT must be at most {budget:g} "
                f"seconds so the drain ends within {DRAIN_BUDGET_SECONDS:g} s "
                f"(got {settings.drain_delay:g} + {settings.shutdown_timeout:g})"
            )
        return settings


class _Env:
    def __init__(self, environ: Mapping[str, str]) -> None:
        self._environ = environ

    def get(
        self,
        name: str,
        cast: Callable[[str], _T],
        *,
        default: _T | None = None,
        check: Callable[[_T], str | None] | None = None,
    ) -> _T:
        key = PREFIX + name
        raw = self._environ.get(key)
        if raw is None or raw.strip() == "":
            if default is None:
                raise SettingsError(f"{key} is required and not set")
            return default
        try:
            value = cast(raw.strip())
        except ValueError as exc:
            raise SettingsError(f"{key} {exc}") from None
        problem = check(value) if check is not None else None
        if problem is not None:
            raise SettingsError(f"{key} {problem}")
        return value


def _port(raw: str) -> int:
    try:
        port = int(raw)
    except ValueError:
        raise ValueError(f"must be an integer port number (got {raw!r})") from None
    if not 0 <= port <= 65535:
        raise ValueError(f"must be a port number between 0 and 65535 (got {port})")
    return port


def _seconds(raw: str) -> float:
    try:
        return float(raw)
    except ValueError:
        raise ValueError(f"must be a number of seconds (got {raw!r})") from None


def _whole(raw: str, unit: str) -> int:
    try:
        return int(raw)
    except ValueError:
        raise ValueError(f"must be a whole number of {unit} (got {raw!r})") from None


def _days(raw: str) -> int:
    days = _whole(raw, "days")
    if days < 0:
        raise ValueError(f"must be 0 (keep for ever) or more days (got {days})")
    return days


def _count(raw: str) -> int:
    count = _whole(raw, "failures")
    if count < 1:
        raise ValueError(f"must be at least 1 (got {count})")
    return count


def _count_at_most(value: int) -> str | None:
    return _at_most(MAX_FAILURE_LIMIT)(value)


def _networks(raw: str) -> tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]:
    """Comma-separated addresses or CIDR networks; `none` trusts no proxy."""
    if raw.lower() == NO_PROXIES:
        return ()
    networks = []
    for part in (p.strip() for p in raw.split(",")):
        if not part:
            continue
        try:
            networks.append(ipaddress.ip_network(part, strict=False))
        except ValueError:
            raise ValueError(
                f"must be comma-separated addresses or networks like 10.0.0.0/8, or {NO_PROXIES} "
                f"(got {part!r})"
            ) from None
    return tuple(networks)


def _at_most(high: int) -> Callable[[int], str | None]:
    def check(value: int) -> str | None:
        return None if value <= high else f"must be at most {high} (got {value})"

    return check


def _flag(raw: str) -> bool:
    value = raw.lower()
    if value in ("1", "true", "yes", "on"):
        return True
    if value in ("0", "false", "no", "off"):
        return False
    raise ValueError(f"must be 1, true, yes, on, 0, false, no or off (got {raw!r})")


def parse_server(raw: str) -> tuple[str, int]:
    """`host:port` -> (host, port); raises ValueError naming what is wrong."""
    host, sep, port = raw.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"must be host:port (got {raw!r})")
    return host.strip("[]"), int(port)


def _log_server(raw: str) -> str | None:
    try:
        parse_server(raw)
    except ValueError as exc:
        return str(exc)
    return None


def _log_level(raw: str) -> str:
    level = raw.upper()
    if level not in LOG_LEVELS:
        raise ValueError(f"must be one of {', '.join(LOG_LEVELS)} (got {raw!r})")
    return level


def _origins(raw: str) -> tuple[str, ...]:
    origins = tuple(part.strip().rstrip("/") for part in raw.split(",") if part.strip())
    for origin in origins:
        parts = urlsplit(origin)
        if parts.scheme not in {"http", "https"} or not parts.netloc or parts.path:
            raise ValueError(
                f"must be a comma-separated list of origins like https://chat.example.com "
                f"(got {origin!r})"
            )
    return origins


def _storage(raw: str) -> str:
    value = raw.lower()
    if value not in STORAGE_BACKENDS:
        raise ValueError(f"must be one of {', '.join(STORAGE_BACKENDS)} (got {raw!r})")
    return value


def _bucket(value: str) -> str | None:
    # S3's bucket naming rules, the part that matters for building URLs safely.
    if (
        3 <= len(value) <= 63
        and value[0].isalnum()
        and value[-1].isalnum()
        and all(c.islower() or c.isdigit() or c in ".-" for c in value)
    ):
        return None
    return "must be an S3 bucket name: 3 to 63 lower-case letters, digits, '.' or '-'"


def _region(value: str) -> str | None:
    if 1 <= len(value) <= 64 and all(c.isalnum() or c == "-" for c in value):
        return None
    return f"must be a region name like us-east-1 (got {value!r})"


def _prefix(value: str) -> str | None:
    if (
        len(value) <= 200
        and ".." not in value
        and not value.startswith("/")
        and all(c.isalnum() or c in "/._-" for c in value)
    ):
        return None
    return "must be a key prefix of letters, digits, '/', '.', '_' or '-' (at most 200)"


def _non_empty(value: str) -> str | None:
    return None if value else "must not be empty"


def _secret(value: str) -> str | None:
    if len(value) < MIN_SECRET_LENGTH:
        return f"must be at least {MIN_SECRET_LENGTH} characters long (got {len(value)})"
    return None


def host_worker_id() -> str:
    """The worker id where CHATSDK_WORKER_ID is not set: the host name, so replicas that share
    one configuration still report distinct ids (a container's host name is its own: its id
    under Docker, the pod's name under Kubernetes). Characters an id may not hold become '-'."""
    name = "".join(c if c.isalnum() or c in "._-" else "-" for c in socket.gethostname())
    return name[:64] or "0"


def _worker_id(value: str) -> str | None:
    if len(value) <= 64 and all(c.isalnum() or c in "._-" for c in value):
        return None
    return "must be 1 to 64 characters of letters, digits, '.', '_' or '-'"


def _absolute(value: Path) -> str | None:
    return None if value.is_absolute() else f"must be an absolute path (got {str(value)!r})"


def _between(low: float, high: float) -> Callable[[float], str | None]:
    def check(value: float) -> str | None:
        if low <= value <= high:
            return None
        return f"must be between {low:g} and {high:g} seconds (got {value:g})"

    return check


def _url(schemes: set[str]) -> Callable[[str], str | None]:
    expected = " or ".join(f"{scheme}://..." for scheme in sorted(schemes))

    def check(value: str) -> str | None:
        try:
            parts = urlsplit(value)
            named = hosts(value)  # raises ValueError on a bad port
        except ValueError:
            return f"must be a URL like {expected} (it does not parse)"
        if parts.scheme not in schemes or not all(host for host, _port in named):
            return f"must be a URL like {expected} with a host"
        return None

    return check
