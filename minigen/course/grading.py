"""Grading the exercises: ``minigen grade``, its table and its report.

The graded checks live in ``tests/graded/``; each carries one task marker
(``@pytest.mark.task3_2``) and takes the ``graded`` fixture, whose attributes
are the task functions of the implementation being graded: the student's
``exercises/`` files (the default), any folder of chapter files, or the
library itself (``--target reference``). A task earns its points when every
check of the task passes.

:func:`grade` runs pytest in a child process with the plugin
:mod:`minigen.course.grading_plugin`, which logs every test's start and result to a
file as it goes; this module reads the log, so a student's function that
raises, hangs (a per-test alarm, and a time limit on the whole process) or
prints (pytest captures it) costs only its own task. If the child dies
(``os._exit``, a crash in C), the test it was running fails and the rest
run again in a fresh child. The result is a table and a report in
Gradescope's ``results.json`` format, written atomically.

This module does not import pytest (a test-only dependency), so the
``minigen`` command works without it; grading itself needs it.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from ..files import write_text_atomically
from .exercises import TASKS, task_by_id

DEFAULT_TIMEOUT = 10.0  # seconds per graded test; the reference needs well under one
DEFAULT_TESTS = Path("tests") / "graded"


# ----------------------------------------------------------------------------
# Running the graded tests and reporting


NOT_RUN = "did not run"


@dataclass
class CheckResult:
    """One graded test: passed, or the first lines of its failure."""

    nodeid: str
    task: str
    passed: bool = False
    message: str = NOT_RUN


@dataclass
class GradeResult:
    """Per-test and per-task outcomes of one grading run."""

    tasks: list  # the Task objects graded
    tests: dict = field(default_factory=dict)  # nodeid -> CheckResult
    problems: list = field(default_factory=list)  # what went wrong in the grading itself

    def task_tests(self, task) -> list:
        return [test for test in self.tests.values() if test.task == task.id]

    def task_passed(self, task) -> bool:
        tests = self.task_tests(task)
        return bool(tests) and all(test.passed for test in tests)

    def score(self, task) -> float:
        return float(task.points) if self.task_passed(task) else 0.0

    def task_output(self, task) -> str:
        tests = self.task_tests(task)
        if not tests:
            return "no graded test ran for this task"
        failed = [f"{test.nodeid.split('::')[-1]}: {test.message}" for test in tests if not test.passed]
        passed = len(tests) - len(failed)
        return "\n".join([f"{passed} of {len(tests)} checks passed"] + failed)

    @property
    def total(self) -> float:
        return sum(self.score(task) for task in self.tasks)

    @property
    def max_total(self) -> float:
        return float(sum(task.points for task in self.tasks))

    def gradescope(self) -> dict:
        """The report in Gradescope's results.json format."""
        tests = [{"name": task.name, "score": self.score(task), "max_score": float(task.points),
                  "status": "passed" if self.task_passed(task) else "failed",
                  "output": self.task_output(task), "visibility": "visible"} for task in self.tasks]
        output = f"{self.total:g} of {self.max_total:g} points"
        return {"score": self.total, "max_score": self.max_total,
                "output": "\n".join([output] + self.problems), "tests": tests}

    def table(self) -> str:
        rows = [("task", "points", "passed", "first failure")]
        for task in self.tasks:
            tests = self.task_tests(task)
            first = next((f"{t.nodeid.split('::')[-1]}: {t.message}" for t in tests if not t.passed), "")
            passed = f"{sum(t.passed for t in tests)}/{len(tests)}"
            rows.append((task.id, f"{self.score(task):g}/{task.points}", passed, first[:90]))
        widths = [max(len(row[i]) for row in rows) for i in range(3)]
        lines = ["  ".join(cell.ljust(width) for cell, width in zip(row[:3], widths)) + "  " + row[3]
                 for row in rows]
        lines.append(f"total: {self.total:g} of {self.max_total:g} points")
        return "\n".join(lines + self.problems)


def _read_log(path: Path) -> list:
    if not path.exists():
        return []
    events = []
    for line in path.read_text().splitlines():
        try:
            events.append(json.loads(line))
        except json.JSONDecodeError:  # a line cut short when the child died
            pass
    return events


def _run_child(command, limit: float):
    """Run one pytest child; returns (exit code or None if it ran past ``limit``, its output)."""
    try:
        done = subprocess.run(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=limit,
                              text=True, errors="replace")
        return done.returncode, done.stdout
    except subprocess.TimeoutExpired as expired:
        output = expired.output.decode(errors="replace") if isinstance(expired.output, bytes) else expired.output
        return None, output or ""


def grade(target: str = "exercises", tasks=None, timeout: float = DEFAULT_TIMEOUT,
          tests_dir=DEFAULT_TESTS) -> GradeResult:
    """Run the graded checks of ``tasks`` (ids; default all) against ``target``:
    "reference", or a folder of chapter files (default ``exercises``)."""
    chosen = [task_by_id(task_id) for task_id in tasks] if tasks else list(TASKS)
    tests_dir = Path(tests_dir)
    if not tests_dir.is_dir():
        raise FileNotFoundError(f"no graded tests at {tests_dir}; run minigen grade from the repository root")
    if target != "reference" and not Path(target).is_dir():
        raise FileNotFoundError(f"no exercise folder at {target}; pass --target reference or a folder "
                                "of chapter files (like exercises/)")
    if target != "reference":
        target = str(Path(target).resolve())
    result = GradeResult(chosen)
    with tempfile.TemporaryDirectory(prefix="minigen-grade-") as scratch:
        log = Path(scratch) / "events.jsonl"
        base = [sys.executable, "-m", "pytest", str(tests_dir), "-p", "minigen.course.grading_plugin", "-q",
                "-p", "no:cacheprovider", "--grade-target", target, "--grade-timeout", str(timeout),
                "--grade-log", str(log), "-m", " or ".join(task.marker for task in chosen)]
        excluded: list = []
        while True:  # each pass ends, or fails the check that stopped it and runs the rest again
            code, output = _run_child(base + [f"--deselect={nodeid}" for nodeid in excluded],
                                      limit=timeout * 50 + 120)
            events = _read_log(log)
            _collect(events, result)
            if code in (0, 1) or not any(t.message == NOT_RUN for t in result.tests.values()):
                break
            stuck = _last_started(events, result)
            if stuck is None:  # it stopped before any check ran: the graded tests themselves are broken
                result.problems.append(f"grading stopped (pytest exit code {code}):\n{output[-2000:]}")
                break
            stuck.message = "ran past the time limit of the whole grading process" if code is None else \
                f"the grading process died (exit code {code}) during this check"
            excluded.append(stuck.nodeid)
            log.unlink(missing_ok=True)
    if not result.tests:
        result.problems.append("no graded check ran")
    return result


def _collect(events: list, result: GradeResult) -> None:
    """Fold one child's log into ``result``; results already known are kept."""
    for event in events:
        if event["event"] == "collected" and event["nodeid"] not in result.tests:
            result.tests[event["nodeid"]] = CheckResult(event["nodeid"], event["task"])
    for event in events:
        test = result.tests.get(event["nodeid"])
        if event["event"] != "result" or test is None:
            continue
        if event["passed"] and test.message == NOT_RUN:
            test.passed, test.message = True, ""
        elif not event["passed"]:
            test.passed = False
            if test.message in (NOT_RUN, ""):
                test.message = event["message"]


def _last_started(events: list, result: GradeResult):
    """The test that was running when the child stopped: started, with no result."""
    finished = {e["nodeid"] for e in events if e["event"] == "result"}
    started = [e["nodeid"] for e in events if e["event"] == "start" and e["nodeid"] not in finished]
    return result.tests.get(started[-1]) if started else None


def write_report(result: GradeResult, path) -> None:
    text = json.dumps(result.gradescope(), indent=2) + "\n"
    write_text_atomically(path, text)


# ----------------------------------------------------------------------------
# The command line: minigen grade


def add_command(commands) -> None:
    """Add ``grade`` to the ``minigen`` sub-commands."""
    command = commands.add_parser("grade", help="grade the exercises: a table, and a Gradescope results.json")
    command.add_argument("--task", action="append", dest="tasks", metavar="ID",
                         help="grade only this task, e.g. 3.2 (repeat for more; default all)")
    command.add_argument("--json", metavar="PATH", help="write the report here (Gradescope results.json format)")
    command.add_argument("--target", default="exercises",
                         help="the folder of chapter files to grade, or 'reference' (default exercises)")
    command.add_argument("--tests", default=str(DEFAULT_TESTS), help="the graded checks (default tests/graded)")
    command.add_argument("--timeout", type=float, default=DEFAULT_TIMEOUT,
                         help=f"seconds per check before it fails (default {DEFAULT_TIMEOUT:g})")
    command.set_defaults(run=_grade_command)


def _grade_command(args) -> int:
    result = grade(args.target, args.tasks, args.timeout, args.tests)
    print(result.table())
    if args.json:
        write_report(result, args.json)
        print(f"report: {args.json}")
    return 0
