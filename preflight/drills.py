"""Which drills a run runs: the drill files under checks/drills/ (each breaks a component and
restores it), the `--drills` selection, and the items left out because only an unselected
drill decides them."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

from preflight.checklist import Item
from preflight.errors import PreflightError
from preflight.plugin import collect_probes

DRILLS_DIR = "drills"


def drill_files(checks_dir: Path) -> dict[str, Path]:
    """Drill name -> its file: checks/drills/test_<name>.py."""
    folder = checks_dir / DRILLS_DIR
    return {p.stem.removeprefix("test_"): p for p in sorted(folder.glob("test_*.py"))}


def selected_drills(checks_dir: Path, names: Sequence[str] | None) -> dict[str, Path]:
    """The drills `--drills` selects (every drill when `names` is None); an unknown name is an
    error."""
    files = drill_files(checks_dir)
    if names is None:
        return files
    unknown = sorted(set(names) - set(files))
    if unknown:
        raise PreflightError(
            f"--drills: no drill named {', '.join(unknown)} in {checks_dir / DRILLS_DIR} "
            f"(drills: {', '.join(files) or 'none'}; or `all`, `none`)"
        )
    return {name: path for name, path in files.items() if name in names}


def drill_filter(
    checks_dir: Path,
    names: Sequence[str] | None,
    checklist_path: Path,
    why_not: Callable[[Item], str | None],
) -> Callable[[Item], str | None]:
    """`why_not` that also leaves out the items only unselected drills decide."""
    files = drill_files(checks_dir)
    chosen = selected_drills(checks_dir, names)
    left_out = [p for name, p in files.items() if name not in chosen]
    if not left_out:
        return why_not
    excluded = set(collect_probes(left_out, checklist_path).collected)
    excluded -= set(collect_probes(list(chosen.values()), checklist_path).collected)
    flag = f"--drills {','.join(chosen) or 'none'}"

    def with_drills(item: Item) -> str | None:
        return why_not(item) or (flag if item.id in excluded else None)

    return with_drills
