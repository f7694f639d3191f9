"""Guessing an HMAC-signed JWT's secret offline, as an attacker holding one genuine token would:
the known default and example values, then every word of a real dictionary (Debian's
`wamerican`, /usr/share/dict/words, which scripts/setup.sh installs) as it is, lower-cased and
capitalised, each bare and with the suffixes people append to satisfy a password rule (about a
million candidates). Each candidate costs one HMAC of the token's signing input (hmac.digest, no
JWT library per guess): about 3 s on an idle 2-core machine, about 10 s on a busy one."""

from __future__ import annotations

import base64
import hashlib
import hmac
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

DICTIONARY = Path("/usr/share/dict/words")
DICTIONARY_PACKAGE = "wamerican"
# Appended to every dictionary word ("summer" -> "summer2024", "Summer!").
SUFFIXES = ("", "1", "123", "!", "2024", "2025", "2026")
DIGESTS = {"HS256": hashlib.sha256, "HS384": hashlib.sha384, "HS512": hashlib.sha512}


@dataclass(frozen=True)
class Guess:
    """What one attempt established: the secret when a candidate verified the token, how many
    candidates were tried and how long that took."""

    secret: str | None
    tried: int
    seconds: float


def dictionary_words(path: Path = DICTIONARY) -> list[str] | None:
    """The dictionary's words, without its possessives ("dragon's": a third of wamerican, and
    not what people pick as a secret); None when it is not installed."""
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return None
    return [w for w in text.splitlines() if w and not w.endswith("'s")]


def variants(words: Iterable[str]) -> Iterator[str]:
    """Each word as it is, lower-cased and capitalised, each with every suffix (once each)."""
    for word in words:
        forms = dict.fromkeys((word, word.lower(), word[:1].upper() + word[1:].lower()))
        for form in forms:
            for suffix in SUFFIXES:
                yield form + suffix


def guess(token: str, alg: str, candidates: Iterable[str]) -> Guess:
    """Try each candidate as the HMAC key (`alg`: HS256, HS384 or HS512) of `token`'s signing
    input until one yields the token's own signature."""
    digest = DIGESTS[alg]
    signing_input, _, encoded = token.rpartition(".")
    message = signing_input.encode()
    signature = base64.urlsafe_b64decode(encoded + "=" * (-len(encoded) % 4))
    tried = 0
    started = time.perf_counter()
    for candidate in candidates:
        tried += 1
        if hmac.compare_digest(hmac.digest(candidate.encode(), message, digest), signature):
            return Guess(candidate, tried, time.perf_counter() - started)
    return Guess(None, tried, time.perf_counter() - started)
