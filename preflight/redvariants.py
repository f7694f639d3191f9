"""The red variants of each checklist item: the tests that show a deliberately broken system turns
the item red, found by reading `@pytest.mark.turns_red(...)` markers out of the test sources
(their syntax tree; no test is imported or run)."""

from __future__ import annotations

import ast
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from preflight.errors import PreflightError

MARKER = "turns_red"
TESTS_DIR = "tests"


@dataclass(frozen=True)
class RedVariant:
    """One marker: the seeded defect, in one sentence, and the test that seeds it
    (`tests/...py::test_name`, with `[param-id]` for a marker on one parameter set). `context` is
    the source the test's assertions come from (its function, the module constants it uses, its
    parameter set), for checking that it mentions the items its marker names."""

    defect: str
    test: str
    items: tuple[str, ...]
    context: str = field(default="", compare=False, repr=False)

    def unmentioned(self) -> list[str]:
        """The items the marker names that its test's source never mentions."""
        return [item for item in self.items if item not in self.context]


class MarkerError(PreflightError):
    """A turns_red marker this module cannot read statically (no item, no literal defect); a run
    that meets one stops with exit 2, like a probe marker naming an unknown item."""


def red_variants(root: Path, tests_dir: str = TESTS_DIR) -> dict[str, list[RedVariant]]:
    """Item id -> its red variants, from every tests/**/*.py under `root`, in file order."""
    by_item: dict[str, list[RedVariant]] = {}
    for variant in scan(root, tests_dir):
        for item in variant.items:
            by_item.setdefault(item, []).append(variant)
    return by_item


def scan(root: Path, tests_dir: str = TESTS_DIR) -> list[RedVariant]:
    """Every turns_red marker under root/tests_dir, in path and line order."""
    found: list[RedVariant] = []
    for path in sorted((root / tests_dir).rglob("*.py")):
        found.extend(_Module(path.read_text(), path.relative_to(root).as_posix()).markers())
    return found


class _Module:
    """One test file's syntax tree and its module-level constants (NAME = ...)."""

    def __init__(self, source: str, relative: str) -> None:
        self.source = source
        self.relative = relative
        self.tree = ast.parse(source, filename=relative)
        self.lines = source.splitlines()
        self.constants: dict[str, ast.expr] = {}
        for node in self.tree.body:
            if isinstance(node, ast.Assign):
                pairs = [(target, node.value) for target in node.targets]
            elif isinstance(node, ast.AnnAssign) and node.value is not None:
                pairs = [(node.target, node.value)]
            else:
                continue
            for target, value in pairs:
                if isinstance(target, ast.Name):
                    self.constants[target.id] = value
        self.functions: dict[str, ast.AST] = {
            node.name: node
            for node in self.tree.body
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)
        }

    def markers(self) -> Iterator[RedVariant]:
        for func in self._test_functions():
            node_id = f"{self.relative}::{func.name}"
            if not any(isinstance(d, ast.Call) for d in func.decorator_list):
                continue
            context = self._context(func)
            for decorator in func.decorator_list:
                if not isinstance(decorator, ast.Call):
                    continue
                if _dotted(decorator.func).endswith(f"mark.{MARKER}"):
                    yield _variant(decorator, node_id, context)
                elif _dotted(decorator.func).endswith("mark.parametrize"):
                    for argvalues in decorator.args[1:]:
                        yield from self._param_markers(argvalues, node_id, context)

    def _test_functions(self) -> Iterator[ast.FunctionDef | ast.AsyncFunctionDef]:
        for node in ast.walk(self.tree):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) and node.name.startswith(
                "test"
            ):
                yield node

    def _context(self, func: ast.FunctionDef | ast.AsyncFunctionDef) -> str:
        """The function's source (decorators excluded), and that of the module's helper
        functions and constants it names (and of the constants those helpers name)."""
        helpers = [h for h in self._named(func, self.functions) if h is not func]
        constants = {n: c for f in [func, *helpers] for n, c in self._named_items(f)}
        nodes: list[ast.AST] = [func, *helpers, *constants.values()]
        return "\n".join(self._text(node) for node in nodes)

    def _named(self, node: ast.AST, table: Mapping[str, ast.AST]) -> list[ast.AST]:
        names = sorted({n.id for n in ast.walk(node) if isinstance(n, ast.Name)})
        return [table[n] for n in names if n in table]

    def _named_items(self, node: ast.AST) -> list[tuple[str, ast.expr]]:
        names = sorted({n.id for n in ast.walk(node) if isinstance(n, ast.Name)})
        return [(n, self.constants[n]) for n in names if n in self.constants]

    def _param_markers(
        self, argvalues: ast.expr, node_id: str, context: str
    ) -> Iterator[RedVariant]:
        """Markers given to single parameter sets: pytest.param(..., marks=..., id=...), in the
        parametrize call or in the module constant it names."""
        if isinstance(argvalues, ast.Name):
            argvalues = self.constants.get(argvalues.id, argvalues)
        for node in ast.walk(argvalues):
            if not (isinstance(node, ast.Call) and _dotted(node.func).endswith("param")):
                continue
            keywords = {k.arg: k.value for k in node.keywords}
            marks = keywords.get("marks")
            if marks is None:
                continue
            param_id = keywords.get("id")
            suffix = (
                f"[{param_id.value}]"
                if isinstance(param_id, ast.Constant) and isinstance(param_id.value, str)
                else ""
            )
            own = "\n".join(self._text(arg) for arg in node.args)
            for mark in marks.elts if isinstance(marks, ast.List | ast.Tuple) else [marks]:
                if isinstance(mark, ast.Call) and _dotted(mark.func).endswith(f"mark.{MARKER}"):
                    yield _variant(mark, node_id + suffix, f"{context}\n{own}")

    def _text(self, node: ast.AST) -> str:
        """The source of `node`, as ast.get_source_segment gives it (which splits the whole file
        on every call)."""
        start, end = getattr(node, "lineno", None), getattr(node, "end_lineno", None)
        if start is None or end is None:
            return ""
        lines = [line.encode() for line in self.lines[start - 1 : end]]
        lines[-1] = lines[-1][: getattr(node, "end_col_offset", None)]
        lines[0] = lines[0][getattr(node, "col_offset", 0) :]
        return "\n".join(line.decode() for line in lines)


def _variant(call: ast.Call, node_id: str, context: str) -> RedVariant:
    items = tuple(_literal(arg, node_id) for arg in call.args)
    defects = [k.value for k in call.keywords if k.arg == "defect"]
    if not items or len(defects) != 1:
        raise MarkerError(f'{node_id}: turns_red needs item ids and defect="..."')
    return RedVariant(_literal(defects[0], node_id), node_id, items, context)


def _literal(node: ast.expr, node_id: str) -> str:
    try:
        value = ast.literal_eval(node)
    except ValueError:
        value = None
    if not isinstance(value, str) or not value.strip():
        raise MarkerError(f"{node_id}: turns_red takes literal strings only")
    return " ".join(value.split())


def _dotted(node: ast.expr) -> str:
    if isinstance(node, ast.Attribute):
        return f"{_dotted(node.value)}.{node.attr}"
    return node.id if isinstance(node, ast.Name) else ""
