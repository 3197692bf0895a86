"""The pytest plugin of the graded checks (``pytest -p minigen.course.grading_plugin``).

``minigen grade`` (:mod:`minigen.course.grading`) loads it in a child pytest process.
It adds the options ``--grade-target`` (what to grade), ``--grade-timeout``
(seconds per check) and ``--grade-log`` (a file of JSON lines: the tests
collected with their tasks, each start, each result), the ``graded``
fixture, the task markers (``task3_2``, registered from ``TASKS``: the task
list has one home, so pyproject.toml does not repeat them), a check that
every graded test has exactly one known task marker, and a per-test time
limit (a POSIX alarm).
"""

from __future__ import annotations

import importlib.util
import json
import signal
from pathlib import Path

import pytest

from .exercises import CHAPTERS, TASKS, reference_function
from .grading import DEFAULT_TIMEOUT

_MARKERS = {task.marker: task for task in TASKS}


# ----------------------------------------------------------------------------
# What is graded: the reference, or a folder of chapter files


class GradingTimeout(BaseException):
    """A graded test ran past its time limit (a BaseException: ``except Exception`` cannot swallow it)."""


def _failing(message: str):
    def unavailable(*args, **kwargs):
        raise RuntimeError(message)
    return unavailable


class Implementation:
    """The task functions of one implementation, as attributes (``graded.linear_betas``).

    A folder's chapter file is imported on first use, inside a test, so a file
    that fails to import (or hangs, or prints) costs only its own chapter's tasks.
    """

    def __init__(self, target: str):
        self.target = target
        self._functions: dict = {}

    def __getattr__(self, name: str):
        if name.startswith("_"):
            raise AttributeError(name)
        task = next((t for t in TASKS if t.function == name), None)
        if task is None:
            raise AttributeError(f"{name} is not a graded task function")
        if name not in self._functions:
            self._load(task.chapter)
        return self._functions[name]

    def _load(self, chapter: int) -> None:
        tasks = [task for task in TASKS if task.chapter == chapter]
        if self.target == "reference":
            self._functions.update({task.function: reference_function(task) for task in tasks})
            return
        path = Path(self.target) / f"{CHAPTERS[chapter][0]}.py"
        # Mark the chapter as loading first: a file whose import times out is not imported again.
        self._functions.update({task.function: _failing(f"{path} did not finish importing") for task in tasks})
        try:
            spec = importlib.util.spec_from_file_location(f"graded_{CHAPTERS[chapter][0]}", path)
            module = importlib.util.module_from_spec(spec)
            spec.loader.exec_module(module)
        except BaseException as error:  # the student's file: any failure costs its tasks only
            message = f"{path} could not be imported: {type(error).__name__}: {error}"
            self._functions.update({task.function: _failing(message) for task in tasks})
            raise RuntimeError(message) from error
        for task in tasks:
            self._functions[task.function] = getattr(
                module, task.function, _failing(f"{path} has no function {task.function} (task {task.id})"))


# ----------------------------------------------------------------------------
# The hooks


_config = None  # the session's config, for the hooks that are not handed it


def pytest_configure(config):
    """Register one marker per task (``--strict-markers`` rejects any other ``task...``)."""
    global _config
    _config = config
    for task in TASKS:
        config.addinivalue_line("markers", f"{task.marker}: graded task {task.id}, {task.title}")


def pytest_addoption(parser):
    group = parser.getgroup("minigen grading")
    group.addoption("--grade-target", help="what to grade: 'reference' or a folder of chapter files")
    group.addoption("--grade-timeout", type=float, default=DEFAULT_TIMEOUT, help="seconds per graded test")
    group.addoption("--grade-log", help="file to append one JSON line to per collected test, start and result")


@pytest.fixture(scope="session")
def graded(request):
    """The task functions being graded (see :class:`Implementation`)."""
    return Implementation(request.config.getoption("grade_target"))


def _log(config, **event) -> None:
    path = config.getoption("grade_log", None)
    if path:
        with open(path, "a") as file:
            file.write(json.dumps(event) + "\n")


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
        _log(_config, event="result", nodeid=report.nodeid, when=report.when, passed=passed, message=message)


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


