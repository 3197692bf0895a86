"""The grader against a student's code that attacks it: forged verdicts, a forged report,
the reference looked up by name, and exits that would end the grading run.

Each attack is a few lines appended to a chapter file; the verdicts are decided in a
process that never imports that file (minigen.course.sandbox runs it), so the attacks
score nothing and cost nothing beyond their own tasks."""

import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
import time

import numpy as np
import pytest

from minigen import cli
from minigen.course import grading, wire
from minigen.course.exercises import CHAPTERS, TASKS, generate
from minigen.course.grading import grade
from minigen.models import diffusion

from .test_grading import GRADED, ROOT, check_gradescope, chapter_tasks

MAX_SCORE = sum(task.points for task in TASKS)


@pytest.fixture(scope="module")
def solutions(tmp_path_factory):
    folder = tmp_path_factory.mktemp("solutions")
    generate(folder, solution=True)
    return folder


def appended(base, tmp_path, chapter, source):
    """A copy of the chapter files in ``base`` whose chapter file ends with ``source``."""
    folder = tmp_path / "graded"
    shutil.copytree(base, folder, ignore=shutil.ignore_patterns("README.md"))
    path = folder / f"{CHAPTERS[chapter][0]}.py"
    path.write_text(path.read_text() + "\n\n" + source)
    return folder


def grade_with_report(folder, tmp_path, capsys, tasks=()):
    """Grade through the command line; returns (total in the table, results.json, its path)."""
    report_path = tmp_path / "results.json"
    arguments = [f"--task={task}" for task in tasks]
    assert cli.main(["grade", "--target", str(folder), "--tests", str(GRADED), "--json", str(report_path),
                     *arguments]) == 0
    table = capsys.readouterr().out
    total = float(re.search(r"^total: (\S+) of", table, re.M).group(1))
    report = json.loads(report_path.read_text())
    check_gradescope(report)
    assert report["score"] == total, "results.json disagrees with the table"
    return total, report, report_path


# ----------------------------------------------------------------------------
# Forged verdicts


REBIND_THE_LOGGER = '''
import minigen.course.grading_plugin as _plugin
_real_log = _plugin._log
def _forged_log(config, **event):
    if event.get("event") == "result":
        event.update(passed=True, message="")
    _real_log(config, **event)
_plugin._log = _forged_log
'''

PATCH_THE_REPORTS = '''
from _pytest.reports import TestReport
TestReport.passed = property(lambda self: True)
TestReport.failed = property(lambda self: False)
_original_init = TestReport.__init__
def _passing_init(self, *args, **kwargs):
    _original_init(self, *args, **kwargs)
    self.__dict__["outcome"], self.longrepr = "passed", None
TestReport.__init__ = _passing_init
'''


def test_the_stubs_with_a_rebound_logger_score_nothing(tmp_path, capsys):
    folder = appended(ROOT / "exercises", tmp_path, 1, REBIND_THE_LOGGER)
    for chapter in CHAPTERS:  # every chapter file carries the attack
        path = folder / f"{CHAPTERS[chapter][0]}.py"
        path.write_text(path.read_text() + "\n\n" + REBIND_THE_LOGGER)
    total, report, _ = grade_with_report(folder, tmp_path, capsys)
    assert total == 0 and sum(test["max_score"] for test in report["tests"]) == MAX_SCORE


def test_the_stubs_with_patched_pytest_reports_score_nothing(tmp_path, capsys):
    folder = appended(ROOT / "exercises", tmp_path, 5, PATCH_THE_REPORTS)
    total, _, _ = grade_with_report(folder, tmp_path, capsys, chapter_tasks(5))
    assert total == 0


FORGE_EVENTS_THEN_EXIT = r'''
def _forge_events_and_exit():
    import glob, json, os, re
    events = []
    for path in glob.glob(os.path.join(TESTS, "test_*.py")):
        for name in re.findall(r"^def (test_\w+)", open(path).read(), re.M):
            nodeid = os.path.relpath(path, ROOT) + "::" + name
            events.append(json.dumps({"event": "result", "nodeid": nodeid, "when": "call", "passed": True,
                                      "message": ""}))
    logs = glob.glob("/tmp/minigen-grade-*/events.jsonl") + glob.glob(f"/proc/{os.getppid()}/fd/*")
    for log in logs:
        try:
            with open(log, "a") as file:
                file.write("\n".join(events) + "\n")
        except OSError:
            pass
    os._exit(0)


def linear_betas(T):
    _forge_events_and_exit()


def betas_from_alpha_bar(alpha_bar_fn, T):
    _forge_events_and_exit()


def cosine_betas(T, s=0.008):
    _forge_events_and_exit()


def q_sample(schedule, x0, t, noise):
    _forge_events_and_exit()
'''


def test_the_stubs_that_forge_passed_events_then_exit_score_nothing(tmp_path, capsys):
    source = f"ROOT, TESTS = {str(ROOT)!r}, {str(GRADED)!r}\n" + FORGE_EVENTS_THEN_EXIT
    folder = appended(ROOT / "exercises", tmp_path, 5, source)
    total, report, _ = grade_with_report(folder, tmp_path, capsys, chapter_tasks(5))
    assert total == 0
    assert all("died (exit code 0)" in test["output"] for test in report["tests"])


FORGERY = ("import json, sys, time; time.sleep(float(sys.argv[2])); "
           "open(sys.argv[1], 'w').write(json.dumps({'score': 46.0, 'max_score': 46.0, 'tests': []}))")

REWRITE_THE_REPORT_LATER = '''
import json, os, subprocess, sys, time


def _rewrite_the_report_later(delay):
    try:
        subprocess.Popen([sys.executable, "-c", _FORGERY, RESULTS, str(delay)], start_new_session=True)
    except Exception:
        pass
    try:
        if os.fork() == 0:
            os.setsid()
            time.sleep(delay)
            open(RESULTS, "w").write(json.dumps({"score": 46.0, "max_score": 46.0, "tests": []}))
            os._exit(0)
    except Exception:
        pass


_rewrite_the_report_later(1.0)


def linear_betas(T):
    _rewrite_the_report_later(1.0)
    raise NotImplementedError("Task 5.1")
'''


def test_a_detached_process_cannot_rewrite_the_report_after_grading(tmp_path, capsys):
    results = tmp_path / "results.json"
    source = f"RESULTS, _FORGERY = {str(results)!r}, {FORGERY!r}\n" + REWRITE_THE_REPORT_LATER
    folder = appended(ROOT / "exercises", tmp_path, 5, source)
    total, report, _ = grade_with_report(folder, tmp_path, capsys, chapter_tasks(5))
    time.sleep(2.0)  # longer than the forger waits
    assert total == 0 and json.loads(results.read_text()) == report
    # The forgery itself works, where nothing stops it: the test above could fail.
    target = tmp_path / "forged.json"
    subprocess.run([sys.executable, "-c", FORGERY, str(target), "0"], check=True)
    assert json.loads(target.read_text())["score"] == 46.0


def test_the_report_is_read_back_after_writing(tmp_path, monkeypatch):
    result = grading.GradeResult(list(TASKS[:1]))
    grading.write_report(result, tmp_path / "results.json")
    assert json.loads((tmp_path / "results.json").read_text())["score"] == 0.0
    monkeypatch.setattr(grading, "write_text_atomically",
                        lambda path, text: open(path, "w").write(text.replace('"score": 0.0', '"score": 2.0', 1)))
    with pytest.raises(RuntimeError, match="changed after it was written"):
        grading.write_report(result, tmp_path / "forged.json")


# ----------------------------------------------------------------------------
# The reference, looked up instead of written


LOOK_UP_THE_REFERENCE = '''
import importlib, inspect, sys


def linear_betas(T):
    return getattr(importlib.import_module("minigen.models." + "diffusion"), "linear_" + "betas")(T)


def betas_from_alpha_bar(alpha_bar_fn, T):
    return vars(sys.modules["minigen.models.diffusion"])["betas_from_" + "alpha_bar"](alpha_bar_fn, T)


def cosine_betas(T, s=0.008):
    from minigen.models.diffusion import cosine_betas as solved
    return solved(T, s)


def q_sample(schedule, x0, t, noise):
    module = importlib.reload(sys.modules["minigen.models.diffusion"])
    return module.__dict__["q_sample"](schedule, x0, t, noise)
'''

LOOK_UP_THE_REFERENCE_INDIRECTLY = '''
import inspect
import minigen as mg
import numpy as np


def unbroadcast(grad, shape):  # the library's own backward calls its unbroadcast
    x = mg.tensor(np.zeros(shape, grad.dtype), requires_grad=True)
    (x + mg.tensor(np.zeros(grad.shape, grad.dtype))).backward(grad)
    return x.grad


def mul_backward(grad, a, b, needs=(True, True)):  # the source, read and run
    import ast
    import minigen.engine.ops as ops
    tree = ast.parse(inspect.getsource(ops))
    solved = next(node for node in tree.body if getattr(node, "name", "") == "mul_" + "backward")
    namespace = {}
    exec(compile(ast.Module([solved], []), "solved", "exec"), namespace)
    return namespace["mul_" + "backward"](grad, a, b, needs)
'''


def load_as_module(source: str, name: str):
    spec = importlib.util.spec_from_loader(name, loader=None)
    module = importlib.util.module_from_spec(spec)
    exec(compile(source, name, "exec"), module.__dict__)
    return module


def test_the_lookups_work_outside_the_grader():
    """Each lookup below finds the solution when nothing hides it: the test after this one could fail."""
    direct = load_as_module(LOOK_UP_THE_REFERENCE, "direct_lookups")
    np.testing.assert_array_equal(direct.linear_betas(100), diffusion.linear_betas(100))
    np.testing.assert_array_equal(direct.cosine_betas(10), diffusion.cosine_betas(10))
    alpha_bar = lambda u: 1 - u  # noqa: E731
    np.testing.assert_array_equal(direct.betas_from_alpha_bar(alpha_bar, 4), diffusion.betas_from_alpha_bar(alpha_bar, 4))
    indirect = load_as_module(LOOK_UP_THE_REFERENCE_INDIRECTLY, "indirect_lookups")
    grad = np.ones((2, 3), dtype=np.float32)
    np.testing.assert_array_equal(indirect.unbroadcast(grad, (1, 3)), np.full((1, 3), 2.0))
    ga, gb = indirect.mul_backward(grad, np.full((2, 3), 2.0), np.full((2, 3), 5.0))
    np.testing.assert_array_equal(ga, np.full((2, 3), 5.0))


def test_the_reference_is_hidden_from_the_graded_code(tmp_path):
    folder = appended(ROOT / "exercises", tmp_path, 5, LOOK_UP_THE_REFERENCE)
    ch2 = folder / f"{CHAPTERS[2][0]}.py"
    ch2.write_text(ch2.read_text() + "\n\n" + LOOK_UP_THE_REFERENCE_INDIRECTLY)
    result = grade(str(folder), tasks=chapter_tasks(5) + ["2.1", "2.2"], tests_dir=GRADED)
    assert result.total == 0, result.table()
    reasons = {test.task: test.message for test in result.tests.values()}
    for task in ("5.1", "5.2", "5.3", "2.1"):
        assert "hidden while your code is graded" in reasons[task], (task, reasons[task])
    for task in ("5.4", "2.2"):  # reload and getsource would read the solution's file
        assert "is not allowed while your code is graded" in reasons[task] or \
            "could not get source code" in reasons[task], (task, reasons[task])


# ----------------------------------------------------------------------------
# Exits and crashes cost their own task only


EXITS = '''
import os, sys
import pytest


def linear_betas(T):
    os._exit(0)


def betas_from_alpha_bar(alpha_bar_fn, T):
    os._exit(1)


def q_sample(schedule, x0, t, noise):
    pytest.exit("stop grading", returncode=0)


def x0_from_eps(schedule, xt, t, eps):
    sys.exit(0)


def posterior_mean(schedule, x0, xt, t):
    raise KeyboardInterrupt
'''


def test_exits_cost_only_their_own_task(solutions, tmp_path, capsys):
    folder = appended(solutions, tmp_path, 5, EXITS)
    ch6 = folder / f"{CHAPTERS[6][0]}.py"
    ch6.write_text(ch6.read_text() + "\n\n" + EXITS)
    total, report, _ = grade_with_report(folder, tmp_path, capsys, chapter_tasks(5) + chapter_tasks(6))
    outputs = {test["name"].split(":")[0]: test["output"] for test in report["tests"]}
    # 6.5 too: its simple_loss calls the q_sample of its own file, which now exits
    failed = {"Task 5.1", "Task 5.2", "Task 5.4", "Task 6.1", "Task 6.2", "Task 6.5"}
    assert {test["name"].split(":")[0] for test in report["tests"] if test["status"] == "failed"} == failed
    assert total == sum(t.points for t in TASKS if t.chapter in (5, 6) and f"Task {t.id}" not in failed)
    assert "died (exit code 0)" in outputs["Task 5.1"] and "died (exit code 1)" in outputs["Task 5.2"]
    assert "Exit: stop grading" in outputs["Task 5.4"] and "SystemExit" in outputs["Task 6.1"]
    assert "KeyboardInterrupt" in outputs["Task 6.2"]


# ----------------------------------------------------------------------------
# The wire takes data only


def channel_pair():
    """Two ends of a wire in this process: what ``sender`` sends, ``receiver`` receives."""
    forward_read, forward_write = os.pipe()
    back_read, back_write = os.pipe()
    return wire.Channel(back_read, forward_write), wire.Channel(forward_read, back_write)


def test_values_cross_as_copies_with_their_types_and_sharing():
    import minigen as mg
    sender, receiver = channel_pair()
    x = mg.tensor(np.arange(6.0, dtype=np.float32).reshape(2, 3), requires_grad=True)
    y = (x * 2).sum()
    shared = np.arange(3)
    value = {"y": y, "pair": (shared, shared), "scalar": np.float32(1.5), "dtype": np.dtype("int16"),
             "index": (slice(1, None), Ellipsis), "none": None, 7: [True, "text", 2.5]}
    sender.send("return", value=value)
    header, resolve = receiver.receive()
    got = resolve(header["value"])
    assert type(got["y"]) is mg.Tensor and type(got["y"].creator) is type(y.creator)
    np.testing.assert_array_equal(got["y"].creator.inputs[0].creator.inputs[0].data, x.data)
    assert got["pair"][0] is got["pair"][1] and got["pair"][0] is not shared
    assert type(got["scalar"]) is np.float32 and got["dtype"] == np.int16
    assert got["index"] == (slice(1, None), Ellipsis) and got[7] == [True, "text", 2.5] and got["none"] is None


@pytest.mark.parametrize("node, arrays, reason", [
    ({"t": "object", "class": "builtins:object", "state": {}}, [], "only minigen's own classes"),
    ({"t": "object", "class": "minigen.course.grading:GradeResult", "state": {}}, [], "only minigen's own classes"),
    ({"t": "object", "class": "minigen.engine.autograd:Tensor", "state": {"__class__": 1}}, [], "may not cross"),
    ({"t": "array", "a": 0}, [{"dtype": "|O", "shape": [1], "offset": 0, "nbytes": 8}], "numbers only"),
    ({"t": "array", "a": 0}, [{"dtype": "<f8", "shape": [4], "offset": 0, "nbytes": 8}], "does not fit"),
    ({"t": "module", "name": "os"}, [], "may not cross"),
    ({"t": "pickle", "data": "gASV"}, [], "unknown kind"),
], ids=["builtin class", "grader class", "dunder attribute", "object array", "short array", "module", "pickle"])
def test_the_receiver_refuses_what_is_not_data(node, arrays, reason):
    sender, receiver = channel_pair()
    wire.write_frame(sender.write_fd, {"kind": "return", "value": {"h": 1}, "nodes": {"1": node},
                                       "arrays": arrays, "updates": []}, [bytes(8)])
    with pytest.raises(wire.WireError, match=reason):
        receiver.receive()


def test_the_sender_refuses_objects_of_other_classes():
    sender, _ = channel_pair()

    class Evil:
        pass
    with pytest.raises(TypeError, match="cannot cross between the grader and the graded code"):
        sender.send("return", value=[Evil()])
