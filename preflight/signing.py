"""Ed25519 keys, the public-key registry per role, and signing and verifying run records."""

from __future__ import annotations

import base64
import binascii
import hashlib
import os
import sys
import tempfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TextIO

import yaml
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from preflight.errors import FileInvalid, PreflightError
from preflight.record import RECORD_SCHEMA, RecordInvalid, record_digest
from preflight.yamlfile import YamlPath, line_of, read_yaml

ALGORITHM = "ed25519"
HARNESS = "harness"
PANEL_ROLES = ("dev-lead", "ops-lead", "security-lead", "product-manager", "cto")
DEFAULT_KEYS = Path("signoff/keys.yaml")
KEYS_VARIABLE = "PREFLIGHT_KEYS"


def default_keys() -> Path:
    """The key registry the commands read unless given --keys: $PREFLIGHT_KEYS, so that a record
    downloaded anywhere can be verified, else signoff/keys.yaml of the current directory."""
    return Path(os.environ.get(KEYS_VARIABLE) or DEFAULT_KEYS)


RUN_KEY_ENV = "PREFLIGHT_RUN_KEY"
KEY_FIELDS = ("key_id", "public_key", "name")
SIGNATURE_FIELDS = (
    "role",
    "signer",
    "key_id",
    "public_key",
    "algorithm",
    "record_sha256",
    "signed_at",
    "signature",
)


class KeyFileInvalid(PreflightError):
    """A private key file cannot be written or read as an Ed25519 key."""


class RegistryInvalid(FileInvalid):
    noun = "key registry"


class NotRegistered(PreflightError):
    """A key is not registered for the role it is about to sign for."""


# --- keys -----------------------------------------------------------------------------------


def public_bytes(key: Ed25519PrivateKey | Ed25519PublicKey) -> bytes:
    public = key.public_key() if isinstance(key, Ed25519PrivateKey) else key
    return public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def public_key_text(key: Ed25519PrivateKey | Ed25519PublicKey) -> str:
    """Base64 of the raw 32-byte public key: how keys appear in the registry and signatures."""
    return base64.b64encode(public_bytes(key)).decode()


def key_id(public: bytes) -> str:
    """The first 16 hex digits of the sha256 of the raw public key."""
    return hashlib.sha256(public).hexdigest()[:16]


def decode_public_key(text: object) -> bytes:
    """Raw public key bytes from base64 text; ValueError saying what is wrong."""
    if not isinstance(text, str):
        raise ValueError(f"must be base64 text (got {type(text).__name__})")
    try:
        raw = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise ValueError(f"is not valid base64 ({text[:20]!r}...)") from None
    if len(raw) != 32:
        raise ValueError(f"must decode to the 32 bytes of an Ed25519 key (got {len(raw)})")
    return raw


def write_private_key(path: Path) -> Ed25519PrivateKey:
    """A new Ed25519 key as PKCS8 PEM with mode 0600; an existing file is never replaced."""
    key = Ed25519PrivateKey.generate()
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    exists = f"{path} already exists; refusing to overwrite a key (choose another --out)"
    if path.exists():
        raise KeyFileInvalid(exists)
    # Written whole to a private temp file, then linked into place: link() never replaces an
    # existing file, and nobody ever reads half a key.
    try:
        fd, tmp = tempfile.mkstemp(prefix=".key-", dir=path.parent)  # mode 0600
    except OSError as exc:
        raise KeyFileInvalid(f"{path}: cannot create the key file: {exc.strerror}") from None
    try:
        with os.fdopen(fd, "wb") as out:
            out.write(pem)
        os.link(tmp, path)
    except FileExistsError:
        raise KeyFileInvalid(exists) from None
    finally:
        Path(tmp).unlink(missing_ok=True)
    return key


def load_private_key(path: Path) -> Ed25519PrivateKey:
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise KeyFileInvalid(f"{path}: cannot read the private key: {exc.strerror}") from None
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except TypeError:
        raise KeyFileInvalid(
            f"{path} is encrypted; preflight reads unencrypted PKCS8 keys kept with mode 0600"
        ) from None
    except (ValueError, UnsupportedAlgorithm):
        raise KeyFileInvalid(
            f"{path} is not a PEM private key; create one with `preflight keygen --out FILE`"
        ) from None
    if not isinstance(key, Ed25519PrivateKey):
        raise KeyFileInvalid(f"{path} holds a {type(key).__name__}, not an Ed25519 key")
    return key


# --- the registry ---------------------------------------------------------------------------


@dataclass(frozen=True)
class RegisteredKey:
    role: str
    key_id: str
    public_key: str
    name: str
    line: int = field(default=0, compare=False)


@dataclass(frozen=True)
class Registry:
    path: Path
    roles: Mapping[str, tuple[RegisteredKey, ...]]

    def keys_for(self, role: str) -> tuple[RegisteredKey, ...]:
        return self.roles.get(role, ())

    def lookup(self, role: str, public_key: str) -> RegisteredKey | None:
        """The registry entry for this public key under this role, if there is one."""
        try:
            raw = decode_public_key(public_key)
        except ValueError:
            return None
        for entry in self.keys_for(role):
            if decode_public_key(entry.public_key) == raw:
                return entry
        return None

    def roles_of(self, public_key: str) -> list[str]:
        return [role for role in self.roles if self.lookup(role, public_key)]

    def not_registered(self, role: str, public_key: str) -> str:
        """One sentence on why a key does not count for a role ('' when it does)."""
        if self.lookup(role, public_key):
            return ""
        try:
            kid = key_id(decode_public_key(public_key))
        except ValueError:
            return "its public key is not a valid Ed25519 key"
        elsewhere = self.roles_of(public_key)
        also = f" (it is registered for {', '.join(elsewhere)})" if elsewhere else ""
        return f"key {kid} is not registered for {role} in {self.path}{also}"


def load_registry(path: Path = DEFAULT_KEYS, *, must_exist: bool = False) -> Registry:
    """Role -> registered keys; a missing file registers none (unless `must_exist`).
    RegistryInvalid names every bad entry with role, field and line."""
    if not path.exists():
        if not must_exist:
            return Registry(path=path, roles={})
        raise RegistryInvalid(
            path,
            [
                f"{path}: no such key registry (pass --keys FILE or set {KEYS_VARIABLE} to the "
                "repository's signoff/keys.yaml, or create one with keygen)"
            ],
        )
    data, lines = read_yaml(path, RegistryInvalid)
    roles, problems = _parse_registry(path, data, lines)
    if problems:
        raise RegistryInvalid(path, [message for _, message in sorted(problems)])
    return Registry(path=path, roles=roles)


def _parse_registry(
    path: Path, data: object, lines: dict[YamlPath, int]
) -> tuple[dict[str, tuple[RegisteredKey, ...]], list[tuple[int, str]]]:
    problems: list[tuple[int, str]] = []

    def problem(at: YamlPath, message: str) -> None:
        line = line_of(lines, at)
        problems.append((line, f"{path}:{line}: {message}"))

    if data is None:
        return {}, []
    if not isinstance(data, dict):
        problem((), f"must map each role to a list of keys (got {type(data).__name__})")
        return {}, problems
    roles: dict[str, tuple[RegisteredKey, ...]] = {}
    for role, entries in data.items():
        if not isinstance(role, str) or not role.strip():
            problem((str(role),), f"role {role!r}: role names must be non-empty text")
        elif not isinstance(entries, list | None):
            problem((role,), f"role {role}: must be a list of keys (got {type(entries).__name__})")
        else:
            found = [
                _registry_entry(role, i, e, lines, problem) for i, e in enumerate(entries or [])
            ]
            roles[role] = tuple(key for key in found if key)
    return roles, problems


def _registry_entry(
    role: str,
    index: int,
    entry: object,
    lines: dict[YamlPath, int],
    problem: Callable[[YamlPath, str], None],
) -> RegisteredKey | None:
    at: YamlPath = (role, index)
    label = f"role {role}, key #{index + 1}"
    if not isinstance(entry, dict):
        problem(at, f"{label}: must be a mapping with {', '.join(KEY_FIELDS)}")
        return None
    for name in [n for n in KEY_FIELDS if not isinstance(entry.get(n), str)]:
        problem((*at, name), f"{label}, field {name}: is required text")
    for name in [str(n) for n in entry if n not in KEY_FIELDS]:
        problem((*at, name), f"{label}, field {name}: is not a known field")
    try:
        raw = decode_public_key(entry.get("public_key"))
    except ValueError as exc:
        if isinstance(entry.get("public_key"), str):
            problem((*at, "public_key"), f"{label}, field public_key: {exc}")
        return None
    if isinstance(entry.get("key_id"), str) and entry["key_id"] != key_id(raw):
        problem(
            (*at, "key_id"),
            f"{label}, field key_id: {entry['key_id']!r} is not the id of its public key "
            f"({key_id(raw)})",
        )
    if not isinstance(entry.get("name"), str):
        return None
    return RegisteredKey(
        role=role,
        key_id=key_id(raw),
        public_key=entry["public_key"],
        name=entry["name"],
        line=line_of(lines, at),
    )


def _header_comment(path: Path) -> str:
    if not path.exists():
        return ""
    header: list[str] = []
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.startswith("#") or not line.strip():
            header.append(line)
        else:
            break
    return "\n".join(header).strip("\n") + "\n" if header else ""


def register_key(
    path: Path, role: str, public_key: Ed25519PublicKey | Ed25519PrivateKey, name: str
) -> RegisteredKey:
    """Add a key under a role (creating the role or the file); the header comment is kept, the
    rest is rewritten in the registry's own shape (comments further down are not)."""
    registry = load_registry(path)
    text = public_key_text(public_key)
    existing = registry.lookup(role, text)
    if existing:
        return existing
    entry = RegisteredKey(
        role=role, key_id=key_id(public_bytes(public_key)), public_key=text, name=name
    )
    roles = {r: list(keys) for r, keys in registry.roles.items()}
    roles.setdefault(role, []).append(entry)
    body = {r: [{n: getattr(k, n) for n in KEY_FIELDS} for k in keys] for r, keys in roles.items()}
    path.parent.mkdir(parents=True, exist_ok=True)
    text_out = _header_comment(path) + yaml.safe_dump(body, sort_keys=False, allow_unicode=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text_out, encoding="utf-8")
    tmp.replace(path)
    return entry


def registration_hint(role: str, key: Ed25519PrivateKey, registry: Path, name: str) -> str:
    kid = key_id(public_bytes(key))
    return (
        f"to register it, add under `{role}:` in {registry} (and commit it):\n"
        f"  - key_id: {kid}\n    public_key: {public_key_text(key)}\n    name: {name}"
    )


# --- record signatures ----------------------------------------------------------------------


def utc_stamp(moment: datetime | None = None) -> str:
    return (moment or datetime.now(UTC)).astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def signed_message(digest: str) -> bytes:
    return f"{RECORD_SCHEMA}:{digest}".encode()


def sign_record(
    record: dict[str, Any], role: str, private_key: Ed25519PrivateKey, signer: str
) -> dict[str, Any]:
    """The record with this signature added; an older one by the same key and role is replaced."""
    digest = record_digest(record)
    raw = public_bytes(private_key)
    entry = {
        "role": role,
        "signer": signer,
        "key_id": key_id(raw),
        "public_key": base64.b64encode(raw).decode(),
        "algorithm": ALGORITHM,
        "record_sha256": digest,
        "signed_at": utc_stamp(),
        "signature": base64.b64encode(private_key.sign(signed_message(digest))).decode(),
    }
    kept = [
        s
        for s in signatures_of(record)
        if not (
            isinstance(s, dict) and s.get("key_id") == entry["key_id"] and s.get("role") == role
        )
    ]
    return {**record, "signatures": [*kept, entry]}


def signatures_of(record: Mapping[str, Any]) -> list[Any]:
    signatures = record.get("signatures", [])
    if not isinstance(signatures, list):
        raise RecordInvalid(
            f"the record's signatures must be a list (got {type(signatures).__name__})"
        )
    return signatures


def required_roles_of(record: Mapping[str, Any]) -> list[str]:
    signoff = record.get("signoff")
    required = signoff.get("required") if isinstance(signoff, dict) else None
    if not isinstance(required, list) or not all(isinstance(r, str) for r in required):
        raise RecordInvalid("the record has no signoff.required list of roles")
    return required


@dataclass(frozen=True)
class SignatureVerdict:
    role: str
    signer: str
    key_id: str
    status: str  # valid | malformed | bad-signature | edited | unregistered-key | unpinned-key
    problem: str = ""  # one sentence, "" when valid

    @property
    def valid(self) -> bool:
        return self.status == "valid"


@dataclass(frozen=True)
class VerifyResult:
    digest: str
    signatures: tuple[SignatureVerdict, ...]
    missing: tuple[str, ...]  # the harness and required roles without a valid signature
    problems: tuple[str, ...]

    @property
    def ok(self) -> bool:
        return not self.problems


def _unreadable(entry: Mapping[str, Any]) -> str:
    """Why a signature entry cannot even be checked ('' when it can)."""
    missing = [name for name in SIGNATURE_FIELDS if not isinstance(entry.get(name), str)]
    if missing:
        return f"lacks {', '.join(missing)}"
    if entry["algorithm"] != ALGORITHM:
        return f"uses {entry['algorithm']!r}, not {ALGORITHM}"
    try:
        raw = decode_public_key(entry["public_key"])
        base64.b64decode(entry["signature"], validate=True)
    except (ValueError, binascii.Error) as exc:
        return f"is not readable ({exc})"
    if entry["key_id"] != key_id(raw):
        return f"names key {entry['key_id']} but carries key {key_id(raw)}"
    return ""


def signature_status(entry: Mapping[str, Any], digest: str) -> tuple[str, str]:
    """What a signature's own key says of it, before any registry is asked: valid, malformed,
    bad-signature (its key did not make it) or edited (it signs another version of the record
    whose digest is `digest`), with one sentence on what is wrong ('' when valid)."""
    role, signer = entry.get("role", "?"), entry.get("signer", "?")
    unreadable = _unreadable(entry)
    if unreadable:
        return "malformed", f"the signature by {role} {unreadable}"
    raw = decode_public_key(entry["public_key"])
    signature = base64.b64decode(entry["signature"])
    try:
        Ed25519PublicKey.from_public_bytes(raw).verify(
            signature, signed_message(entry["record_sha256"])
        )
    except InvalidSignature:
        return "bad-signature", f"the signature by {role} ({signer}) is not valid for its key"
    if entry["record_sha256"] != digest:
        return "edited", (
            f"the record was edited after it was signed by {role} ({signer}): it signed "
            f"{entry['record_sha256'][:16]}..., the record is now {digest[:16]}..."
        )
    return "valid", ""


def _judge(
    entry: dict[str, Any], digest: str, registry: Registry | None, allow_unpinned: bool
) -> tuple[str, str]:
    status, problem = signature_status(entry, digest)
    if status != "valid" or registry is None:
        return status, problem
    role, signer = entry["role"], entry["signer"]
    if role == HARNESS and not registry.keys_for(HARNESS):
        if allow_unpinned:
            return "valid", ""
        return "unpinned-key", (
            f"the harness signature ({signer}) does not count: {unpinned_harness(registry)}; "
            f"{PIN_HINT}"
        )
    why = registry.not_registered(role, entry["public_key"])
    if why:
        return "unregistered-key", f"the signature by {role} ({signer}) does not count: {why}"
    return "valid", ""


def unpinned_harness(registry: Registry) -> str:
    """Why a registry that pins no harness key proves nothing ('' when it pins one)."""
    if registry.keys_for(HARNESS):
        return ""
    return (
        f"{registry.path} pins no harness key (`{HARNESS}:` lists none), so any freshly made key "
        "can re-sign an edited record as the harness"
    )


PIN_HINT = "pin CI's run key under `harness:` (ci/README.md) or pass --allow-unpinned-harness"


def _check_signature(
    entry: object, digest: str, registry: Registry | None, allow_unpinned: bool
) -> SignatureVerdict:
    if not isinstance(entry, dict):
        return SignatureVerdict("?", "?", "?", "malformed", "a signature entry is not an object")
    status, problem = _judge(entry, digest, registry, allow_unpinned)
    return SignatureVerdict(
        role=str(entry.get("role", "?")),
        signer=str(entry.get("signer", "?")),
        key_id=str(entry.get("key_id", "?")),
        status=status,
        problem=problem,
    )


def verify_record(
    record: Mapping[str, Any],
    registry: Registry | None,
    required_roles: Sequence[str] | None = None,
    *,
    allow_unpinned_harness: bool = False,
) -> VerifyResult:
    """Check every signature; the harness and each required role (by default the record's
    signoff.required) need a valid one. With a registry, each key must be registered for the
    role it signs as, the harness's too: a registry that pins no harness key makes the harness
    signature count only with `allow_unpinned_harness`. Without one (the report), each
    signature is judged by the key it carries alone."""
    required = list(required_roles) if required_roles is not None else required_roles_of(record)
    digest = record_digest(dict(record))
    verdicts = tuple(
        _check_signature(e, digest, registry, allow_unpinned_harness) for e in signatures_of(record)
    )
    problems = [v.problem for v in verdicts if v.problem]
    signed = {v.role for v in verdicts if v.valid}
    missing: list[str] = []
    for role in [HARNESS, *(r for r in required if r != HARNESS)]:
        if role in signed:
            continue
        missing.append(role)
        tried = any(v.role == role for v in verdicts)
        what = "the harness" if role == HARNESS else f"required role {role}"
        problems.append(f"{what} has {'no valid' if tried else 'no'} signature")
    return VerifyResult(digest, verdicts, tuple(missing), tuple(problems))


# --- the harness run key --------------------------------------------------------------------


def default_run_key_path() -> Path:
    state = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(state) / "preflight" / "run-key.pem"


def harness_key(path: Path | None = None) -> Ed25519PrivateKey:
    """The key `preflight run` signs with: at `path`, else the PEM file PREFLIGHT_RUN_KEY names,
    else $XDG_STATE_HOME/preflight/run-key.pem; created (0600) on first use. A key created by
    mistake (a typo in the variable) is caught by `verify`: it counts pinned harness keys only."""
    if path is None:
        named = os.environ.get(RUN_KEY_ENV)
        path = Path(named) if named else default_run_key_path()
    if path.exists():
        return load_private_key(path)
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    try:
        return write_private_key(path)
    except KeyFileInvalid:
        if path.exists():  # another run created it at the same moment
            return load_private_key(path)
        raise


def warn_unpinned_harness(path: Path, stream: TextIO | None = None) -> None:
    """What every `preflight run` says while the registry at `path` pins no harness key (nothing
    when it pins one, or cannot be read: the run has said so already)."""
    try:
        registry = load_registry(path)
    except PreflightError:
        return
    why = unpinned_harness(registry)
    if why:
        print(
            f"preflight: WARNING: {why}; `preflight verify` refuses its records until CI's run "
            f"key is pinned under `{HARNESS}:` (ci/README.md)",
            file=stream or sys.stderr,
        )


def sign_as_harness(
    record: dict[str, Any], signer: str, key: Ed25519PrivateKey | None = None
) -> dict[str, Any]:
    return sign_record(record, HARNESS, key or harness_key(), signer)
