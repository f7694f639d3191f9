"""The run as Markdown for a CI job's summary (GitHub's $GITHUB_STEP_SUMMARY, a GitLab merge
request note): the verdict, then every blocking item with its outcome and one-line reason,
failures and errors first."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from preflight.final_verdict import final_verdict
from preflight.scope import verdict_line

# Failures and errors are what someone must fix; the rest waits for evidence or a person.
ORDER = {"fail": 0, "error": 1, "unverified": 2, "skip": 3}
MAX_REASON = 200


def _cell(text: object) -> str:
    """Text for one table cell: one line, pipes escaped, long reasons cut."""
    line = " ".join(str(text).split()).replace("|", "\\|")
    return line if len(line) <= MAX_REASON else line[: MAX_REASON - 1] + "…"


def render_markdown(record: Mapping[str, Any]) -> str:
    verdict = record["verdict"]
    items = {item["id"]: item for item in record["items"]}
    blocking = sorted(
        (items[i] for i in verdict["blocking"] if i in items),
        key=lambda item: (ORDER.get(item["outcome"], 9), item["id"]),
    )
    icon = "✅" if verdict["ready"] else "❌"
    lines = [
        f"## {icon} preflight: {verdict['label']}",
        "",
        verdict_line(record),
        "",
        f"Release: {final_verdict(record).summary()}",
        "",
    ]
    if not blocking:
        lines.append("No item blocks the release.")
        return "\n".join(lines) + "\n"
    lines += [
        f"**{len(blocking)} blocking item{'s' if len(blocking) != 1 else ''}**",
        "",
        "| item | severity | outcome | why |",
        "| --- | --- | --- | --- |",
    ]
    lines += [
        f"| {item['id']} | {item['severity']} | {item['outcome']} | {_cell(item['reason'])} |"
        for item in blocking
    ]
    return "\n".join(lines) + "\n"
