"""Grading the exercises: ``minigen grade``, its table and its report.

The graded checks live in ``tests/graded/``; each carries one task marker
(``@pytest.mark.task3_2``) and takes the ``graded`` fixture, whose attributes
are the task functions of the implementation being graded: the student's
``exercises/`` files (the default), any folder of chapter files, or the
library itself (``--target reference``). A task earns its points when every
check of the task passes.

:func:`grade` runs pytest in a child process with the plugin
:mod:`minigen.course.grading_plugin`, which writes every test's start and result
to a pipe as it goes; this module reads it. Neither process imports a
student's file: the plugin runs each chapter file in a sandbox process of its
own (:mod:`minigen.course.sandbox`) that takes arguments and gives back data,
so a student's function that raises, hangs (a per-test alarm, and a time
limit on the whole process), prints or exits costs only its own task, and
cannot reach the verdicts (the threat model is in exercises/README.md). If the
pytest child dies anyway, the test it was running fails and the rest run again
in a fresh child. The result is a table and a report in Gradescope's
``results.json`` format, written atomically by this process once every child
has been reaped, then read back to check it.

This module does not import pytest (a test-only dependency), so the
``minigen`` command works without it; grading itself needs it.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from ..files import write_text_atomically
from .exercises import TASKS, task_by_id
from .student import VARIABLE as STUDENT_VARIABLE

DEFAULT_TIMEOUT = 10.0  # seconds per graded test; the reference needs well under one
DEFAULT_TESTS = Path("tests") / "graded"


# ----------------------------------------------------------------------------
# Running the graded tests and reporting


NOT_RUN = "did not run"
HIDDEN = "hidden"  # a sub-folder of the graded checks: run by the grader, left out of the student release


@dataclass
class CheckResult:
    """One graded test: passed, or the first lines of its failure."""

    nodeid: str
    task: str
    passed: bool = False
    message: str = NOT_RUN
    seconds: float = 0.0  # setup, call and teardown

    @property
    def hidden(self) -> bool:
        """A check from the instructors' folder ``hidden/`` (see :data:`HIDDEN`), which students never see."""
        return f"/{HIDDEN}/" in "/" + self.nodeid.split("::")[0]

    @property
    def name(self) -> str:
        return self.nodeid.split("::")[-1]


@dataclass
class GradeResult:
    """Per-test and per-task outcomes of one grading run."""

    tasks: list  # the Task objects graded
    tests: dict = field(default_factory=dict)  # nodeid -> CheckResult
    problems: list = field(default_factory=list)  # what went wrong in the grading itself
    seconds: float = 0.0  # wall time of the whole grading

    def task_tests(self, task) -> list:
        return [test for test in self.tests.values() if test.task == task.id]

    def task_passed(self, task) -> bool:
        tests = self.task_tests(task)
        return bool(tests) and all(test.passed for test in tests)

    def score(self, task) -> float:
        return float(task.points) if self.task_passed(task) else 0.0

    def task_output(self, task) -> str:
        """What a student may read: the public checks' failures; of the hidden ones, how many failed."""
        tests = self.task_tests(task)
        if not tests:
            return "no graded test ran for this task"
        failed = [f"{test.name}: {test.message}" for test in tests if not test.passed and not test.hidden]
        hidden_failed = sum(not test.passed for test in tests if test.hidden)
        passed = sum(test.passed for test in tests)
        lines = [f"{passed} of {len(tests)} checks passed"] + failed
        if hidden_failed:
            lines.append(f"{hidden_failed} hidden check(s) failed: their names appear when the grades are published")
        return "\n".join(lines)

    def hidden_output(self, task) -> str:
        failed = [f"{test.name}: {test.message}" for test in self.task_tests(task) if test.hidden and not test.passed]
        return "\n".join(failed) or "every hidden check passed"

    def task_seconds(self, task, hidden: bool | None = None) -> float:
        return round(sum(t.seconds for t in self.task_tests(task) if hidden is None or t.hidden == hidden), 3)

    @property
    def total(self) -> float:
        return sum(self.score(task) for task in self.tasks)

    @property
    def max_total(self) -> float:
        return float(sum(task.points for task in self.tasks))

    def gradescope(self) -> dict:
        """The report in Gradescope's results.json format (only keys of its specification).

        One test per task, numbered by the task's id, visible to the student,
        with the task's points; a task with hidden checks also gets a test
        "hidden checks" of no points, visible only once the grades are
        published, that names the hidden checks that failed. The specification
        (gradescope/autograder_samples, docs/specs.md) has an execution time for
        the whole run only, so each test's own seconds go in its ``extra_data``."""
        tests = []
        for task in self.tasks:
            tests.append({"name": task.name, "number": task.id, "score": self.score(task),
                          "max_score": float(task.points), "status": "passed" if self.task_passed(task) else "failed",
                          "output": self.task_output(task), "visibility": "visible",
                          "extra_data": {"execution_time": self.task_seconds(task)}})
            if any(t.hidden for t in self.task_tests(task)):
                passed = all(t.passed for t in self.task_tests(task) if t.hidden)
                tests.append({"name": f"{task.name}: hidden checks", "number": f"{task.id}.hidden", "score": 0.0,
                              "max_score": 0.0, "status": "passed" if passed else "failed",
                              "output": self.hidden_output(task), "visibility": "after_published",
                              "extra_data": {"execution_time": self.task_seconds(task, hidden=True)}})
        output = f"{self.total:g} of {self.max_total:g} points"
        return {"score": self.total, "execution_time": round(self.seconds, 3),
                "output": "\n".join([output] + self.problems), "tests": tests}

    def table(self) -> str:
        rows = [("task", "points", "passed", "first failure")]
        for task in self.tasks:
            tests = self.task_tests(task)
            first = next((f"{t.name}: {t.message}" for t in tests if not t.passed), "")
            passed = f"{sum(t.passed for t in tests)}/{len(tests)}"
            rows.append((task.id, f"{self.score(task):g}/{task.points}", passed, first[:90]))
        widths = [max(len(row[i]) for row in rows) for i in range(3)]
        lines = ["  ".join(cell.ljust(width) for cell, width in zip(row[:3], widths)) + "  " + row[3]
                 for row in rows]
        lines.append(f"total: {self.total:g} of {self.max_total:g} points")
        return "\n".join(lines + self.problems)


def process_time_limit(timeout: float) -> int:
    """Seconds that one grading process (pytest, or one chapter's sandbox) may run in all."""
    return int(timeout * 50 + 120)


def _parse_log(data: bytes) -> list:
    events = []
    for line in data.decode(errors="replace").splitlines():
        try:
            event = json.loads(line)
        except json.JSONDecodeError:  # a line cut short when the child died
            continue
        if isinstance(event, dict) and isinstance(event.get("nodeid"), str):
            events.append(event)
    return events


def grading_environment() -> dict:
    """The pytest child's environment: this one without MINIGEN_EXERCISES, so that the
    reference is minigen's own and never a student's function (see :mod:`minigen.course.student`)."""
    return {key: value for key, value in os.environ.items() if key != STUDENT_VARIABLE}


def _run_child(command, limit: float):
    """Run one pytest child with a log pipe (``--grade-log-fd``); returns (exit code, or None if it
    ran past ``limit``; its output; its log events). The child is reaped before this returns."""
    log_read, log_write = os.pipe()
    chunks: list = []
    reader = threading.Thread(target=_drain, args=(log_read, chunks), daemon=True)
    reader.start()
    try:
        process = subprocess.Popen(command + ["--grade-log-fd", str(log_write)], stdout=subprocess.PIPE,
                                   stderr=subprocess.STDOUT, pass_fds=(log_write,), text=True, errors="replace",
                                   env=grading_environment())
    finally:
        os.close(log_write)
    try:
        output, _ = process.communicate(timeout=limit)
        code = process.returncode
    except subprocess.TimeoutExpired:
        process.kill()
        output, _ = process.communicate()
        code = None
    reader.join(timeout=10)
    return code, output or "", _parse_log(b"".join(chunks))


def _drain(fd: int, chunks: list) -> None:
    try:
        while data := os.read(fd, 1 << 16):
            chunks.append(data)
    finally:
        os.close(fd)


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
    result, began = GradeResult(chosen), time.perf_counter()
    base = [sys.executable, "-m", "pytest", str(tests_dir), "-p", "minigen.course.grading_plugin", "-q",
            "-p", "no:cacheprovider", "--grade-target", target, "--grade-timeout", str(timeout),
            "-m", " or ".join(task.marker for task in chosen)]
    excluded: list = []
    while True:  # each pass ends, or fails the check that stopped it and runs the rest again
        code, output, events = _run_child(base + [f"--deselect={nodeid}" for nodeid in excluded],
                                          limit=process_time_limit(timeout))
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
    if not result.tests:
        result.problems.append("no graded check ran")
    result.seconds = time.perf_counter() - began
    return result


def _collect(events: list, result: GradeResult) -> None:
    """Fold one child's log into ``result``; results already known are kept."""
    for event in events:
        if event.get("event") == "collected" and event["nodeid"] not in result.tests:
            result.tests[event["nodeid"]] = CheckResult(event["nodeid"], str(event.get("task")))
    for event in events:
        test = result.tests.get(event["nodeid"])
        if event.get("event") != "result" or test is None:
            continue
        if isinstance(event.get("seconds"), (int, float)):
            test.seconds += float(event["seconds"])
        if event.get("passed") is True and test.message == NOT_RUN:
            test.passed, test.message = True, ""
        elif event.get("passed") is not True:
            test.passed = False
            if test.message in (NOT_RUN, ""):
                test.message = str(event.get("message", "failed"))


def _last_started(events: list, result: GradeResult):
    """The test that was running when the child stopped: started, with no result."""
    finished = {e["nodeid"] for e in events if e["event"] == "result"}
    started = [e["nodeid"] for e in events if e["event"] == "start" and e["nodeid"] not in finished]
    return result.tests.get(started[-1]) if started else None


def write_report(result: GradeResult, path) -> None:
    """Write the Gradescope report atomically, then read it back: it must say what was written."""
    report = result.gradescope()
    write_text_atomically(path, json.dumps(report, indent=2) + "\n")
    try:
        written = json.loads(Path(path).read_text())
    except (OSError, ValueError) as error:
        raise RuntimeError(f"the report {path} could not be read back: {error}") from None
    if written != report:
        raise RuntimeError(f"the report {path} changed after it was written; do not trust it")


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
    command.add_argument("--gradescope-autograder", metavar="OUT.zip",
                         help="grade nothing: write the Gradescope autograder (setup.sh, run_autograder, minigen "
                              "and every check, hidden ones included) to this zip")
    command.set_defaults(run=_grade_command)


def _grade_command(args) -> int:
    if args.gradescope_autograder:
        from .release import gradescope_autograder  # release builds on this module
        names = gradescope_autograder(args.gradescope_autograder)
        print(f"wrote {args.gradescope_autograder} ({len(names)} files): upload it as the assignment's "
              "autograder; students submit their chapter files (ch*.py)")
        return 0
    result = grade(args.target, args.tasks, args.timeout, args.tests)
    print(result.table())
    if args.json:
        write_report(result, args.json)
        print(f"report: {args.json}")
    return 0
