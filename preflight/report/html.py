"""The HTML report: one self-contained file rendered once from a run record with Jinja2.

Everything the template shows is prepared here (counts, groups, evidence, signature states), so
the template only lays it out. Autoescape is on; the only unescaped text is our own CSS and
script, which a Content-Security-Policy pins by hash so nothing else can run or load.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import struct
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from functools import cache
from importlib import resources
from typing import Any

from jinja2 import Environment, PackageLoader, StrictUndefined
from markupsafe import Markup

from preflight.checklist import AREAS
from preflight.diff import Change, order
from preflight.evidence import IMAGE_MAGIC
from preflight.final_verdict import EDITED, SIGNED, FinalVerdict, final_verdict
from preflight.outcomes import OUTCOMES, Outcome
from preflight.record import record_digest
from preflight.report.charts import load_charts, outcome_chart
from preflight.scope import verdict_label, verdict_line
from preflight.signing import signature_status

TEMPLATE = "report.html.j2"
ROLE_NAMES = {
    "dev-lead": "Dev lead",
    "ops-lead": "Ops lead",
    "security-lead": "Security lead",
    "product-manager": "Product manager",
    "cto": "CTO",
    "harness": "Harness",
}
# Within a group, the items that need attention come first.
ATTENTION = (
    Outcome.FAIL,
    Outcome.ERROR,
    Outcome.UNVERIFIED,
    Outcome.SKIP,
    Outcome.WAIVED,
    Outcome.ATTESTED,
    Outcome.PASS,
)
TEXT_TYPES = (
    "application/json",
    "application/xml",
    "application/yaml",
    "application/x-yaml",
    "application/x-ndjson",
    "application/javascript",
)
# What the report shows for each status of signing.signature_status: state, then its words.
SIGNATURE_STATES = {
    "valid": ("valid", "signature matches this record"),
    "edited": ("stale", "signed a different version of this record"),
    "bad-signature": ("invalid", "signature does not match its public key"),
    "malformed": ("invalid", "signature does not match its public key"),
}
SCREENSHOT_MIN_WIDTH = 160
_JPEG_FRAMES = frozenset(
    {0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF}
)


def image_size(raw: bytes, media_type: str) -> tuple[int, int]:
    """Width and height from a PNG, GIF or JPEG header; (0, 0) when it cannot tell."""
    if media_type == "image/png" and len(raw) >= 24:
        width, height = struct.unpack(">II", raw[16:24])
        return width, height
    if media_type == "image/gif" and len(raw) >= 10:
        width, height = struct.unpack("<HH", raw[6:10])
        return width, height
    if media_type == "image/jpeg":
        pos = 2
        while pos + 9 <= len(raw) and raw[pos] == 0xFF:
            marker = raw[pos + 1]
            (length,) = struct.unpack(">H", raw[pos + 2 : pos + 4])
            if marker in _JPEG_FRAMES:
                height, width = struct.unpack(">HH", raw[pos + 5 : pos + 9])
                return width, height
            pos += 2 + length
    return 0, 0


@dataclass(frozen=True)
class EvidenceView:
    kind: str  # request | figure | note | text | image | binary | other
    heading: str
    text: str = ""
    headers: tuple[tuple[str, str], ...] = ()
    extra: tuple[tuple[str, str], ...] = ()
    data_uri: str = ""
    problem: str = ""
    width: int = 0  # images: their size, so the report lays them out before they decode
    height: int = 0

    @property
    def screenshot(self) -> bool:
        """Large images (screenshots) scale smoothly; small ones keep their pixels."""
        return self.width >= SCREENSHOT_MIN_WIDTH


@dataclass(frozen=True)
class TestView:
    nodeid: str
    outcome: str
    message: str
    duration_s: float
    evidence: tuple[EvidenceView, ...]


@dataclass(frozen=True)
class ItemView:
    data: Mapping[str, Any]
    tests: tuple[TestView, ...]
    figures: tuple[tuple[str, str], ...]
    open: bool
    signoff: str = ""  # a sign-off item: whether its role has signed this record


@dataclass(frozen=True)
class Group:
    key: str
    heading: str
    items: tuple[ItemView, ...]
    collapsed: bool = False


@dataclass(frozen=True)
class SignatureView:
    role: str
    signer: str
    key_id: str
    signed_at: str
    state: str  # valid | stale | invalid
    state_text: str


@dataclass(frozen=True)
class RoleView:
    role: str
    name: str
    signatures: tuple[SignatureView, ...]

    @property
    def signed(self) -> bool:
        return any(s.state == "valid" for s in self.signatures)


@dataclass(frozen=True)
class ChangeView:
    id: str
    title: str
    kind: str
    before: str
    after: str
    linked: bool


@dataclass
class AreaRow:
    area: str
    counts: dict[str, int] = field(default_factory=dict)

    @property
    def total(self) -> int:
        return sum(self.counts.values())


@dataclass(frozen=True)
class BlockerRow:
    id: str
    outcome: str
    severity: str
    reason: str


@dataclass(frozen=True)
class BlockerGroup:
    key: str
    heading: str
    rows: tuple[BlockerRow, ...]
    hint: str = ""


REASON_CHARS = 180


def _one_line(text: str) -> str:
    line = " ".join(str(text).split())
    return line if len(line) <= REASON_CHARS else line[: REASON_CHARS - 1] + "\u2026"


def blocker_groups(items: Sequence[ItemView], awaiting: Sequence[RoleView]) -> list[BlockerGroup]:
    """What stands between this record and a release, grouped by what it takes: failures and
    errors to fix first; then items waiting for the release load profile, for an attestation
    from a role, or for a run that decides them; then the roles still to sign."""
    blocking = sorted((i for i in items if i.data["blocking"]), key=_attention)

    def rows(chosen: Sequence[ItemView]) -> tuple[BlockerRow, ...]:
        return tuple(
            BlockerRow(
                str(i.data["id"]),
                str(i.data["outcome"]),
                str(i.data["severity"]),
                _one_line(i.data["reason"]),
            )
            for i in chosen
        )

    broken = [i for i in blocking if i.data["outcome"] in ("fail", "error")]
    load = [i for i in blocking if i not in broken and i.data["verify"] == "load"]
    manual = [i for i in blocking if i not in broken and i.data["verify"] == "manual"]
    rest = [i for i in blocking if i not in broken and i not in load and i not in manual]
    groups = []
    if broken:
        groups.append(
            BlockerGroup("fix", "Failed or could not be decided: fix first", rows(broken))
        )
    if load:
        groups.append(
            BlockerGroup(
                "load",
                "Needs the release load profile",
                rows(load),
                "preflight run --profile release decides these at the checklist's scale",
            )
        )
    for owner in sorted({str(i.data["owner"]) for i in manual}):
        mine = [i for i in manual if i.data["owner"] == owner]
        groups.append(
            BlockerGroup(
                f"attest-{owner}",
                f"Needs an attestation from the {ROLE_NAMES.get(owner, owner).lower()}",
                rows(mine),
                f"preflight attest ITEM --key KEY (as {owner})",
            )
        )
    if rest:
        groups.append(BlockerGroup("undecided", "Not decided by this run", rows(rest)))
    if awaiting:
        groups.append(
            BlockerGroup(
                "sign",
                "Needs a signature",
                tuple(BlockerRow(f"role-{r.role}", "unverified", "", r.name) for r in awaiting),
                "preflight sign RECORD --role ROLE --key KEY, once the run is READY",
            )
        )
    return groups


@dataclass(frozen=True)
class DrillView:
    name: str
    nodeid: str
    items: tuple[str, ...]
    outcome: str
    message: str
    duration: str
    figures: tuple[tuple[str, str], ...]


def _drills(drills: Sequence[Mapping[str, Any]]) -> list[DrillView]:
    return [
        DrillView(
            name=str(d.get("name", "")),
            nodeid=str(d.get("nodeid", "")),
            items=tuple(d.get("items", [])),
            outcome=str(d.get("outcome", "")),
            message=str(d.get("message", "")),
            duration=format_value(d.get("duration_s", 0), "s"),
            figures=tuple(
                (str(f["name"]), format_value(f["value"], str(f.get("unit") or "")))
                for f in d.get("figures", [])
            ),
        )
        for d in drills
    ]


UNIT_SUFFIXES = (
    ("_ms", "ms"),
    ("_pct", "%"),
    ("_per_s", "/s"),
    ("_s", "s"),
    ("_bytes", "bytes"),
    ("_mib", "MiB"),
)


def unit_of(name: str) -> str:
    """The unit a figure's name ends in (api_latency_p95_ms -> ms), or none."""
    return next((unit for suffix, unit in UNIT_SUFFIXES if name.endswith(suffix)), "")


def format_value(value: Any, unit: str = "") -> str:
    """A figure for a person: thousands separated, at most three significant decimals, its
    unit; a mapping as `key value` pairs; None as `not measured`."""
    if value is None:
        return "not measured"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int | float):
        number = f"{value:,.0f}" if abs(value) >= 1000 else f"{value:,.3g}"
        return f"{number} {unit}".strip() if unit != "%" else f"{number} %"
    if isinstance(value, Mapping):
        return "; ".join(f"{k} {format_value(v, unit_of(str(k)))}" for k, v in value.items())
    if isinstance(value, list):
        return ", ".join(format_value(v, unit) for v in value)
    return str(value)


def _load_components(load: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The system's components at full scale (preflight/load/headroom.py), one row each, and
    the host's CPU where they share one machine."""
    resources = load.get("resources") or {}
    rows = [
        {
            "name": name,
            "cpu": _pct(c.get("cpu_peak_pct")),
            "cores": c.get("cpu_peak_cores"),
            "limit_cpus": c.get("limit_cpus"),
            "memory": _pct(c.get("memory_peak_pct")),
            "memory_mib": round(c["memory_peak_bytes"] / 2**20)
            if c.get("memory_peak_bytes")
            else None,
            "note": c.get("not_measured", ""),
        }
        for name, c in sorted((resources.get("components") or {}).items())
    ]
    host = ((resources.get("saturation") or {}).get("parts_pct") or {}).get("host_cpu")
    if rows and host is not None:
        rows.append(
            {
                "name": "all of them (the host's cores)",
                "cpu": _pct(host),
                "cores": None,
                "limit_cpus": None,
                "memory": "",
                "memory_mib": None,
                "note": "",
            }
        )
    return rows


def _load_generator(load: Mapping[str, Any]) -> dict[str, Any] | None:
    """The load generator beside the system it measured: each Locust process's CPU (% of one
    core, mean and peak) and what one HTTP request cost the generator and the target."""
    generator = load.get("generator")
    if not isinstance(generator, Mapping):
        return None
    processes = [
        {"name": name, "mean": _pct(cpu.get("mean_pct")), "max": _pct(cpu.get("max_pct"))}
        for name, cpu in sorted((generator.get("cpu_by_process") or {}).items())
    ]
    cost = load.get("cpu_per_request") or {}
    return {
        "processes": processes,
        "cores": generator.get("cores"),
        "requests": cost.get("http_requests"),
        "generator_ms": format_value(cost.get("generator_ms_per_request"), "ms"),
        "target_ms": format_value(cost.get("target_ms_per_request"), "ms"),
    }


def _load_scaling(load: Mapping[str, Any]) -> dict[str, Any] | None:
    scaling = load.get("scaling")
    if not isinstance(scaling, Mapping):
        return None
    steps = sorted((scaling.get("workers") or {}).items(), key=lambda kv: int(kv[0]))
    return {
        "steps": steps,
        "ratio": scaling.get("ratio"),
        "skipped": scaling.get("skipped", ""),
        "bound": _scaling_bound(scaling, steps),
    }


def _scaling_bound(scaling: Mapping[str, Any], steps: list[tuple[str, Any]]) -> str:
    """What bounded the scaling runs, for a person: each worker's CPU limit and the share of its
    CPU periods it was throttled in per run, or the record's note that nothing limited them."""
    cpus = scaling.get("cpus_per_worker")
    if not isinstance(cpus, int | float):
        return str(scaling.get("bound", ""))
    runs = [
        f"{workers} worker(s): "
        + ", ".join(
            f"{name} {seen.get('throttled_share', 0):.0%}"
            for name, seen in sorted((step.get("throttling") or {}).items())
        )
        for workers, step in steps
    ]
    return f"Each API worker limited to {cpus:g} CPU; throttled in " + "; ".join(runs)


def _pct(value: Any) -> str:
    return f"{value:g} %" if isinstance(value, int | float) else ""


def _text(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value, sort_keys=True)


def _headers(value: Any) -> tuple[tuple[str, str], ...]:
    if not isinstance(value, Mapping):
        return ()
    return tuple(
        (str(k), ", ".join(v) if isinstance(v, list) else str(v)) for k, v in value.items()
    )


def _is_text(media_type: str) -> bool:
    base = media_type.split(";", maxsplit=1)[0].strip().lower()
    return (
        base.startswith("text/") or base in TEXT_TYPES or base.endswith(("+json", "+xml", "+yaml"))
    )


def _attachment(entry: Mapping[str, Any]) -> EvidenceView:
    name, media_type = str(entry["name"]), str(entry["media_type"])
    heading = f"{name} ({media_type})"
    content = str(entry["content"])
    encoding = entry.get("encoding") or ("text" if _is_text(media_type) else "base64")
    if encoding == "text":
        return EvidenceView("text", heading, text=content)
    try:
        raw = base64.b64decode(content, validate=True)
    except (binascii.Error, ValueError):
        return EvidenceView("binary", heading, problem="content is not valid base64")
    base = media_type.split(";", maxsplit=1)[0].strip().lower()
    magic = IMAGE_MAGIC.get(base)
    if magic is not None and raw.startswith(magic):
        uri = f"data:{base};base64,{base64.b64encode(raw).decode()}"
        width, height = image_size(raw, base)
        return EvidenceView("image", heading, data_uri=uri, width=width, height=height)
    if magic is not None:
        return EvidenceView("binary", heading, problem=f"content is not a {base} image")
    if _is_text(media_type):
        return EvidenceView("text", heading, text=raw.decode("utf-8", errors="replace"))
    # Binary files download as octet-stream: a browser never renders them as a page.
    uri = f"data:application/octet-stream;base64,{base64.b64encode(raw).decode()}"
    return EvidenceView("binary", f"{heading}, {len(raw)} bytes", data_uri=uri)


def _evidence(entry: Mapping[str, Any]) -> EvidenceView:
    kind = entry.get("kind")
    if kind == "request":
        known = {"kind", "method", "url", "status", "headers", "body"}
        status = entry.get("status")
        arrow = f" \u2192 {status}" if status is not None else " \u2192 no response"
        return EvidenceView(
            "request",
            f"{entry['method']} {entry['url']}{arrow}",
            text=str(entry.get("body") or ""),
            headers=_headers(entry.get("headers")),
            extra=tuple((k, _text(v)) for k, v in entry.items() if k not in known),
        )
    if kind == "figure":
        unit = f" {entry['unit']}" if entry.get("unit") else ""
        return EvidenceView("figure", f"{entry['name']}: {_text(entry['value'])}{unit}")
    if kind == "note":
        return EvidenceView("note", "note", text=str(entry["text"]))
    if kind == "attachment":
        return _attachment(entry)
    return EvidenceView(
        "other",
        str(kind),
        extra=tuple((k, _text(v)) for k, v in entry.items() if k != "kind"),
    )


def _test(entry: Mapping[str, Any]) -> TestView:
    return TestView(
        nodeid=str(entry["nodeid"]),
        outcome=str(entry["outcome"]),
        message=str(entry["message"]),
        duration_s=float(entry["duration_s"]),
        evidence=tuple(_evidence(e) for e in entry["evidence"]),
    )


def _figures(figures: Mapping[str, Any]) -> tuple[tuple[str, str], ...]:
    if not figures:
        return ()
    rows: list[tuple[str, str]] = []
    unit = unit_of(str(figures.get("metric", "")))
    if "metric" in figures:
        value = format_value(figures.get("value"), unit)
        rows.append(("target", f"{figures['metric']} {figures.get('comparison', '')} {value}"))
    if "measured" in figures:
        rows.append(("measured", format_value(figures["measured"], unit)))
    if "scale_reached" in figures:
        rows.append(("scale reached", "yes" if figures["scale_reached"] else "no"))
    shown = {"metric", "comparison", "value", "measured", "scale_reached"}
    rows += [(k, format_value(v, unit_of(k))) for k, v in figures.items() if k not in shown]
    return tuple(rows)


def _signoff_state(entry: Mapping[str, Any], release: FinalVerdict) -> str:
    if entry["verify"] != "signoff":
        return ""
    role = str(entry["owner"])
    if role in release.signed:
        return f"Signed: {ROLE_NAMES.get(role, role)} signed this record (see Sign-off)"
    return f"Awaiting signature: run `preflight sign --role {role} RECORD`"


def _item(entry: Mapping[str, Any], release: FinalVerdict) -> ItemView:
    # Evidence of what blocks the release is open from the start (and in print).
    return ItemView(
        data=entry,
        tests=tuple(_test(t) for t in entry["tests"]),
        figures=_figures(entry["figures"]),
        open=bool(entry["blocking"]),
        signoff=_signoff_state(entry, release),
    )


def _attention(item: ItemView) -> tuple[int, str]:
    return ATTENTION.index(Outcome(item.data["outcome"])), str(item.data["id"])


def _area_rank(area: str) -> int:
    return AREAS.index(area) if area in AREAS else len(AREAS)


def _groups(items: Sequence[ItemView]) -> list[Group]:
    blocking = sorted((i for i in items if i.data["blocking"]), key=_attention)
    groups = [Group("blocking", "Blocking the release", tuple(blocking))] if blocking else []
    rest = [i for i in items if not i.data["blocking"] and i.data["selected"]]
    for area in sorted({str(i.data["area"]) for i in rest}, key=_area_rank):
        members = sorted((i for i in rest if i.data["area"] == area), key=_attention)
        groups.append(Group(area, area.capitalize(), tuple(members)))
    # A run limited by --area/--severity would otherwise bury its items among the rest.
    unselected = [i for i in items if not i.data["selected"]]
    if unselected:
        unselected.sort(key=lambda i: (_area_rank(str(i.data["area"])), str(i.data["id"])))
        groups.append(Group("not-selected", "Not selected in this run", tuple(unselected), True))
    return groups


def _area_rows(items: Sequence[Mapping[str, Any]]) -> list[AreaRow]:
    rows: dict[str, AreaRow] = {}
    for entry in items:
        row = rows.setdefault(entry["area"], AreaRow(entry["area"], dict.fromkeys(OUTCOMES, 0)))
        row.counts[entry["outcome"]] += 1
    return [rows[a] for a in sorted(rows, key=_area_rank)]


def signature_state(signature: Mapping[str, Any], digest: str) -> tuple[str, str]:
    """Whether a signature signs this record with the key it carries (not whose key it is:
    `preflight verify` checks keys against the registry of each role)."""
    status, _problem = signature_status(signature, digest)
    return SIGNATURE_STATES[status]


def _signature(entry: Mapping[str, Any], digest: str) -> SignatureView:
    state, text = signature_state(entry, digest)
    return SignatureView(
        role=str(entry["role"]),
        signer=str(entry["signer"]),
        key_id=str(entry["key_id"]),
        signed_at=str(entry["signed_at"]),
        state=state,
        state_text=text,
    )


def _roles(record: Mapping[str, Any], digest: str) -> list[RoleView]:
    return [
        RoleView(
            role=role,
            name=ROLE_NAMES.get(role, role),
            signatures=tuple(
                _signature(s, digest) for s in record["signatures"] if s["role"] == role
            ),
        )
        for role in record["signoff"]["required"]
    ]


def _changes(record: Mapping[str, Any]) -> list[ChangeView]:
    titles = {i["id"]: i["title"] for i in record["items"]}
    changes = order([Change(c["id"], c["before"], c["after"]) for c in record["changes"]])
    return [
        ChangeView(
            id=c.id,
            title=titles.get(c.id, ""),
            kind=c.kind.label,
            before=c.before or "(new)",
            after=c.after or "(gone)",
            linked=c.id in titles,
        )
        for c in changes
    ]


@cache
def _asset(name: str) -> str:
    return resources.files("preflight.report").joinpath(f"templates/{name}").read_text()


def _csp_hash(text: str) -> str:
    return "'sha256-" + base64.b64encode(hashlib.sha256(text.encode()).digest()).decode() + "'"


@cache
def _environment() -> Environment:
    return Environment(
        loader=PackageLoader("preflight.report", "templates"),
        autoescape=True,
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )


def render_html(record: Mapping[str, Any]) -> str:
    digest = record_digest(dict(record))
    # The release verdict, each signature judged by the key it carries; `preflight verify`
    # also checks every key against the registry.
    release = final_verdict(record)
    items = [_item(e, release) for e in record["items"]]
    style, script = _asset("report.css"), _asset("report.js")
    csp = (
        f"default-src 'none'; style-src {_csp_hash(style)}; script-src {_csp_hash(script)}; "
        "img-src data:; base-uri 'none'; form-action 'none'"
    )
    harness = [_signature(s, digest) for s in record["signatures"] if s["role"] == "harness"]
    roles = _roles(record, digest)
    groups = _groups(items)
    area_rows = _area_rows(record["items"])
    template = _environment().get_template(TEMPLATE)
    return template.render(
        record=record,
        verdict=record["verdict"],
        verdict_label=verdict_label(record),
        verdict_line=verdict_line(record),
        release=release,
        edited=release.state == EDITED,
        signed=release.state == SIGNED,
        outcomes=[o.value for o in OUTCOMES],
        area_rows=area_rows,
        area_chart=outcome_chart([(row.area, row.counts) for row in area_rows]),
        blockers=blocker_groups(items, [r for r in roles if not r.signed]),
        drills=_drills(record["drills"]),
        areas=[a for a in AREAS if any(row.area == a for row in area_rows)],
        groups=groups,
        group_keys={g.key for g in groups},
        blocking=[i for i in items if i.data["blocking"]],
        changes=_changes(record),
        roles=roles,
        load_figures=[
            (k, format_value(v, unit_of(k))) for k, v in sorted(record["load"]["figures"].items())
        ],
        load_charts=load_charts(record["load"], record["items"]),
        load_requests=sorted((record["load"].get("requests") or {}).items()),
        load_components=_load_components(record["load"]),
        load_scaling=_load_scaling(record["load"]),
        load_generator=_load_generator(record["load"]),
        stages=[(s["stage"], format_value(s["seconds"], "s")) for s in record.get("stages") or ()],
        awaiting=[r.name for r in roles if not r.signed],
        harness=harness,
        digest=digest,
        role_names=ROLE_NAMES,
        csp=csp,
        style=Markup(style),  # noqa: S704 - our own stylesheet, pinned by the CSP hash
        script=Markup(script),  # noqa: S704 - our own script, pinned by the CSP hash
    )
