"""What probes judge the target's stores by beyond what `target.pg` and `target.redis` give:
passwords that ship in documentation and images, what makes a configured secret weak, and
which addresses are this machine's own."""

from __future__ import annotations

from collections.abc import Iterable

# Passwords that ship in documentation, images and examples, tried against every account; a
# configured secret must not be one of them either.
WELL_KNOWN_PASSWORDS = (
    "",
    "postgres",
    "password",
    "admin",
    "root",
    "changeme",
    "secret",
    "chatsdk",
    "foobared",  # the example in redis.conf
    "redis",
    "minioadmin",
    "123456",
)
MIN_SECRET_LENGTH = 16
LOOPBACK_NAMES = frozenset({"localhost", "127.0.0.1", "::1"})


def is_loopback(address: str) -> bool:
    return address in LOOPBACK_NAMES or address.startswith("127.")


def weak_secret(value: str, extra: Iterable[str] = ()) -> str | None:
    """Why a configured secret is weak, or None: too short, or a well-known value."""
    if value.lower() in {*WELL_KNOWN_PASSWORDS, *extra}:
        return "a well-known value"
    if len(value) < MIN_SECRET_LENGTH:
        return f"{len(value)} characters, fewer than {MIN_SECRET_LENGTH}"
    return None
