"""`preflight keygen`, `sign`, `verify`, `attest` and `waivers`: the sign-off commands."""

from __future__ import annotations

import argparse
import difflib
import sys
from datetime import UTC, date, datetime
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from preflight import attestations, checklist, release, signing, waivers
from preflight.errors import PreflightError
from preflight.final_verdict import BROKEN, final_verdict
from preflight.record import load_record, record_path, write_record
from preflight.report import write_reports

EXIT_OK, EXIT_FAILED = 0, 1
UNPINNED_HELP = (
    "accept a harness signature by any key when the registry pins none (`harness: []`); "
    "anyone can then re-sign an edited record as the harness"
)


def _date(text: str) -> date:
    try:
        return date.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a date YYYY-MM-DD (got {text!r})") from None


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add this module's subcommands; each sets `handler=` (args -> exit code)."""
    keys_help = (
        f"the public-key registry (default: ${signing.KEYS_VARIABLE}, else {signing.DEFAULT_KEYS})"
    )

    keygen = sub.add_parser(
        "keygen",
        help="create an Ed25519 signing key (and register its public key for a role)",
        description=(
            "Write a new Ed25519 private key (PKCS8 PEM, mode 0600; never overwrites) and print "
            "its public key and key id. With --register, add the public key under --role in the "
            "registry; commit the registry, never the private key."
        ),
    )
    keygen.add_argument("--out", type=Path, required=True, metavar="FILE", help="private key file")
    keygen.add_argument("--role", help="the role the key signs for (e.g. ops-lead)")
    keygen.add_argument("--name", help="the person (or CI job) holding the key")
    keygen.add_argument("--register", action="store_true", help="add it to the registry")
    keygen.add_argument("--keys", type=Path, default=signing.default_keys(), help=keys_help)
    keygen.add_argument(
        "--checklist",
        type=Path,
        default=checklist.DEFAULT_PATH,
        metavar="FILE",
        help="the checklist whose owner roles --role must name (default: %(default)s)",
    )
    keygen.set_defaults(handler=cmd_keygen)

    sign = sub.add_parser(
        "sign",
        help="add your signature for a role to a run record",
        description=(
            "Sign a run record's digest for a role with your key, which must be registered for "
            "that role; your signature decides that role's SIGN-* item. Refuses a record whose "
            "existing signatures show it was edited, or that no pinned harness key signed. "
            "Rewrites the record atomically."
        ),
    )
    sign.add_argument("record", type=Path, metavar="RECORD", help="record.json or a run directory")
    sign.add_argument("--role", required=True, help="the role you sign for")
    sign.add_argument("--key", type=Path, required=True, metavar="KEY", help="your private key")
    sign.add_argument("--name", help="your name as shown (default: the registry's name)")
    sign.add_argument("--keys", type=Path, default=signing.default_keys(), help=keys_help)
    sign.add_argument("--allow-unpinned-harness", action="store_true", help=UNPINNED_HELP)
    sign.set_defaults(handler=cmd_sign)

    verify = sub.add_parser(
        "verify",
        help="the release verdict: the run's verdict, the record's integrity and its signatures",
        description=(
            "Print the run's verdict, whether the record is intact (every signature signs this "
            "very record), each signature checked against the keys registered for its role, and "
            "the roles signed and missing. Exit 0 only when the record is intact, the run READY "
            "and every role in signoff.required signed; 1 otherwise; 2 when the record or the "
            "registry cannot be read, or the registry pins no harness key (unless "
            "--allow-unpinned-harness)."
        ),
    )
    verify.add_argument(
        "record", type=Path, metavar="RECORD", help="record.json or a run directory"
    )
    verify.add_argument("--keys", type=Path, default=signing.default_keys(), help=keys_help)
    verify.add_argument("--allow-unpinned-harness", action="store_true", help=UNPINNED_HELP)
    verify.set_defaults(handler=cmd_verify)

    attest = sub.add_parser(
        "attest",
        help="sign a statement that a manual checklist item holds, until a date",
        description=(
            "Write a signed attestation for a `verify: manual` item into the attestations "
            "directory. It decides the item only when signed with a key registered for the "
            f"item's owner role and not expired (at most {attestations.MAX_DAYS} days ahead)."
        ),
    )
    attest.add_argument("item", metavar="ITEM", help="the checklist item id")
    attest.add_argument("--key", type=Path, required=True, metavar="KEY", help="your private key")
    attest.add_argument(
        "--expires", type=_date, required=True, metavar="YYYY-MM-DD", help="last valid day (UTC)"
    )
    attest.add_argument("--note", required=True, help="what you checked, in a sentence")
    attest.add_argument("--role", help="the role you attest as (default: the item's owner)")
    attest.add_argument("--name", help="your name as shown (default: the registry's name)")
    attest.add_argument(
        "--checklist",
        type=Path,
        default=checklist.DEFAULT_PATH,
        metavar="FILE",
        help="the checklist (default: %(default)s)",
    )
    attest.add_argument(
        "--dir",
        type=Path,
        default=attestations.DEFAULT_DIR,
        metavar="DIR",
        help="where the statement is written (default: %(default)s)",
    )
    attest.add_argument("--keys", type=Path, default=signing.default_keys(), help=keys_help)
    attest.set_defaults(handler=cmd_attest)

    listing = sub.add_parser(
        "attestations",
        help="list every item an attestation decides, with the one that does, or why none does",
        description=(
            "For each item an attestation decides (`verify: manual`, or `attest: true` beside "
            "its probes): the newest valid attestation for this release (who, until when), "
            "else why the newest one does not count (expired, wrong role, unregistered key, bad "
            "signature, another release) or that there is none. Exit 0."
        ),
    )
    listing.add_argument(
        "--checklist",
        type=Path,
        default=checklist.DEFAULT_PATH,
        metavar="FILE",
        help="the checklist (default: %(default)s)",
    )
    listing.add_argument(
        "--dir",
        type=Path,
        default=attestations.DEFAULT_DIR,
        metavar="DIR",
        help="the attestations directory (default: %(default)s)",
    )
    listing.add_argument("--keys", type=Path, default=signing.default_keys(), help=keys_help)
    listing.set_defaults(handler=cmd_attestations)

    waiver_list = sub.add_parser(
        "waivers",
        help="validate waivers.yaml and list each waiver with its status",
        description="Validate the waivers file (exit 2 naming every problem) and list waivers.",
    )
    waiver_list.add_argument(
        "file",
        nargs="?",
        type=Path,
        default=waivers.DEFAULT_PATH,
        metavar="FILE",
        help="the waivers file (default: %(default)s)",
    )
    waiver_list.add_argument(
        "--checklist",
        type=Path,
        default=checklist.DEFAULT_PATH,
        metavar="FILE",
        help="the checklist (default: %(default)s)",
    )
    waiver_list.add_argument("--keys", type=Path, default=signing.default_keys(), help=keys_help)
    waiver_list.set_defaults(handler=cmd_waivers)


def cmd_keygen(args: argparse.Namespace) -> int:
    if args.register and not (args.role and args.name):
        raise PreflightError("keygen --register needs --role and --name (who holds the key)")
    if args.role:
        _known_role(args.role, args.checklist)
    key = signing.write_private_key(args.out)
    print(f"wrote private key {args.out} (mode 0600: keep it private, never commit it)")
    print(f"public key  {signing.public_key_text(key)}")
    print(f"key id      {signing.key_id(signing.public_bytes(key))}")
    if args.register:
        signing.register_key(args.keys, args.role, key, args.name)
        print(f"registered for {args.role} as {args.name} in {args.keys} (commit it)")
    elif args.role:
        print(signing.registration_hint(args.role, key, args.keys, args.name or "YOUR NAME"))
    return EXIT_OK


def _known_role(role: str, path: Path) -> None:
    """A key registered for a role no checklist item names could never decide anything: refuse
    it before writing the key, suggesting the nearest role."""
    owners = {item.owner for item in checklist.load_checklist(path).items}
    roles = sorted(owners | {signing.HARNESS})
    if role in roles:
        return
    near = difflib.get_close_matches(role, roles, n=1)
    hint = f"; did you mean {near[0]}?" if near else ""
    raise PreflightError(f"--role {role} is not a role of {path}{hint} (roles: {', '.join(roles)})")


def _registered(
    registry: signing.Registry, role: str, key: Ed25519PrivateKey
) -> signing.RegisteredKey:
    entry = registry.lookup(role, signing.public_key_text(key))
    if entry is None:
        why = registry.not_registered(role, signing.public_key_text(key))
        hint = signing.registration_hint(role, key, registry.path, "YOUR NAME")
        raise signing.NotRegistered(f"{why}; {hint}")
    return entry


def _warn(message: str) -> None:
    print(f"preflight: WARNING: {message}", file=sys.stderr)


def _unpinned(registry: signing.Registry, allowed: bool, doing: str) -> None:
    """Refuse (or, when allowed, warn loudly) when the registry pins no harness key."""
    why = signing.unpinned_harness(registry)
    if not why:
        return
    if not allowed:
        raise PreflightError(f"refusing to {doing}: {why}; {signing.PIN_HINT}")
    _warn(
        f"{registry.path} pins no harness key and --allow-unpinned-harness accepts a harness "
        "signature by any key: an edited record re-signed with a fresh key passes as a run's"
    )


def cmd_sign(args: argparse.Namespace) -> int:
    path = record_path(args.record)
    record = load_record(path)
    required = signing.required_roles_of(record)
    if args.role not in required:
        # The harness signs in `preflight run`; any other role is not part of this sign-off.
        raise PreflightError(
            f"--role {args.role} is not a sign-off role of {path} (required: {', '.join(required)})"
        )
    registry = signing.load_registry(args.keys, must_exist=True)
    _unpinned(registry, args.allow_unpinned_harness, f"sign {path}")
    key = signing.load_private_key(args.key)
    entry = _registered(registry, args.role, key)
    before = signing.verify_record(
        record, registry, allow_unpinned_harness=args.allow_unpinned_harness
    )
    # Decision: refuse rather than warn. A signature says "I reviewed this record"; adding one to
    # a record that no longer matches earlier signatures (or that no pinned run key signed) would
    # endorse content nobody can trace to a run, and verify fails on it anyway.
    broken = [v for v in before.signatures if v.status in BROKEN]
    if broken or signing.HARNESS in before.missing:
        reasons = [v.problem for v in broken]
        if signing.HARNESS in before.missing:
            harness = [v.problem for v in before.signatures if v.role == signing.HARNESS]
            reasons += [p for p in harness if p and p not in reasons] or [
                "it has no valid harness signature (was it written by preflight run?)"
            ]
        print(
            f"preflight: refusing to sign {path}: " + "; ".join(reasons) + " (see preflight "
            "verify); sign a record produced by preflight run, unedited",
            file=sys.stderr,
        )
        return EXIT_FAILED
    signer = args.name or entry.name
    signed = signing.sign_record(record, args.role, key, signer)
    write_record(signed, path)
    release = final_verdict(signed, registry, allow_unpinned_harness=args.allow_unpinned_harness)
    print(f"signed {path} as {args.role} ({signer}) with key {entry.key_id}")
    if (path.parent / "report.html").exists():
        # The report beside the record shows the new signature in its banner and panel.
        written = write_reports(signed, path.parent)
        print(f"re-rendered {', '.join(str(p) for p in written)}")
    print(f"record sha256 {release.result.digest}; {release.roles_text()}")
    print(release.summary())
    return EXIT_OK


def cmd_verify(args: argparse.Namespace) -> int:
    record = load_record(args.record)
    registry = signing.load_registry(args.keys, must_exist=True)
    _unpinned(registry, args.allow_unpinned_harness, f"verify {record_path(args.record)}")
    release = final_verdict(record, registry, allow_unpinned_harness=args.allow_unpinned_harness)
    print(f"{'run verdict':<17} {release.run_verdict}")
    print(f"{'integrity':<17} {release.integrity_text()}")
    for verdict in release.result.signatures:
        label = "ok" if verdict.valid else verdict.status.upper()
        line = f"{label:<17} {verdict.role:<16} {verdict.signer}  key {verdict.key_id}"
        print(f"{line}: {verdict.problem}" if verdict.problem else line)
    for role in release.result.missing:
        print(f"{'MISSING':<17} {role:<16} no valid signature")
    print(f"{'roles':<17} {release.roles_text()}")
    if release.ok:
        print(f"VERIFIED - {release.summary()}")
        return EXIT_OK
    print(f"NOT VERIFIED - {release.summary()}")
    return EXIT_FAILED


def cmd_attest(args: argparse.Namespace) -> int:
    items = checklist.load_checklist(args.checklist)
    item = attestations.find_item(items, args.item)
    role = args.role or item.owner
    registry = signing.load_registry(args.keys, must_exist=True)
    key = signing.load_private_key(args.key)
    entry = _registered(registry, role, key)
    if role != item.owner:
        print(
            f"preflight: warning: {item.id} is owned by {item.owner}; an attestation by {role} "
            "is recorded but does not decide it",
            file=sys.stderr,
        )
    statement = attestations.create_attestation(
        item,
        key,
        role=role,
        signer=args.name or entry.name,
        note=args.note,
        expires=args.expires,
        release=release.current_release(args.checklist),
    )
    path = attestations.write_attestation(statement, args.dir)
    print(f"attested {item.id} ({item.title}) as {role} ({statement['signer']})")
    print(f"for release {release.label(statement['release'])} only")
    print(f"valid until {statement['expires']}; wrote {path} (commit it)")
    return EXIT_OK


def cmd_attestations(args: argparse.Namespace) -> int:
    loaded = checklist.load_checklist(args.checklist)
    registry = signing.load_registry(args.keys)
    found = attestations.load_attestations(args.dir)
    current = release.current_release(args.checklist)
    now = datetime.now(UTC)
    manual = [item for item in loaded.items if item.verify == "manual" or item.attest]
    width = max((len(item.id) for item in manual), default=0)
    valid = 0
    for item in manual:
        verdict = attestations.evaluate_attestation(item, found, registry, now, current)
        valid += verdict.valid
        print(f"{verdict.status:<16} {item.id:<{width}}  owner {item.owner}: {verdict.reason}")
    print(f"{args.dir}: {valid} of {len(manual)} items attested for this release")
    return EXIT_OK


def cmd_waivers(args: argparse.Namespace) -> int:
    registry = signing.load_registry(args.keys)
    found = waivers.load_waivers(args.file, checklist.load_checklist(args.checklist), registry)
    now = datetime.now(UTC)
    for waiver in found:
        print(
            f"{waiver.status(now):<8} {waiver.item}  until {waiver.expires}  owner {waiver.owner}, "
            f"approved by {waiver.approver} ({waiver.signer}) for {waiver.scope()}: "
            f"{waiver.justification}"
        )
    active = len([w for w in found if w.active(now)])
    print(f"{args.file}: {len(found)} waivers, {active} active, {len(found) - active} expired")
    return EXIT_OK
