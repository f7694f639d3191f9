"""The pytest plugin, run for real with pytester: markers, outcomes, the results file, evidence
redaction, targets, and `run_probes` for `preflight run`."""

from __future__ import annotations

import http.server
import ipaddress
import json
import socket
import ssl
import subprocess
import sys
import textwrap
import threading
import warnings
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest

from preflight.errors import PreflightError
from preflight.outcomes import Outcome, ProbeResult, ProbeResults
from preflight.plugin import XFAIL_MESSAGE, RunContext, collect_probes, run_probes
from preflight.probe.target import ProbeTarget
from preflight.targets.base import (
    ClientNetwork,
    Drills,
    Edge,
    Stores,
    TargetDescription,
    TargetInfo,
    TargetKind,
    Unsupervised,
)
from preflight.targets.external import load_target_file
from preflight.targets.pki import make_pki

pytest_plugins = ["pytester"]

REPO = Path(__file__).resolve().parents[1]
# The plugin's own tests run a fixed slice of the real edge probes (the header cases on four
# endpoints, the TLS version cases, plain HTTP); the probes themselves are tested against broken
# edges in tests/checks/.
SECURITY_CHECKS = [
    REPO / "checks" / "security" / name
    for name in ("test_headers.py", "test_tls.py", "test_plain_http.py")
]
SECURITY_CASES = "api-200 or api-401 or websocket-426 or edge-404 or tls1 or plain_http"
ITEM = """\
- id: {id}
  area: security
  title: A demonstration item for the plugin tests
  severity: high
  owner: security-lead
  verify: probe
  risk: Nothing at all, this item exists for a test.
  remediation: Nothing to change, this item exists for a test.
  refs: []
  source: 'seed-summary: plugin tests'
"""
IDS = ("DEMO-ONE", "DEMO-TWO", "DEMO-THREE")
CHECKLIST = "version: 1\ngate:\n  must_be:\n    high: [pass, waived]\nitems:\n" + "".join(
    ITEM.format(id=i) for i in IDS
)
ADMIN_KEY = "admin-key-that-must-never-be-stored"
PG_PASSWORD = "pg-password-never-stored"
JWT = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJ1In0.c2lnbmF0dXJl"


def fake_info(redis_url: str | None = None) -> TargetInfo:
    """A target description for runs whose probes never touch the network."""
    return TargetInfo(
        name="fake",
        kind="external",
        edge=Edge("https://127.0.0.1:9"),
        admin_key=ADMIN_KEY,
        stores=Stores(
            postgres_dsn=f"postgresql://chat:{PG_PASSWORD}@127.0.0.1:9/chat", redis_url=redis_url
        ),
    )


@pytest.fixture
def probes(pytester: pytest.Pytester) -> pytest.Pytester:
    pytester.makefile(".yaml", checklist=CHECKLIST)
    # As strict as the repository's own configuration. The outer session imported preflight
    # already, so the inner one cannot rewrite it and says so.
    pytester.makeini(
        """
        [pytest]
        addopts = --strict-markers --strict-config -p no:cacheprovider
        filterwarnings =
            error
            ignore::pytest.PytestAssertRewriteWarning
        """
    )
    return pytester


def read_results(path: Path) -> dict[str, ProbeResult]:
    return {r.nodeid: r for r in ProbeResults.read(path).results}


# -- markers ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("marker", "complaint"),
    [
        ('checklist("DEMO-NOPE")', "names 'DEMO-NOPE', which is not an item of"),
        ("checklist()", "must name exactly one item id as a string"),
        ('checklist("DEMO-ONE", "DEMO-TWO")', "must name exactly one item id as a string"),
        ("checklist(42)", "must name exactly one item id as a string"),
        ('checklist(id="DEMO-ONE")', "must name exactly one item id as a string"),
    ],
)
def test_a_bad_marker_fails_the_session_naming_the_test(
    probes: pytest.Pytester, marker: str, complaint: str
) -> None:
    probes.makepyfile(
        test_probe=f"""
        import pytest

        @pytest.mark.checklist("DEMO-ONE")
        def test_fine():
            pass

        @pytest.mark.{marker}
        def test_bad():
            pass
        """
    )
    result = probes.runpytest("--preflight-results=out.json")
    assert result.ret == pytest.ExitCode.INTERRUPTED
    errors = ProbeResults.read(probes.path / "out.json").errors
    assert len(errors) == 1
    assert errors[0].startswith("test_probe.py:7: test_probe.py::test_bad: marker ")
    assert complaint in errors[0]
    result.stdout.fnmatch_lines(
        [
            "*ERROR collecting test_probe.py*",
            f"test_probe.py:7: test_probe.py::test_bad: marker *{complaint}*",
            "ERROR test_probe.py::test_bad - *",
            "*Interrupted: 1 error during collection*",
        ]
    )


def test_markers_of_tests_deselected_by_k_are_checked_too(probes: pytest.Pytester) -> None:
    probes.makepyfile(
        test_probe="""
        import pytest

        @pytest.mark.checklist("DEMO-ONE")
        def test_wanted():
            pass

        @pytest.mark.checklist("DEMO-NOPE")
        def test_other():
            pass
        """
    )
    assert probes.runpytest("-k", "wanted").ret == pytest.ExitCode.INTERRUPTED


def test_markers_are_checked_in_collect_only_too(probes: pytest.Pytester) -> None:
    probes.makepyfile(
        test_probe='import pytest\n@pytest.mark.checklist("DEMO-NOPE")\ndef test_x(): pass\n'
    )
    assert probes.runpytest("--collect-only").ret == pytest.ExitCode.INTERRUPTED


def test_an_invalid_checklist_is_a_usage_error(probes: pytest.Pytester) -> None:
    (probes.path / "checklist.yaml").write_text(CHECKLIST.replace("area: security", "area: x", 1))
    probes.makepyfile(
        test_probe='import pytest\n@pytest.mark.checklist("DEMO-ONE")\ndef test_x(): pass\n'
    )
    result = probes.runpytest()
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*checklist.yaml:7: item DEMO-ONE, field area: must be one of*"])


def test_plain_tests_without_markers_are_left_alone(probes: pytest.Pytester) -> None:
    (probes.path / "checklist.yaml").unlink()  # not even read when no test is a probe
    probes.makepyfile(test_plain="def test_x(): pass\n")
    result = probes.runpytest()
    assert result.ret == 0
    assert "preflight checklist items" not in result.stdout.str()


# -- outcomes, the summary and the results file -----------------------------------------------

OUTCOME_PROBES = """
import pytest

@pytest.fixture
def broken_fixture():
    raise RuntimeError("database unreachable")

@pytest.fixture
def broken_teardown():
    yield
    raise RuntimeError("cleanup failed")

@pytest.mark.checklist("DEMO-ONE")
def test_pass(evidence):
    evidence.figure("latency", 12.5, "ms")

@pytest.mark.checklist("DEMO-ONE")
@pytest.mark.checklist("DEMO-TWO")
def test_assert_fails():
    got = 600
    assert got >= 31536000, f"HSTS max-age on https://h/ must be >= 31536000 (got {got})"

@pytest.mark.checklist("DEMO-TWO")
def test_pytest_fail():
    pytest.fail("the edge answered 200 where 403 was required")

@pytest.mark.checklist("DEMO-THREE")
def test_exception_is_error():
    {}["missing"]

@pytest.mark.checklist("DEMO-THREE")
def test_setup_error(broken_fixture):
    pass

@pytest.mark.checklist("DEMO-THREE")
def test_teardown_error(broken_teardown):
    pass

@pytest.mark.checklist("DEMO-THREE")
def test_browser_step_timeout():
    raise TimeoutError(
        "Locator.fill: Timeout 10000ms exceeded.\\nCall log:\\n"
        '  - waiting for get_by_label("Question")\\n'
    )

@pytest.mark.checklist("DEMO-THREE")
def test_skip():
    pytest.skip("the target gives no Redis URL.")

@pytest.mark.checklist("DEMO-THREE")
@pytest.mark.skipif(True, reason="not applicable here")
def test_skipif():
    pass

@pytest.mark.checklist("DEMO-THREE")
@pytest.mark.xfail(reason="known gap")
def test_xfail_marker():
    assert False

@pytest.mark.checklist("DEMO-THREE")
def test_imperative_xfail():
    pytest.xfail("known gap")

def test_not_a_probe():
    pass
"""


def test_outcomes_summary_and_results_file(probes: pytest.Pytester) -> None:
    probes.makepyfile(test_probe=OUTCOME_PROBES)
    result = probes.runpytest("--preflight-results=reports/out.json")
    assert result.ret == pytest.ExitCode.TESTS_FAILED

    data = json.loads((probes.path / "reports" / "out.json").read_text())
    assert data["schema"] == "preflight.probe-results/1"
    assert data["errors"] == []
    assert data["collected"]["DEMO-TWO"] == [
        "test_probe.py::test_assert_fails",
        "test_probe.py::test_pytest_fail",
    ]
    assert len(data["collected"]["DEMO-THREE"]) == 8
    results = read_results(probes.path / "reports" / "out.json")
    assert "test_probe.py::test_not_a_probe" not in results
    got = {nodeid.split("::")[1]: (r.outcome, r.message) for nodeid, r in results.items()}
    assert got == {
        "test_pass": (Outcome.PASS, ""),
        "test_assert_fails": (
            Outcome.FAIL,
            "HSTS max-age on https://h/ must be >= 31536000 (got 600)",
        ),
        "test_pytest_fail": (Outcome.FAIL, "the edge answered 200 where 403 was required"),
        "test_exception_is_error": (Outcome.ERROR, "KeyError during call: 'missing'"),
        "test_setup_error": (Outcome.ERROR, "RuntimeError during setup: database unreachable"),
        # A browser step's timeout names the step it waited for, not only the action.
        "test_browser_step_timeout": (
            Outcome.ERROR,
            "TimeoutError during call: Locator.fill: Timeout 10000ms exceeded. "
            '(waiting for get_by_label("Question"))',
        ),
        "test_teardown_error": (Outcome.ERROR, "RuntimeError during teardown: cleanup failed"),
        "test_skip": (Outcome.SKIP, "the target gives no Redis URL."),
        "test_skipif": (Outcome.SKIP, "not applicable here"),
        "test_xfail_marker": (Outcome.ERROR, XFAIL_MESSAGE),
        "test_imperative_xfail": (Outcome.ERROR, XFAIL_MESSAGE),
    }
    assert results["test_probe.py::test_assert_fails"].items == ("DEMO-ONE", "DEMO-TWO")
    assert results["test_probe.py::test_pass"].evidence == (
        {"kind": "figure", "name": "latency", "value": 12.5, "unit": "ms"},
    )
    result.stdout.fnmatch_lines(
        [
            "*= preflight checklist items =*",
            "FAIL  DEMO-ONE: HSTS max-age on https://h/ must be >= 31536000 (got 600) "
            "[[]test_probe.py::test_assert_fails[]]",
            "FAIL  DEMO-TWO: HSTS max-age*",
            "ERROR DEMO-THREE: KeyError during call: 'missing' [[]*",
            "3 checklist items: 2 fail, 1 error",
        ]
    )


def test_a_passing_run_exits_0_with_one_line_per_item(probes: pytest.Pytester) -> None:
    probes.makepyfile(
        test_probe="""
        import pytest

        @pytest.mark.checklist("DEMO-ONE")
        @pytest.mark.parametrize("n", [1, 2])
        def test_a(n, evidence):
            evidence.figure("n", n)

        @pytest.mark.checklist("DEMO-TWO")
        def test_b():
            pytest.skip("not applicable to this target.")
        """
    )
    result = probes.runpytest()
    assert result.ret == 0
    result.stdout.fnmatch_lines(
        [
            "PASS  DEMO-ONE: 2 of 2 probes passed",
            "SKIP  DEMO-TWO: not applicable to this target. [[]test_probe.py::test_b[]]",
            "2 checklist items: 1 skip, 1 pass",
        ]
    )


# -- evidence, redacted end to end ------------------------------------------------------------

REDACTION_PROBE = f"""
import pytest

@pytest.mark.checklist("DEMO-ONE")
def test_leaky(target, evidence):
    key = target.admin_key
    evidence.request(
        {{
            "method": "POST",
            "url": target.edge_url + "/v1/apps?token=opaque-query-secret",
            "status": 201,
            "headers": {{"Set-Cookie": "sid=opaque-cookie", "Content-Type": "application/json"}},
            "request_headers": {{"X-Admin-Key": key, "Authorization": "Bearer opaque-bearer"}},
            "body": '{{"api_key": "opaque-app-key", "echo": "' + key + '", "jwt": "{JWT}"}}',
        }}
    )
    evidence.note("connected to " + target.pg_dsn)
    evidence.attach("worker.log", ("admin key " + key).encode())
    assert key == "", "the admin key " + key + " leaked into the response"
"""


def test_secrets_never_reach_the_results_file(probes: pytest.Pytester) -> None:
    probes.makepyfile(test_probe=REDACTION_PROBE)
    result = probes.runpytest_inprocess(
        "--preflight-results=out.json", plugins=[RunContext(target=fake_info())]
    )
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    stored = (probes.path / "out.json").read_text()
    for secret in (ADMIN_KEY, PG_PASSWORD, JWT, "eyJ", "opaque-"):
        assert secret not in stored, f"{secret!r} reached the results file"
    (probe,) = ProbeResults.read(probes.path / "out.json").results
    assert probe.message == "the admin key [redacted] leaked into the response"
    request, note, attachment = probe.evidence
    assert request["url"] == "https://127.0.0.1:9/v1/apps?token=[redacted]"
    assert request["headers"] == {"Set-Cookie": "[redacted]", "Content-Type": "application/json"}
    assert request["body"] == '{"api_key": "[redacted]", "echo": "[redacted]", "jwt": "[redacted]"}'
    assert note["text"] == "connected to postgresql://chat:[redacted]@127.0.0.1:9/chat"
    assert attachment["content"] == "admin key [redacted]"


def test_a_missing_dsn_skips_with_a_reason(probes: pytest.Pytester) -> None:
    probes.makepyfile(
        test_probe="""
        import pytest

        @pytest.mark.checklist("DEMO-ONE")
        def test_redis(target):
            target.redis_url
        """
    )
    result = probes.runpytest_inprocess(
        "--preflight-results=out.json", plugins=[RunContext(target=fake_info())]
    )
    assert result.ret == 0
    (probe,) = ProbeResults.read(probes.path / "out.json").results
    assert probe.outcome is Outcome.SKIP
    assert probe.message == (
        "target fake gives no Redis URL; add redis_url to the target file to decide this item."
    )


# -- --target -----------------------------------------------------------------------------------


def test_a_missing_target_file_is_a_clear_error(probes: pytest.Pytester) -> None:
    probes.makepyfile(
        test_probe='import pytest\n@pytest.mark.checklist("DEMO-ONE")\ndef test_x(target): pass\n'
    )
    result = probes.runpytest("--target", "staging.yaml")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(
        [
            f"ERROR: --target staging.yaml: {probes.path}/staging.yaml is not a file; give "
            "native, containers, auto, or the path of a target file*"
        ]
    )


def test_a_bad_target_file_names_the_field(probes: pytest.Pytester) -> None:
    probes.makefile(".yaml", staging="name: staging\nedge_url: https://staging.invalid\n")
    result = probes.runpytest("--target", "staging.yaml")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*field `admin_key` is missing*"])


def test_a_target_that_does_not_answer_makes_every_probe_an_error(
    probes: pytest.Pytester,
) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # nothing listens here once the socket is closed
    probes.makefile(".yaml", dead=f"name: dead\nedge_url: https://127.0.0.1:{port}\nadmin_key: k\n")
    probes.makepyfile(
        test_probe="""
        import pytest

        @pytest.mark.checklist("DEMO-ONE")
        def test_a(target):
            pass

        @pytest.mark.checklist("DEMO-TWO")
        def test_b(target):
            pass
        """
    )
    result = probes.runpytest("--target=dead.yaml", "--preflight-results=out.json")
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    outcomes = {(r.outcome, r.message) for r in ProbeResults.read(probes.path / "out.json").results}
    ((outcome, message),) = outcomes  # both probes, one reason
    assert outcome is Outcome.ERROR
    assert message.startswith(
        f"TargetUnavailable during setup: target dead: the edge does not answer at "
        f"https://127.0.0.1:{port}/v1/health/ready"
    )


class CountingTarget(Unsupervised):
    kind: TargetKind = "external"
    info: TargetInfo

    def __init__(self, info: TargetInfo) -> None:
        self.info = info
        self.entered = self.exited = 0

    def describe(self) -> TargetDescription:
        return TargetDescription(self.info.name, self.kind, self.info.edge.url, {}, {})

    def __enter__(self) -> TargetInfo:
        self.entered += 1
        return self.info

    def __exit__(self, *exc: object) -> None:
        self.exited += 1


def test_probe_target_starts_on_first_use_and_stops_once() -> None:
    start = CountingTarget(fake_info(redis_url="redis://:redis-pass-123@127.0.0.1:9/0"))
    told: list[str] = []
    target = ProbeTarget(start=start, on_secrets=told.extend)
    assert not target.started
    assert "not started" in repr(target)
    assert start.entered == 0
    assert target.edge_address == ("127.0.0.1", 9)
    assert start.entered == 1
    assert set(target.secrets) == {ADMIN_KEY, PG_PASSWORD, "redis-pass-123"}
    assert told == list(target.secrets)
    target.close()
    target.close()
    assert start.exited == 1


def test_probe_target_skips_what_the_target_does_not_give() -> None:
    target = ProbeTarget(fake_info())
    assert target.pg_dsn.startswith("postgresql://")
    with pytest.raises(
        pytest.skip.Exception, match=r"no control over postgres \(it controls: none\)"
    ):
        target.control("postgres")
    with pytest.raises(pytest.skip.Exception, match="gives no plain-HTTP URL; add http_url"):
        target.http_url  # noqa: B018


# -- run_probes and collect_probes (what `preflight run` calls) ------------------------------


def write_tree(root: Path, probe_source: str) -> Path:
    """A probe tree with its own checklist; every tree's module has the same name on purpose."""
    (root / "probes").mkdir(parents=True)
    (root / "checklist.yaml").write_text(CHECKLIST)
    (root / "probes" / "test_probe.py").write_text(textwrap.dedent(probe_source))
    return root


TREE_PROBES = """
import pytest

@pytest.mark.checklist("DEMO-ONE")
@pytest.mark.parametrize("n", [1, 2])
def test_one(target, evidence, n):
    evidence.note(f"{target.name} {n}")

@pytest.mark.checklist("DEMO-TWO")
def test_two():
    assert False, "DEMO-TWO is off-spec"

@pytest.mark.checklist("DEMO-THREE")
def test_three():
    pass
"""


def test_run_probes_runs_the_selection_quietly_and_reports_progress(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    tree = write_tree(tmp_path, TREE_PROBES)
    started: list[tuple[str, tuple[str, ...], int, int]] = []
    finished: list[ProbeResult] = []
    ctx = RunContext(
        target=fake_info(),
        selected={"DEMO-ONE", "DEMO-TWO"},
        on_start=lambda *args: started.append(args),
        on_result=finished.append,
    )
    results = run_probes([tree / "probes"], ctx, tree / "checklist.yaml")

    assert capsys.readouterr().out == ""
    assert results.errors == []
    assert sorted(results.collected) == ["DEMO-ONE", "DEMO-THREE", "DEMO-TWO"]  # deselected too
    assert [(r.nodeid.split("::")[1], r.outcome) for r in results.results] == [
        ("test_one[1]", Outcome.PASS),
        ("test_one[2]", Outcome.PASS),
        ("test_two", Outcome.FAIL),
    ]
    assert finished == results.results
    assert [(items, index, total) for _, items, index, total in started] == [
        (("DEMO-ONE",), 1, 3),
        (("DEMO-ONE",), 2, 3),
        (("DEMO-TWO",), 3, 3),
    ]
    assert results.results[0].evidence == ({"kind": "note", "text": "fake 1"},)


def test_progress_counts_only_the_probes_that_run(tmp_path: Path) -> None:
    tree = write_tree(tmp_path, TREE_PROBES)
    started: list[tuple[int, int]] = []
    ctx = RunContext(
        target=fake_info(), on_start=lambda _n, _i, index, total: started.append((index, total))
    )
    results = run_probes([tree / "probes"], ctx, tree / "checklist.yaml", ["-k", "one"])
    assert [r.nodeid for r in results.results] == [
        "test_probe.py::test_one[1]",
        "test_probe.py::test_one[2]",
    ]
    assert started == [(1, 2), (2, 2)]


def test_run_probes_twice_in_one_process_sees_each_tree(tmp_path: Path) -> None:
    first = write_tree(tmp_path / "a", TREE_PROBES)
    second = write_tree(
        tmp_path / "b",
        'import pytest\n@pytest.mark.checklist("DEMO-THREE")\ndef test_other(): pass\n',
    )
    ctx = RunContext(target=fake_info())
    one = run_probes([first / "probes"], ctx, first / "checklist.yaml")
    two = run_probes([second / "probes"], ctx, second / "checklist.yaml")
    again = run_probes([first / "probes"], ctx, first / "checklist.yaml")
    assert two.errors == []
    assert [r.nodeid.split("::")[1] for r in two.results] == ["test_other"]
    assert [r.to_json() | {"duration_s": 0} for r in again.results] == [
        r.to_json() | {"duration_s": 0} for r in one.results
    ]


def test_collection_errors_come_back_one_sentence_each(tmp_path: Path) -> None:
    tree = write_tree(
        tmp_path,
        'import pytest\n@pytest.mark.checklist("DEMO-NOPE")\ndef test_typo(): pass\n',
    )
    (tree / "probes" / "test_broken.py").write_text("import no_such_module_anywhere\n")
    (tree / "probes" / "test_unmarked.py").write_text("def test_decides_nothing(): pass\n")
    results = run_probes([tree / "probes"], RunContext(target=fake_info()), tree / "checklist.yaml")
    assert results.results == []
    assert len(results.errors) == 3
    broken, typo, unmarked = sorted(results.errors)
    assert broken == (
        "test_broken.py cannot be collected: "
        "ModuleNotFoundError: No module named 'no_such_module_anywhere'"
    )
    assert unmarked.startswith("test_unmarked.py:1: test_unmarked.py::test_decides_nothing: ")
    assert "has no @pytest.mark.checklist(ID) marker" in unmarked
    assert typo.startswith("test_probe.py:2: test_probe.py::test_typo: marker ")
    assert "'DEMO-NOPE', which is not an item of" in typo


def test_collect_probes_maps_items_to_tests_without_a_target(tmp_path: Path) -> None:
    tree = write_tree(tmp_path, TREE_PROBES)
    # The probes ask for `target`: collecting must not set it up, so nothing runs at all.
    results = collect_probes([tree / "probes"], tree / "checklist.yaml")
    assert results.errors == []
    assert results.results == []
    assert results.collected["DEMO-ONE"] == [
        "test_probe.py::test_one[1]",
        "test_probe.py::test_one[2]",
    ]


def test_a_probe_session_imports_nothing_of_schemathesis(tmp_path: Path) -> None:
    """schemathesis's pytest plugin half-imports schemathesis when a session starts; once a
    caller forgets what a session imported (pytester does), the contract probe's engine and the
    probe disagree on its event classes and the probe sees no operation run at all. A probe
    session therefore never loads that plugin, whatever configuration it finds."""
    tree = write_tree(tmp_path, TREE_PROBES)
    script = (
        "import sys\n"
        "from pathlib import Path\n"
        "from preflight.plugin import collect_probes\n"
        f"results = collect_probes([Path({str(tree / 'probes')!r})], "
        f"Path({str(tree / 'checklist.yaml')!r}))\n"
        "assert results.errors == [], results.errors\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] == 'schemathesis'))\n"
    )
    # From the tree, not the repository: no configuration of ours disables the plugin there.
    done = subprocess.run(
        [sys.executable, "-c", script], cwd=tree, capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]", done.stdout


def test_an_unreadable_checklist_comes_back_as_an_error(tmp_path: Path) -> None:
    tree = write_tree(tmp_path, TREE_PROBES)
    missing = tmp_path / "nope.yaml"
    results = run_probes([tree / "probes"], RunContext(target=fake_info()), missing)
    assert results.errors == [f"{missing}: cannot read: No such file or directory"]
    assert results.results == []


def test_pytest_that_cannot_start_is_a_preflight_error(tmp_path: Path) -> None:
    tree = write_tree(tmp_path, TREE_PROBES)
    with pytest.raises(
        PreflightError, match=r"pytest could not run the probes in .* \(exit code 4\)"
    ):
        run_probes(
            [tree / "probes"],
            RunContext(target=fake_info()),
            tree / "checklist.yaml",
            ["--no-such-option"],
        )


# -- against real servers: the bundled system, and one without the edge's hardening ----------


class WeakHandler(http.server.BaseHTTPRequestHandler):
    """Answers every GET with 200 JSON and headers that look right but are not: a short HSTS,
    a CSP that allows inline script, a referrer policy whose last word is unsafe-url."""

    def do_GET(self) -> None:
        body = b'{"status": "ready"}'
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Strict-Transport-Security", "max-age=600")
        self.send_header(
            "Content-Security-Policy", "default-src 'self'; script-src 'self' 'unsafe-inline'"
        )
        self.send_header("Referrer-Policy", "no-referrer, unsafe-url")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        return None


def serve(server: http.server.ThreadingHTTPServer) -> threading.Thread:
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05})
    thread.start()
    return thread


@pytest.fixture
def weak_edge(tmp_path: Path) -> Iterator[Path]:
    """Real servers without the edge's hardening: HTTPS that still speaks TLS 1.0 (throwaway CA),
    plain HTTP that serves the API, and the target file that names them."""
    pki = make_pki(tmp_path / "pki")
    https = http.server.ThreadingHTTPServer(("127.0.0.1", 0), WeakHandler)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # TLSv1 is the weakness on purpose
        context.minimum_version = ssl.TLSVersion.TLSv1
    context.set_ciphers("ALL:@SECLEVEL=0")
    context.load_cert_chain(pki.server_chain, pki.server_key)
    https.socket = context.wrap_socket(https.socket, server_side=True)
    plain = http.server.ThreadingHTTPServer(("127.0.0.1", 0), WeakHandler)
    threads = [serve(https), serve(plain)]
    target_file = tmp_path / "weak.yaml"
    target_file.write_text(
        f"name: weak\nedge_url: https://127.0.0.1:{https.server_address[1]}\n"
        f"http_url: http://127.0.0.1:{plain.server_address[1]}\n"
        f"ca_file: {pki.ca_cert}\nadmin_key: {ADMIN_KEY}\n"
    )
    yield target_file
    for server, thread in zip((https, plain), threads, strict=True):
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


@pytest.mark.native
def test_security_probes_pass_against_the_native_target(pytester: pytest.Pytester) -> None:
    out = pytester.path / "out.json"
    result = pytester.runpytest_subprocess(
        *map(str, SECURITY_CHECKS),
        f"--preflight-results={out}",
        "-k",
        SECURITY_CASES,
        "-p",
        "no:cacheprovider",
        timeout=120,
    )
    assert result.ret == 0, result.stdout.str()
    results = ProbeResults.read(out)
    assert results.errors == []
    assert {r.outcome for r in results.results} == {Outcome.PASS}
    decided = {item for r in results.results for item in r.items}
    assert len(decided) >= 5
    result.stdout.fnmatch_lines([f"{len(decided)} checklist items: * pass"])


@pytest.mark.turns_red(
    "SEC-HDR-HSTS",
    "SEC-HDR-NOSNIFF",
    "SEC-HDR-CSP",
    "SEC-HDR-REFERRER",
    "SEC-TLS-MIN",
    "SEC-HTTP-REDIRECT",
    defect="An HTTPS server without the edge's hardening: TLS 1.0, a short HSTS, no nosniff, an "
    "unsafe-inline CSP, an unsafe-url referrer policy, and plain HTTP that serves the API.",
)
def test_security_probes_fail_against_a_target_without_hardening(
    pytester: pytest.Pytester, weak_edge: Path
) -> None:
    out = pytester.path / "out.json"
    result = pytester.runpytest_subprocess(
        *map(str, SECURITY_CHECKS),
        "-k",
        SECURITY_CASES,
        f"--target={weak_edge}",
        f"--preflight-results={out}",
        "-p",
        "no:cacheprovider",
        timeout=60,
    )
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    results = ProbeResults.read(out)
    edge_url = load_target_file(weak_edge).edge.url
    decided = {item for r in results.results for item in r.items}
    outcomes = {item: {r.outcome for r in results.for_item(item)} for item in decided}
    # Every item fails; only the current-client case of SEC-TLS-MIN passes (TLS 1.2+ is
    # negotiated all the same).
    assert outcomes == {item: {Outcome.FAIL} for item in outcomes} | {
        "SEC-TLS-MIN": {Outcome.FAIL, Outcome.PASS}
    }
    assert len(outcomes) >= 5
    messages = {r.message for r in results.for_item("SEC-HDR-HSTS")}
    assert f"HSTS max-age on {edge_url}/v1/channels must be >= 31536000 (got 600)" in messages
    nosniff = results.for_item("SEC-HDR-NOSNIFF")[0].message
    assert nosniff == (
        f"X-Content-Type-Options on {edge_url}/v1/health/ready must be sent "
        "(got no X-Content-Type-Options header)"
    )
    first = {item: results.for_item(item)[0].message for item in decided}
    policy = "\"default-src 'self'; script-src 'self' 'unsafe-inline'\""
    assert first["SEC-HDR-CSP"] == (
        f"CSP on {edge_url}/v1/health/ready must not allow scripts from 'unsafe-inline' "
        f"(got {policy})"
    )
    assert first["SEC-HDR-REFERRER"].endswith("(got 'no-referrer, unsafe-url')")
    address = edge_url.removeprefix("https://")
    assert first["SEC-TLS-MIN"] == f"a TLSv1 handshake with {address} must be refused (got TLSv1)"
    assert first["SEC-HTTP-REDIRECT"].endswith(
        "must be redirected to https:// with 301 or 308 (got 200)"
    )
    result.stdout.fnmatch_lines(["FAIL  SEC-HDR-HSTS: HSTS max-age on * (got 600) [[]*"])


def test_run_probes_against_a_real_server_decides_only_the_selection(weak_edge: Path) -> None:
    info = load_target_file(weak_edge)
    selected = {"SEC-HDR-HSTS", "SEC-TLS-MIN"}
    ctx = RunContext(target=info, selected=selected)
    for _ in range(2):  # twice in one process: the second run sees the same probes afresh
        results = run_probes(SECURITY_CHECKS, ctx, REPO / "checklist.yaml", ["-k", SECURITY_CASES])
        assert results.errors == []
        decided = {item: {r.outcome for r in results.for_item(item)} for item in selected}
        assert decided == {
            "SEC-HDR-HSTS": {Outcome.FAIL},
            "SEC-TLS-MIN": {Outcome.FAIL, Outcome.PASS},
        }
        assert all(set(r.items) <= selected for r in results.results)


def test_an_edge_on_loopback_gives_many_clients_and_a_callback_on_loopback() -> None:
    target = ProbeTarget(fake_info())
    assert target.clients == ClientNetwork(("127.0.0.1", 9), "127.0.0.0/8")
    assert target.callback_host == "127.0.0.1"
    addresses = {target.client_address() for _ in range(50)}
    assert len(addresses) > 40, "each client gets an address of its own"
    for address in addresses:
        assert address is not None
        assert ipaddress.ip_address(address) in ipaddress.ip_network("127.0.0.0/8")
        assert not address.startswith("127.0.0."), "never 127.0.0.1 and its neighbours"


def test_an_edge_elsewhere_gives_neither_unless_the_target_says() -> None:
    remote = replace(fake_info(), edge=Edge("https://chat.example.com"))
    target = ProbeTarget(remote)
    assert target.clients is None
    assert target.client_address() is None
    assert target.callback_host is None
    said = replace(
        remote,
        edge=Edge(
            "https://127.0.0.1:9", clients=ClientNetwork(("10.9.0.2", 8443), "10.9.128.0/17")
        ),
        drills=Drills(callback_host="10.8.0.1"),
    )
    target = ProbeTarget(said)
    assert target.callback_host == "10.8.0.1", "a loopback edge does not imply loopback callbacks"
    address = target.client_address()
    assert address is not None
    assert ipaddress.ip_address(address) in ipaddress.ip_network("10.9.128.0/17")
