"""Signed statements (attestations and waivers): the fields of a statement are signed with an
Ed25519 key in the record's canonical JSON form, and carry the key that signed them.

One signer and one checker for both kinds: `sign_statement` adds `key_id`, `public_key`,
`algorithm` and `signature` to the fields; `statement_problem` says why a signature does not hold.
Whether the key counts for a role is the registry's to say (`Registry.not_registered`).
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Mapping
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from preflight.record import canonical_bytes
from preflight.signing import ALGORITHM, decode_public_key, key_id, public_bytes

SIGNED_BY = ("key_id", "public_key", "algorithm")  # what a signature adds besides itself


def signed_bytes(statement: Mapping[str, Any]) -> bytes:
    """The statement without its signature, in the record's canonical JSON form."""
    return canonical_bytes({k: v for k, v in statement.items() if k != "signature"})


def sign_statement(fields: Mapping[str, Any], private_key: Ed25519PrivateKey) -> dict[str, Any]:
    """The fields with the signing key and an Ed25519 signature over all of them."""
    raw = public_bytes(private_key)
    statement: dict[str, Any] = {
        **fields,
        "key_id": key_id(raw),
        "public_key": base64.b64encode(raw).decode(),
        "algorithm": ALGORITHM,
    }
    signature = private_key.sign(signed_bytes(statement))
    return {**statement, "signature": base64.b64encode(signature).decode()}


def statement_problem(statement: Mapping[str, Any]) -> str:
    """Why the statement's signature does not hold ('' when it does)."""
    missing = [n for n in (*SIGNED_BY, "signature") if not isinstance(statement.get(n), str)]
    if missing:
        return f"it lacks {', '.join(missing)}"
    if statement["algorithm"] != ALGORITHM:
        return f"it uses {statement['algorithm']!r}, not {ALGORITHM}"
    try:
        raw = decode_public_key(statement["public_key"])
        signature = base64.b64decode(statement["signature"], validate=True)
    except (ValueError, binascii.Error) as exc:
        return f"its key or signature is not readable ({exc})"
    if key_id(raw) != statement["key_id"]:
        return f"it names key {statement['key_id']} but carries key {key_id(raw)}"
    try:
        Ed25519PublicKey.from_public_bytes(raw).verify(signature, signed_bytes(statement))
    except InvalidSignature:
        return "its signature does not match its content (edited after signing?)"
    return ""
