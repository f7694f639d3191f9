"""Ids: a kind prefix and 80 random bits, so an id says what it names and cannot be guessed."""

from __future__ import annotations

import secrets


def new_id(prefix: str) -> str:
    return f"{prefix}_{secrets.token_hex(10)}"
