"""The run record: one JSON document with everything a run decided, and its canonical digest.

The canonical form is the record without its `signatures`, serialised with sorted keys, no
insignificant whitespace and UTF-8; its sha256 is the record digest that the harness and every
stakeholder sign. Any edit to anything but the signatures changes the digest.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from functools import cache
from pathlib import Path
from typing import Any

from jsonschema import Draft202012Validator, ValidationError

from preflight.checklist import load_schema
from preflight.errors import PreflightError

RECORD_SCHEMA = "preflight.record/1"
RECORD_FILE = "record.json"
SHOWN_PROBLEMS = 3


class RecordInvalid(PreflightError):
    """A run record cannot be read or does not have the shape of a preflight record."""


def canonical_bytes(record: dict[str, Any]) -> bytes:
    body = {key: value for key, value in record.items() if key != "signatures"}
    return json.dumps(
        body, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
    ).encode()


def record_digest(record: dict[str, Any]) -> str:
    return hashlib.sha256(canonical_bytes(record)).hexdigest()


def evidence_digest(value: Any) -> str:
    """sha256 of one item's evidence in the same canonical JSON form."""
    text = json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(text.encode()).hexdigest()


def record_path(path: Path) -> Path:
    """A record file, or a run directory holding one."""
    return path / RECORD_FILE if path.is_dir() else path


def load_record(path: Path) -> dict[str, Any]:
    file = record_path(path)
    try:
        data = json.loads(file.read_text())
    except FileNotFoundError:
        raise RecordInvalid(f"{file}: no such run record") from None
    except (OSError, ValueError) as exc:
        raise RecordInvalid(f"{file}: not readable as JSON ({exc})") from None
    if not isinstance(data, dict) or data.get("schema") != RECORD_SCHEMA:
        found = data.get("schema") if isinstance(data, dict) else type(data).__name__
        raise RecordInvalid(f"{file}: not a {RECORD_SCHEMA} record (schema: {found!r})")
    validate_record(data, str(file))
    return data


def schema() -> dict[str, Any]:
    return load_schema("record")


@cache
def _validator() -> Draft202012Validator:
    return Draft202012Validator(schema())


def _error_key(error: ValidationError) -> list[tuple[int, int, str]]:
    return [(0, p, "") if isinstance(p, int) else (1, 0, str(p)) for p in error.absolute_path]


def _short(text: str, limit: int = 160) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."


def validate_record(record: object, where: str = "record") -> None:
    """Raise RecordInvalid naming the JSON path of the first problems against the schema."""
    errors = sorted(_validator().iter_errors(record), key=_error_key)
    if not errors:
        return
    shown = "; ".join(f"{e.json_path}: {_short(e.message)}" for e in errors[:SHOWN_PROBLEMS])
    more = len(errors) - SHOWN_PROBLEMS
    tail = f" (and {more} more)" if more > 0 else ""
    raise RecordInvalid(
        f"{where}: not a valid {RECORD_SCHEMA} record: {shown}{tail}; records are written by "
        "`preflight run` (preflight/schema/record.schema.json): re-run it rather than edit the file"
    )


def write_record(record: dict[str, Any], path: Path) -> None:
    """Write atomically (a reader never sees half a record), pretty-printed for review."""
    text = json.dumps(record, indent=1, sort_keys=True, ensure_ascii=False) + "\n"
    fd, tmp = tempfile.mkstemp(prefix=".record-", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as out:
            out.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
