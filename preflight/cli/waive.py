"""`preflight waive sign`: an approver signs a waiver of waivers.yaml with their key.

The signature covers the entry's canonical form (item, tests, message, justification, owner,
approver, granted, expires and the signer); any later edit of those makes `preflight waivers` and
`preflight run` refuse the file. The entry is edited in place: its `signature:` block (and a
`granted:` date when it has none) is written at its end, the rest of the file is kept as it is.
"""

from __future__ import annotations

import argparse
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import yaml

from preflight import checklist, signing, waivers
from preflight.cli._args import command_group
from preflight.errors import PreflightError
from preflight.statements import sign_statement
from preflight.yamlfile import line_of, read_yaml

EXIT_OK = 0


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add `waive sign`; it sets `handler=` (args -> exit code)."""
    actions = command_group(
        sub,
        "waive",
        help="sign a waiver of waivers.yaml as its approver",
        description="Waiver commands (see `preflight waivers` to validate and list them).",
        dest="waive_command",
    )
    sign = actions.add_parser(
        "sign",
        help="sign the waiver for ITEM with your key, registered for the waiver's approver role",
        description=(
            "Sign a waiver entry of the waivers file as its approver: the key must be registered "
            "for the entry's `approver` role in the key registry, and the approver must not be "
            "the owner. Writes the entry's `signature:` block (and `granted:` today when it has "
            "none), then validates the entry."
        ),
    )
    sign.add_argument("item", metavar="ITEM", help="the item id of the waiver to sign")
    sign.add_argument("--key", type=Path, required=True, metavar="KEY", help="your private key")
    sign.add_argument("--name", help="your name as shown (default: the registry's name)")
    sign.add_argument(
        "--line", type=int, metavar="N", help="the waiver's line, when ITEM has several"
    )
    sign.add_argument("--file", type=Path, default=waivers.DEFAULT_PATH, help="waivers.yaml")
    sign.add_argument(
        "--checklist",
        type=Path,
        default=checklist.DEFAULT_PATH,
        metavar="FILE",
        help="the checklist (default: %(default)s)",
    )
    sign.add_argument(
        "--keys", type=Path, default=signing.default_keys(), help="the public-key registry"
    )
    sign.set_defaults(handler=cmd_waive_sign)


def _entry_index(data: object, lines: dict[Any, int], item: str, line: int | None) -> int:
    entries = data if isinstance(data, list) else []
    found = [i for i, e in enumerate(entries) if isinstance(e, dict) and e.get("item") == item]
    if line is not None:
        found = [i for i in found if line_of(lines, (i,)) == line]
    if len(found) != 1:
        at = ", ".join(str(line_of(lines, (i,))) for i in found)
        what = f"{len(found)} waivers for {item}" + (f" (lines {at}; pass --line)" if at else "")
        raise PreflightError(f"cannot sign: {what}")
    return found[0]


def _without_signature(block: list[str]) -> list[str]:
    """The entry's lines without a `signature:` block (its key at two spaces of indent)."""
    kept: list[str] = []
    inside = False
    for text in block:
        indent = len(text) - len(text.lstrip(" "))
        if text.startswith("  signature:"):
            inside = True
            continue
        if inside and text.strip() and indent <= 2:
            inside = False
        if not inside:
            kept.append(text)
    return kept


def signed_text(
    text: str, start: int, end: int, signature: dict[str, str], granted: str | None
) -> str:
    """The file's text with lines [start, end) (1-based) of one entry signed."""
    lines = text.splitlines(keepends=True)
    block = _without_signature(lines[start - 1 : end - 1])
    body = len(block)
    while body and (not block[body - 1].strip() or block[body - 1].lstrip().startswith("#")):
        body -= 1  # comments after an entry belong to the next one
    added = yaml.safe_dump({"signature": signature}, sort_keys=False, width=1000)
    new = [f"  granted: '{granted}'\n"] if granted else []
    new += [f"  {line}\n" for line in added.splitlines()]
    if body and not block[body - 1].endswith("\n"):
        block[body - 1] += "\n"
    block[body:body] = new
    return "".join([*lines[: start - 1], *block, *lines[end - 1 :]])


def cmd_waive_sign(args: argparse.Namespace) -> int:
    items = checklist.load_checklist(args.checklist)
    registry = signing.load_registry(args.keys, must_exist=True)
    key = signing.load_private_key(args.key)
    data, lines = read_yaml(args.file, waivers.WaiversInvalid)
    index = _entry_index(data, lines, args.item, args.line)
    assert isinstance(data, list)
    entry: dict[str, Any] = data[index]
    approver, owner = str(entry.get("approver", "")), str(entry.get("owner", ""))
    if approver.strip().casefold() == owner.strip().casefold():
        raise PreflightError(f"cannot sign: the approver of {args.item} is its owner ({owner})")
    registered = registry.lookup(approver, signing.public_key_text(key))
    if registered is None:
        why = registry.not_registered(approver, signing.public_key_text(key))
        raise signing.NotRegistered(f"cannot sign the waiver approved by {approver}: {why}")
    granted = None if "granted" in entry else datetime.now(UTC).date().isoformat()
    fields = {**entry, "granted": entry.get("granted", granted), "signature": None}
    fields["signature"] = {"signer": args.name or registered.name}
    statement = sign_statement(waivers.signed_fields(fields), key)
    signature = {
        name: statement[name]
        for name in ("signer", "key_id", "public_key", "algorithm", "signature")
    }
    start = line_of(lines, (index,))
    following = [line_of(lines, (i,)) for i in range(index + 1, len(data))]
    text = args.file.read_text(encoding="utf-8")
    end = following[0] if following else len(text.splitlines()) + 1
    if not text.splitlines()[start - 1].startswith("- item:"):
        raise PreflightError(
            f"{args.file}:{start}: write the waiver in block style (`- item: ...` then one field "
            "a line, indented by two spaces) to sign it"
        )
    args.file.write_text(signed_text(text, start, end, signature, granted), encoding="utf-8")
    problems = _problems_of(args.file, items, registry, index)
    print(f"signed the waiver for {args.item} (line {start}) as {approver} ({signature['signer']})")
    print(f"with key {signature['key_id']}; wrote {args.file} (commit it)")
    if problems:
        print("but the waiver is not valid yet:\n  " + "\n  ".join(problems))
        return 2
    return EXIT_OK


def _problems_of(
    path: Path, items: checklist.Checklist, registry: signing.Registry, index: int
) -> list[str]:
    """The file's problems on the lines of entry `index` (the one just signed)."""
    data, lines = read_yaml(path, waivers.WaiversInvalid)
    count = len(data) if isinstance(data, list) else 0
    first = line_of(lines, (index,))
    last = line_of(lines, (index + 1,)) - 1 if index + 1 < count else 1 << 30
    try:
        waivers.read_waivers(path, items, registry)
    except waivers.WaiversInvalid as invalid:
        at = [(p, p.removeprefix(f"{path}:").split(":", 1)[0]) for p in invalid.problems]
        return [p for p, line in at if line.isdigit() and first <= int(line) <= last]
    return []
