from __future__ import annotations

import socket
from pathlib import Path

import pytest
from chatsdk.dsn import hosts
from chatsdk.errors import ChatSDKError, SettingsError
from chatsdk.settings import Settings, host_worker_id

ADMIN_KEY = "admin-key-" + "k" * 30
JWT_SECRET = "jwt-secret-" + "s" * 30
DB_PASSWORD = "db-password-4711"
REDIS_PASSWORD = "redis-password-0815"

VALID = {
    "CHATSDK_DATABASE_URL": f"postgresql://chatsdk:{DB_PASSWORD}@127.0.0.1:5432/chatsdk",
    "CHATSDK_REDIS_URL": f"redis://:{REDIS_PASSWORD}@127.0.0.1:6379/0",
    "CHATSDK_ADMIN_KEY": ADMIN_KEY,
    "CHATSDK_JWT_SECRET": JWT_SECRET,
}


def test_defaults_apply_when_only_required_variables_are_set() -> None:
    settings = Settings.from_env(VALID)
    assert settings.host == "127.0.0.1"
    assert settings.port == 8080
    assert settings.worker_id == host_worker_id()
    assert settings.shutdown_timeout == 10.0
    assert settings.drain_delay == 1.0
    assert settings.log_level == "INFO"
    assert settings.upload_dir.is_absolute()
    assert settings.allowed_origins == ()


def test_values_are_cast() -> None:
    settings = Settings.from_env(
        {
            **VALID,
            "CHATSDK_PORT": "9001",
            "CHATSDK_SHUTDOWN_TIMEOUT": "5",
            "CHATSDK_DRAIN_DELAY": "1.5",
            "CHATSDK_LOG_LEVEL": "debug",
            "CHATSDK_UPLOAD_DIR": "/srv/chatsdk/uploads",
            "CHATSDK_ALLOWED_ORIGINS": "https://a.example, https://b.example/",
        }
    )
    assert settings.port == 9001
    assert settings.shutdown_timeout == 5.0
    assert settings.drain_delay == 1.5
    assert settings.log_level == "DEBUG"
    assert settings.upload_dir == Path("/srv/chatsdk/uploads")
    assert settings.allowed_origins == ("https://a.example", "https://b.example")


@pytest.mark.parametrize("name", sorted(VALID))
def test_a_missing_required_variable_is_named(name: str) -> None:
    env = {key: value for key, value in VALID.items() if key != name}
    with pytest.raises(SettingsError, match=f"^{name} is required"):
        Settings.from_env(env)


@pytest.mark.parametrize(
    ("name", "value", "expected"),
    [
        ("CHATSDK_PORT", "http", "integer port"),
        ("CHATSDK_PORT", "70000", "between 0 and 65535"),
        ("CHATSDK_DATABASE_URL", "mysql://db/x", "postgresql://"),
        ("CHATSDK_DATABASE_URL", "postgresql://u@primary:5432,standby:x/db", "does not parse"),
        ("CHATSDK_DATABASE_URL", "postgresql://u@primary:5432,/db", "with a host"),
        ("CHATSDK_REDIS_URL", "http://cache:6379", "redis://"),
        ("CHATSDK_ADMIN_KEY", "short", "at least 32 characters"),
        ("CHATSDK_JWT_SECRET", "x" * 31, "at least 32 characters"),
        ("CHATSDK_SHUTDOWN_TIMEOUT", "soon", "number of seconds"),
        ("CHATSDK_SHUTDOWN_TIMEOUT", "30", "between"),
        ("CHATSDK_DRAIN_DELAY", "-1", "between"),
        ("CHATSDK_LOG_LEVEL", "LOUD", "one of DEBUG"),
        ("CHATSDK_LOG_SERVER", "logstore", "must be host:port"),
        ("CHATSDK_WORKER_ID", "a b", "letters, digits"),
        ("CHATSDK_UPLOAD_DIR", "relative/dir", "absolute path"),
        ("CHATSDK_ALLOWED_ORIGINS", "chat.example.com", "origins like https://"),
        ("CHATSDK_AUTH_FAILURE_BURST", "0", "at least 1"),
        ("CHATSDK_AUTH_FAILURES_PER_ADDRESS", "many", "whole number of failures"),
        ("CHATSDK_AUTH_FAILURES_PER_CREDENTIAL", "1000000", "at most 100000"),
        ("CHATSDK_AUTH_THROTTLE_WINDOW", "0", "between"),
        ("CHATSDK_TRUSTED_PROXIES", "edge.internal", "addresses or networks"),
    ],
)
def test_a_bad_value_names_the_variable_and_the_expectation(
    name: str, value: str, expected: str
) -> None:
    with pytest.raises(SettingsError) as caught:
        Settings.from_env({**VALID, name: value})
    message = str(caught.value)
    assert message.startswith(name), message
    assert expected in message


def test_a_database_url_may_name_a_primary_and_its_standby() -> None:
    """libpq's multi-host form, which asyncpg tries in order (target_session_attrs)."""
    url = (
        f"postgresql://chatsdk:{DB_PASSWORD}@primary:5432,standby:5433/chatsdk"
        "?target_session_attrs=read-write"
    )
    assert Settings.from_env({**VALID, "CHATSDK_DATABASE_URL": url}).database_url == url
    assert hosts(url) == [("primary", 5432), ("standby", 5433)]


def test_auth_throttle_defaults_and_trusted_proxies() -> None:
    settings = Settings.from_env(VALID)
    assert (settings.auth_failure_burst, settings.auth_burst_window) == (25, 10.0)
    assert (settings.auth_failures_per_address, settings.auth_throttle_window) == (200, 600.0)
    assert settings.auth_failures_per_credential == 30
    assert [str(n) for n in settings.trusted_proxies] == ["127.0.0.0/8", "::1/128"]
    custom = Settings.from_env({**VALID, "CHATSDK_TRUSTED_PROXIES": "10.0.0.0/8, fd00::1"})
    assert [str(n) for n in custom.trusted_proxies] == ["10.0.0.0/8", "fd00::1/128"]
    assert Settings.from_env({**VALID, "CHATSDK_TRUSTED_PROXIES": "none"}).trusted_proxies == ()


def test_the_burst_window_fits_in_the_throttle_window() -> None:
    env = {**VALID, "CHATSDK_AUTH_BURST_WINDOW": "120", "CHATSDK_AUTH_THROTTLE_WINDOW": "60"}
    with pytest.raises(SettingsError, match="CHATSDK_AUTH_BURST_WINDOW must be at most"):
        Settings.from_env(env)


def test_the_drain_budget_is_enforced() -> None:
    with pytest.raises(SettingsError, match="CHATSDK_DRAIN_DELAY plus CHATSDK_SHUTDOWN_TIMEOUT"):
        Settings.from_env({**VALID, "CHATSDK_DRAIN_DELAY": "5", "CHATSDK_SHUTDOWN_TIMEOUT": "11"})


def test_settings_errors_share_the_package_root() -> None:
    assert issubclass(SettingsError, ChatSDKError)


def test_settings_are_frozen() -> None:
    settings = Settings.from_env(VALID)
    with pytest.raises(AttributeError):
        settings.port = 1  # type: ignore[misc]


@pytest.mark.parametrize("secret", [ADMIN_KEY, JWT_SECRET, DB_PASSWORD, REDIS_PASSWORD])
def test_secrets_never_appear_in_repr(secret: str) -> None:
    settings = Settings.from_env(VALID)
    assert secret not in repr(settings)
    assert secret not in str(settings)


def test_a_bad_url_error_does_not_echo_the_password() -> None:
    with pytest.raises(SettingsError) as caught:
        Settings.from_env({**VALID, "CHATSDK_DATABASE_URL": f"mysql://u:{DB_PASSWORD}@db/x"})
    assert DB_PASSWORD not in str(caught.value)


def test_replicas_sharing_a_configuration_report_their_host_names(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Without CHATSDK_WORKER_ID each worker takes its host name (a container's own), cut to
    what an id may hold; an explicit id is kept as given."""
    for host, expected in (("api-1", "api-1"), ("3f2a9c1d7e8b", "3f2a9c1d7e8b"), ("a b", "a-b")):
        monkeypatch.setattr(socket, "gethostname", lambda h=host: h)
        assert Settings.from_env(VALID).worker_id == expected == host_worker_id()
    assert Settings.from_env({**VALID, "CHATSDK_WORKER_ID": "1"}).worker_id == "1"
