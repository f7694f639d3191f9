"""Reading the harness's YAML files with the line of every key, so that every problem names
its line (waivers.yaml, the key registry)."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import yaml

from preflight.errors import FileInvalid

YamlPath = tuple[str | int, ...]


class _TextDatesLoader(yaml.SafeLoader):
    """SafeLoader that keeps YYYY-MM-DD as text: its own dates turn 2026-02-30 into a crash."""


_TextDatesLoader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers if tag != "tag:yaml.org,2002:timestamp"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}


def _node_lines(node: yaml.Node | None, at: YamlPath, lines: dict[YamlPath, int]) -> None:
    if isinstance(node, yaml.MappingNode):
        for key, value in node.value:
            lines[(*at, str(key.value))] = key.start_mark.line + 1
            _node_lines(value, (*at, str(key.value)), lines)
    elif isinstance(node, yaml.SequenceNode):
        for index, entry in enumerate(node.value):
            lines[(*at, index)] = entry.start_mark.line + 1
            _node_lines(entry, (*at, index), lines)


def line_of(lines: dict[YamlPath, int], at: Iterable[str | int]) -> int:
    """The line of a value, or of its nearest enclosing entry (1 for the top level)."""
    where = tuple(at)
    while where:
        if where in lines:
            return lines[where]
        where = where[:-1]
    return 1


def read_yaml(path: Path, invalid: type[FileInvalid]) -> tuple[object, dict[YamlPath, int]]:
    """The data of a YAML file and the line (1-based) of every key and list entry in it."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise invalid(path, [f"{path}: cannot read: {exc.strerror}"]) from exc
    try:
        node = yaml.compose(text, Loader=_TextDatesLoader)
        data: object = yaml.load(text, Loader=_TextDatesLoader)  # noqa: S506 - a SafeLoader
    except yaml.MarkedYAMLError as exc:
        line = exc.problem_mark.line + 1 if exc.problem_mark else 0
        raise invalid(path, [f"{path}:{line}: not valid YAML: {exc.problem}"]) from exc
    lines: dict[YamlPath, int] = {}
    _node_lines(node, (), lines)
    return data, lines
