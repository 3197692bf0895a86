"""The pytest plugin of the graded checks (``pytest -p minigen.course.grading_plugin``).

``minigen grade`` (:mod:`minigen.course.grading`) loads it in a child pytest process.
It adds the options ``--grade-target`` (what to grade), ``--grade-timeout``
(seconds per check) and ``--grade-log-fd`` (a pipe to write JSON lines to: the
tests collected with their tasks, each start, each result), the ``graded``
fixture, the task markers (``task3_2``, registered from ``TASKS``: the task
list has one home, so pyproject.toml does not repeat them), a check that
every graded test has exactly one known task marker, and a per-test time
limit (a POSIX alarm).

This process decides the verdicts, so it never imports a student's file: the
``graded`` fixture's functions run each chapter file in a sandbox process
(:mod:`minigen.course.sandbox`) and take back only data.
"""

from __future__ import annotations

import json
import os
import signal

import pytest

from .exercises import CHAPTERS, TASKS, reference_function
from .grading import DEFAULT_TIMEOUT, process_time_limit
from . import student
from .sandbox import Sandbox
from .student import VARIABLE as STUDENT_VARIABLE

_MARKERS = {task.marker: task for task in TASKS}


# ----------------------------------------------------------------------------
# What is graded: the reference, or a folder of chapter files


class GradingTimeout(BaseException):
    """A graded test ran past its time limit (a BaseException: ``except Exception`` cannot swallow it)."""


class GradedFunction:
    """A task function of a chapter file: calling it runs it in the chapter's sandbox, with the
    reference of the chapter's other tasks in its module (cosine_betas calls betas_from_alpha_bar,
    the sampling loop sample_levels), so one mistake costs only its own task's points."""

    def __init__(self, sandbox: Sandbox, task):
        self.sandbox, self.task = sandbox, task

    def __call__(self, *args, **kwargs):
        helpers = {other.function: reference_function(other) for other in TASKS
                   if other.chapter == self.task.chapter and other is not self.task}
        return self.sandbox.call(self.task, args, kwargs, helpers)

    def __repr__(self) -> str:
        return f"<{self.task.function} of {self.sandbox.path}, run in a sandbox>"


class Implementation:
    """The task functions of one implementation, as attributes (``graded.linear_betas``).

    The reference's are minigen's own. A folder's are :class:`GradedFunction`: its chapter
    file is loaded on the first call, inside a check, in a sandbox process of its own, so a
    file that fails to import (or hangs, prints or exits) costs only its own chapter's tasks.
    """

    def __init__(self, target: str, timeout: float = DEFAULT_TIMEOUT):
        self.target, self.timeout = target, timeout
        self._sandboxes: dict = {}
        for task in TASKS:  # the classes a sandbox may send back (Timing, Schedule) are found among loaded modules
            reference_function(task)

    def __getattr__(self, name: str):
        if name.startswith("_"):
            raise AttributeError(name)
        task = next((t for t in TASKS if t.function == name), None)
        if task is None:
            raise AttributeError(f"{name} is not a graded task function")
        if self.target == "reference":
            return reference_function(task)
        if task.chapter not in self._sandboxes:
            path = os.path.join(self.target, f"{CHAPTERS[task.chapter][0]}.py")
            self._sandboxes[task.chapter] = Sandbox(path, process_time_limit(self.timeout))
        return GradedFunction(self._sandboxes[task.chapter], task)

    def close(self) -> None:
        """Stop every sandbox (and reap it)."""
        for sandbox in self._sandboxes.values():
            sandbox.stop()


# ----------------------------------------------------------------------------
# The hooks


_config = None  # the session's config, for the hooks that are not handed it


def pytest_configure(config):
    """Register one marker per task (``--strict-markers`` rejects any other ``task...``)."""
    global _config
    _config = config
    if os.environ.get(STUDENT_VARIABLE) or student.applied:
        raise pytest.UsageError(f"{STUDENT_VARIABLE} is set: the library's task functions would be a student's, "
                                f"and the reference with them; unset it to grade (minigen grade does)")
    for task in TASKS:
        config.addinivalue_line("markers", f"{task.marker}: graded task {task.id}, {task.title}")


def pytest_addoption(parser):
    group = parser.getgroup("minigen grading")
    group.addoption("--grade-target", help="what to grade: 'reference' or a folder of chapter files")
    group.addoption("--grade-timeout", type=float, default=DEFAULT_TIMEOUT, help="seconds per graded test")
    group.addoption("--grade-log-fd", type=int,
                    help="an open pipe to write one JSON line to per collected test, start and result")


@pytest.fixture(scope="session")
def graded(request):
    """The task functions being graded (see :class:`Implementation`)."""
    implementation = Implementation(request.config.getoption("grade_target"),
                                    request.config.getoption("grade_timeout"))
    yield implementation
    implementation.close()


def _log(config, **event) -> None:
    fd = config.getoption("grade_log_fd", None)
    if fd is not None:
        data = (json.dumps(event) + "\n").encode()
        while data:
            data = data[os.write(fd, data):]


def task_of(item) -> str:
    """The task id of a graded test: its one task marker."""
    markers = [mark.name for mark in item.iter_markers() if mark.name.startswith("task")]
    unknown = [name for name in markers if name not in _MARKERS]
    if len(markers) != 1 or unknown:
        raise pytest.UsageError(f"{item.nodeid}: a graded test needs exactly one known task marker "
                                f"(task1_1 ... ), found {markers}")
    return _MARKERS[markers[0]].id


def pytest_collection_finish(session):
    """Log the tests that will run (after ``-m`` and ``--deselect``), with their tasks."""
    if session.config.getoption("grade_target", None):
        for item in session.items:
            _log(session.config, event="collected", nodeid=item.nodeid, task=task_of(item))


def pytest_runtest_logstart(nodeid, location):
    _log(_config, event="start", nodeid=nodeid)


def pytest_runtest_logreport(report):
    if report.failed or report.when == "call" or report.skipped:
        passed = report.passed and report.when == "call"
        message = "" if passed else _failure_summary(report)
        _log(_config, event="result", nodeid=report.nodeid, when=report.when, passed=passed, message=message,
             seconds=round(float(report.duration), 6))


def _failure_summary(report) -> str:
    if report.skipped:
        return "skipped (a graded check must run)"
    crash = getattr(report.longrepr, "reprcrash", None)
    text = crash.message if crash is not None else str(report.longrepr)
    # numpy's assertions start with a bare "AssertionError:" line: keep the lines that say what differs.
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return " | ".join(lines[:3])[:300] or "failed"


def _alarm(seconds: float):
    def ring(signum, frame):
        raise GradingTimeout(f"took longer than {seconds:g} s (the per-test time limit); does it loop forever?")
    return ring


@pytest.hookimpl(wrapper=True)
def pytest_runtest_setup(item):
    return (yield from _with_time_limit(item))


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item):
    return (yield from _with_time_limit(item))


def _with_time_limit(item):
    seconds = item.config.getoption("grade_timeout", None)
    if not seconds or not hasattr(signal, "setitimer"):  # no alarms on Windows: the process limit remains
        return (yield)
    previous = signal.signal(signal.SIGALRM, _alarm(seconds))
    # Ring again every second, in case the student's code catches the first one.
    signal.setitimer(signal.ITIMER_REAL, seconds, 1.0)
    try:
        return (yield)
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


