"""One exception root for chatsdk; every message says what is wrong and what is expected."""

from __future__ import annotations


class ChatSDKError(Exception):
    """Root of every error chatsdk raises on purpose."""


class SettingsError(ChatSDKError):
    """An environment variable is missing or has a bad value; the message names the variable."""


class MigrationError(ChatSDKError):
    """The migration files or the recorded migrations are inconsistent."""


class MigrationChecksumMismatch(MigrationError):
    """An already applied migration was changed after it was applied."""
