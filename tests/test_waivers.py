"""waivers.yaml: a waiver accepts only the failures it names, only when its approver signed it with
a key registered for their role, for at most a year; bad entries are named with their line."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import pytest
import yaml
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from preflight.checklist import Checklist, Item, load_checklist
from preflight.cli import main
from preflight.decide import Decision, apply_waiver
from preflight.outcomes import Outcome, ProbeResult, combine
from preflight.signing import Registry, load_registry, register_key
from preflight.statements import sign_statement
from preflight.waivers import (
    Waiver,
    WaiversInvalid,
    load_waivers,
    signed_fields,
    waivers_for,
)

REPO = Path(__file__).resolve().parents[1]
NOW = datetime(2026, 12, 1, 12, tzinfo=UTC)
WS = "checks/security/test_websocket.py::test_protocol_violations_close_the_socket"
UNMASKED = f"{WS}[an unmasked frame]"


@pytest.fixture(scope="module")
def checklist() -> Checklist:
    return load_checklist(REPO / "checklist.yaml")


@pytest.fixture(scope="module")
def keys() -> dict[str, Ed25519PrivateKey]:
    return {role: Ed25519PrivateKey.generate() for role in ("cto", "security-lead", "dev-lead")}


@pytest.fixture
def registry(tmp_path: Path, keys: dict[str, Ed25519PrivateKey]) -> Registry:
    path = tmp_path / "keys.yaml"
    for role, key in keys.items():
        register_key(path, role, key, f"the {role}")
    return load_registry(path)


def entry(item: str = "SEC-WS-AUTH", **fields: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "item": item,
        "tests": [UNMASKED],
        "justification": "aiohttp's frame reader accepts unmasked frames; fixed upstream next.",
        "owner": "dev-lead",
        "approver": "security-lead",
        "granted": "2026-11-30",
        "expires": "2027-01-31",
    }
    return {k: v for k, v in {**base, **fields}.items() if v is not None}


def sign(data: dict[str, Any], key: Ed25519PrivateKey, signer: str = "Grace") -> dict[str, Any]:
    fields = signed_fields({**data, "signature": {"signer": signer}})
    statement = sign_statement(fields, key)
    names = ("signer", "key_id", "public_key", "algorithm", "signature")
    return {**data, "signature": {name: statement[name] for name in names}}


def write(tmp_path: Path, entries: list[dict[str, Any]] | str) -> Path:
    path = tmp_path / "waivers.yaml"
    text = entries if isinstance(entries, str) else yaml.safe_dump(entries, sort_keys=False)
    path.write_text(text)
    return path


def problems_of(path: Path, checklist: Checklist, registry: Registry) -> list[str]:
    with pytest.raises(WaiversInvalid) as raised:
        load_waivers(path, checklist, registry)
    assert str(path) in str(raised.value)
    return raised.value.problems


def only_problem(path: Path, checklist: Checklist, registry: Registry) -> str:
    (problem,) = problems_of(path, checklist, registry)
    return problem


# --- the file --------------------------------------------------------------------------------


def test_a_signed_scoped_waiver_loads(
    tmp_path: Path, checklist: Checklist, registry: Registry, keys: dict[str, Ed25519PrivateKey]
) -> None:
    path = write(tmp_path, [sign(entry(), keys["security-lead"])])
    (waiver,) = load_waivers(path, checklist, registry)
    assert (waiver.item, waiver.tests, waiver.approver, waiver.signer, waiver.line) == (
        "SEC-WS-AUTH",
        (UNMASKED,),
        "security-lead",
        "Grace",
        1,
    )
    assert (waiver.granted, waiver.expires) == (date(2026, 11, 30), date(2027, 1, 31))


def test_the_repository_waivers_file_is_valid_scoped_and_signed(checklist: Checklist) -> None:
    waivers = load_waivers(
        REPO / "waivers.yaml", checklist, load_registry(REPO / "signoff/keys.yaml")
    )
    assert waivers, "the bundled system's machine limits are waived"
    assert all(w.tests and w.signer and w.owner != w.approver for w in waivers)
    flakes = {"APP-GRACEFUL-SHUTDOWN", "DEP-ZERO-DOWNTIME", "RB-EXECUTE"}
    fixed = {"SEC-WS-AUTH", "SEC-AUTH-THROTTLE", "APP-SUPERVISED"}
    assert not {w.item for w in waivers} & (flakes | fixed)


def test_a_missing_file_means_no_waivers(
    tmp_path: Path, checklist: Checklist, registry: Registry
) -> None:
    assert load_waivers(tmp_path / "none.yaml", checklist, registry) == []


@pytest.mark.parametrize(
    ("waiver", "line", "problem"),
    [
        pytest.param(
            lambda keys: entry(),
            1,
            "waiver for SEC-WS-AUTH, field signature: is required: the approver signs the "
            "waiver with a key registered for their role (preflight waive sign)",
            id="unsigned",
        ),
        pytest.param(
            lambda keys: {**sign(entry(), keys["security-lead"]), "tests": [f"{WS}[*]"]},
            9,
            "waiver for SEC-WS-AUTH, field signature: is not valid: its signature does not match "
            "its content (edited after signing?)",
            id="edited-after-signing",
        ),
        pytest.param(
            lambda keys: sign(entry(approver="Dev-Lead"), keys["dev-lead"]),
            7,
            "waiver for SEC-WS-AUTH, field approver: must differ from the owner ('dev-lead'): "
            "a risk is accepted by a second person",
            id="self-approved",
        ),
        pytest.param(
            lambda keys: sign(
                entry("OPS-CHANNELS", tests=None, message="."), keys["security-lead"]
            ),
            1,
            "waiver for OPS-CHANNELS, field item: OPS-CHANNELS is verify: manual; "
            "a manual item is attested by its owner, not waived",
            id="manual-item",
        ),
    ],
)
def test_a_waiver_is_refused_naming_its_line_and_field(
    tmp_path: Path,
    checklist: Checklist,
    registry: Registry,
    keys: dict[str, Ed25519PrivateKey],
    *,
    waiver: Callable[[dict[str, Ed25519PrivateKey]], dict[str, Any]],
    line: int,
    problem: str,
) -> None:
    """Unsigned, edited after signing, self-approved, or of a manual item: each is refused."""
    path = write(tmp_path, [waiver(keys)])
    assert only_problem(path, checklist, registry) == f"{path}:{line}: {problem}"


def test_a_waiver_signed_by_a_key_of_another_role_is_refused(
    tmp_path: Path, checklist: Checklist, registry: Registry, keys: dict[str, Ed25519PrivateKey]
) -> None:
    """The owner (dev-lead) signs a waiver that names the security lead as its approver."""
    path = write(tmp_path, [sign(entry(), keys["dev-lead"])])
    problem = only_problem(path, checklist, registry)
    assert problem.startswith(
        f"{path}:10: waiver for SEC-WS-AUTH, field signature: does not count for approver "
        "security-lead: key "
    )
    assert problem.endswith(
        f"is not registered for security-lead in {registry.path} (it is registered for dev-lead)"
    )


def test_an_unregistered_key_is_refused(
    tmp_path: Path, checklist: Checklist, registry: Registry
) -> None:
    path = write(tmp_path, [sign(entry(), Ed25519PrivateKey.generate())])
    assert "is not registered for security-lead" in only_problem(path, checklist, registry)


def test_an_expiry_more_than_a_year_after_grant_is_refused(
    tmp_path: Path, checklist: Checklist, registry: Registry, keys: dict[str, Ed25519PrivateKey]
) -> None:
    ok = sign(entry(granted="2026-01-31", expires="2027-01-31"), keys["security-lead"])
    assert load_waivers(write(tmp_path, [ok]), checklist, registry)
    long = sign(entry(granted="2026-01-30", expires="2027-01-31"), keys["security-lead"])
    path = write(tmp_path, [long])
    assert only_problem(path, checklist, registry) == (
        f"{path}:9: waiver for SEC-WS-AUTH, field expires: is 366 days after granted "
        "(2026-01-30); a waiver lasts at most 365 days, then the risk is accepted again"
    )
    past = sign(entry(granted="2027-02-01"), keys["security-lead"])
    path = write(tmp_path, [past])
    assert only_problem(path, checklist, registry).endswith(
        "field expires: is before granted (2027-02-01): never valid"
    )


def test_overlapping_waivers_of_one_item_are_duplicates(
    tmp_path: Path, checklist: Checklist, registry: Registry, keys: dict[str, Ed25519PrivateKey]
) -> None:
    key = keys["security-lead"]
    first = sign(entry(), key)
    other_case = sign(entry(tests=[f"{WS}[a fragmented ping]"]), key)
    assert len(load_waivers(write(tmp_path, [first, other_case]), checklist, registry)) == 2
    pattern = sign(entry(tests=[f"{WS}[*]"]), key)
    path = write(tmp_path, [first, pattern])
    assert only_problem(path, checklist, registry) == (
        f"{path}:16: waiver for SEC-WS-AUTH, field item: duplicates the waiver at line 1: both "
        "accept the same failures of SEC-WS-AUTH (renew a waiver by replacing it)"
    )


def test_a_waiver_names_the_failures_it_accepts(
    tmp_path: Path, checklist: Checklist, registry: Registry, keys: dict[str, Ed25519PrivateKey]
) -> None:
    whole_item = sign(entry(tests=None), keys["security-lead"])
    path = write(tmp_path, [whole_item])
    assert "field tests: is required (or message)" in only_problem(path, checklist, registry)
    bad_regex = sign(entry(tests=None, message="unmasked ("), keys["security-lead"])
    path = write(tmp_path, [bad_regex])
    assert "field message: is not a regular expression" in only_problem(path, checklist, registry)


def test_unknown_fields_bad_dates_and_unknown_ids_are_each_named(
    tmp_path: Path, checklist: Checklist, registry: Registry
) -> None:
    path = write(
        tmp_path,
        """\
- item: SEC-NO-SUCH-ITEM
  tests: [x]
  justification: ''
  owner: dev-lead
  approver: cto
  granted: 2026-02-30
  expires: 31.12.2026
  ticket: OPS-1
""",
    )
    assert problems_of(path, checklist, registry) == [
        f"{path}:1: waiver for SEC-NO-SUCH-ITEM, field item: no item 'SEC-NO-SUCH-ITEM' in "
        f"{checklist.path}",
        f"{path}:1: waiver for SEC-NO-SUCH-ITEM, field signature: is required: the approver "
        "signs the waiver with a key registered for their role (preflight waive sign)",
        f"{path}:3: waiver for SEC-NO-SUCH-ITEM, field justification: must not be empty",
        f"{path}:6: waiver for SEC-NO-SUCH-ITEM, field granted: not a real date "
        "(day is out of range for month)",
        f"{path}:7: waiver for SEC-NO-SUCH-ITEM, field expires: must be a date YYYY-MM-DD "
        "(got '31.12.2026')",
        f"{path}:8: waiver for SEC-NO-SUCH-ITEM, field ticket: is not a known field",
    ]


def test_a_file_that_is_not_a_list_is_an_error(
    tmp_path: Path, checklist: Checklist, registry: Registry
) -> None:
    path = write(tmp_path, "item: SEC-HDR-HSTS\n")
    assert problems_of(path, checklist, registry) == [
        f"{path}:1: must be a list of waivers (an empty file or [] for none), got dict"
    ]


# --- applying a waiver -----------------------------------------------------------------------


def waiver(**fields: Any) -> Waiver:
    base: dict[str, Any] = {
        "item": "SEC-WS-AUTH",
        "justification": "aiohttp accepts unmasked frames.",
        "owner": "dev-lead",
        "approver": "security-lead",
        "expires": date(2027, 1, 31),
        "tests": (UNMASKED,),
    }
    return Waiver(**{**base, **fields})


def probe_decision(item: Item, *results: tuple[str, Outcome, str]) -> Decision:
    tests = tuple(
        ProbeResult(nodeid, (item.id,), outcome, message, 0.1)
        for nodeid, outcome, message in results
    )
    outcome, reason = combine(tests)
    return Decision(item, True, outcome, reason, tests)


@pytest.fixture(scope="module")
def ws_item(checklist: Checklist) -> Item:
    return next(i for i in checklist.items if i.id == "SEC-WS-AUTH")


def test_a_waiver_for_one_test_leaves_another_failing_test_of_the_item_red(
    ws_item: Item,
) -> None:
    unmasked = (UNMASKED, Outcome.FAIL, "the server kept the socket open after an unmasked frame")
    bypass = (
        "checks/security/test_websocket.py::test_a_socket_without_a_token_is_closed[empty-token]",
        Outcome.FAIL,
        "a socket with an empty token was subscribed",
    )
    only_unmasked = apply_waiver(probe_decision(ws_item, unmasked), [waiver()], NOW)
    assert only_unmasked.outcome is Outcome.WAIVED
    assert only_unmasked.reason.startswith(
        f"waived until 2027-01-31 by security-lead for {UNMASKED}"
    )

    both = apply_waiver(probe_decision(ws_item, unmasked, bypass), [waiver()], NOW)
    assert both.outcome is Outcome.FAIL
    assert "not waived: 1 failure no waiver accepts" in both.reason
    assert f"{bypass[0]} failed: a socket with an empty token was subscribed" in both.reason
    assert both.waiver is not None
    assert both.waiver["uncovered"] == [f"{bypass[0]} failed: {bypass[2]}"]


def test_patterns_messages_errors_and_expiry(ws_item: Item) -> None:
    fail = (f"{WS}[a fragmented ping]", Outcome.FAIL, "the ping was answered")
    error = (f"{WS}[an oversized message]", Outcome.ERROR, "the socket did not open")
    any_case = waiver(tests=(f"{WS}[*]",))
    assert apply_waiver(probe_decision(ws_item, fail), [any_case], NOW).outcome is Outcome.WAIVED
    by_message = waiver(tests=(), message="ping was answered$")
    assert apply_waiver(probe_decision(ws_item, fail), [by_message], NOW).outcome is Outcome.WAIVED
    other_message = waiver(tests=(), message="unmasked")
    assert apply_waiver(probe_decision(ws_item, fail), [other_message], NOW).outcome is Outcome.FAIL
    # brackets are literal: `[an unmasked frame]` is not a character class
    assert apply_waiver(probe_decision(ws_item, fail), [waiver()], NOW).outcome is Outcome.FAIL
    with_error = apply_waiver(probe_decision(ws_item, fail, error), [any_case], NOW)
    assert with_error.outcome is Outcome.FAIL
    assert "errored (a waiver covers only failures)" in with_error.reason
    expired = waiver(tests=(f"{WS}[*]",), expires=date(2026, 11, 30))
    assert apply_waiver(probe_decision(ws_item, fail), [expired], NOW).outcome is Outcome.FAIL


def test_a_waiver_is_active_until_the_end_of_its_day_utc() -> None:
    w = waiver(expires=date(2026, 6, 30))
    assert w.status(datetime(2026, 6, 30, 23, 59, 59, tzinfo=UTC)) == "active"
    assert w.status(datetime(2026, 7, 1, tzinfo=UTC)) == "expired"
    assert waivers_for("SEC-WS-AUTH", [w], datetime(2026, 7, 1, tzinfo=UTC)) == []
    later = waiver(expires=date(2026, 8, 1), tests=("x",))
    assert waivers_for("SEC-WS-AUTH", [w, later], datetime(2026, 6, 1, tzinfo=UTC)) == [later, w]


# --- preflight waive sign / preflight waivers ------------------------------------------------


def test_waive_sign_signs_as_the_approver_and_waivers_validates(
    tmp_path: Path,
    registry: Registry,
    keys: dict[str, Ed25519PrivateKey],
    capsys: pytest.CaptureFixture[str],
) -> None:
    def pem(role: str) -> Path:
        path = tmp_path / f"{role}.pem"
        path.write_bytes(
            keys[role].private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )
        return path

    unsigned = {k: v for k, v in entry().items() if k != "granted"}
    path = write(tmp_path, "# accepted failures\n" + yaml.safe_dump([unsigned], sort_keys=False))
    common = ["--file", str(path), "--keys", str(registry.path)]
    listing = ["waivers", str(path), "--keys", str(registry.path)]
    assert main(listing) == 2
    assert "field signature: is required" in capsys.readouterr().err
    assert main(["waive", "sign", "SEC-WS-AUTH", "--key", str(pem("dev-lead")), *common]) == 2
    assert "is not registered for security-lead" in capsys.readouterr().err
    assert main(["waive", "sign", "SEC-WS-AUTH", "--key", str(pem("security-lead")), *common]) == 0
    text = path.read_text()
    assert text.startswith("# accepted failures\n")
    assert "  granted: '" in text
    assert "  signature:\n    signer: the security-lead\n" in text
    capsys.readouterr()
    assert main(listing) == 0
    assert (
        "approved by security-lead (the security-lead) for " + UNMASKED in capsys.readouterr().out
    )
    assert main(["waive", "sign", "SEC-WS-AUTH", "--key", str(pem("security-lead")), *common]) == 0
    assert path.read_text().count("signature:") == 2, "re-signing replaces the signature"
