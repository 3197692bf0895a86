"""The graded checks run only through ``minigen grade`` (or pytest with
``-p minigen.course.grading_plugin --grade-target ...``): the normal suite skips this folder,
since it would otherwise grade the unfinished stubs. The normal suite proves the
checks right another way, in tests/course/test_grading.py.

The task markers (``@pytest.mark.task3_2``) are registered by that plugin, from
``TASKS`` in minigen/course/exercises.py; the normal suite never imports these
files, so it needs no such markers."""

import contextlib

import numpy as np
import pytest


def pytest_ignore_collect(collection_path, config):
    if not config.getoption("grade_target", None):
        return True
    return None


def pytest_collect_file(file_path, parent):
    """A graded file named on the command line without the plugin: say how to run it."""
    if file_path.suffix == ".py" and not parent.config.getoption("grade_target", None):
        raise pytest.UsageError(f"{file_path.name} is a graded check: run it with minigen grade, or add "
                                "-p minigen.course.grading_plugin --grade-target exercises")


# ----------------------------------------------------------------------------
# Helpers of the graded checks


def _snapshot(value):
    """A copy of what a graded function must leave alone: an array, a Tensor's array,
    or the array attributes of an object such as a Schedule; None for anything else."""
    from minigen.engine.autograd import Tensor
    if isinstance(value, Tensor):
        value = value.data
    if isinstance(value, np.ndarray):
        return value.copy()
    if hasattr(value, "__dict__"):
        arrays = {name: a.copy() for name, a in vars(value).items() if isinstance(a, np.ndarray)}
        return arrays or None
    return None


def _check_unchanged(index, value, before):
    from minigen.engine.autograd import Tensor
    after = value.data if isinstance(value, Tensor) else value
    if isinstance(before, dict):
        for name, array in before.items():
            _check_unchanged(f"{index}.{name}", getattr(value, name), array)
        return
    assert after.dtype == before.dtype and after.shape == before.shape, \
        f"input {index} was changed: {before.dtype} {before.shape} became {after.dtype} {after.shape}"
    np.testing.assert_array_equal(after, before, err_msg=f"input {index} was changed in place; "
                                  "a graded function must leave its inputs as they were (copy first)")


@contextlib.contextmanager
def _inputs_unchanged(*inputs):
    before = [_snapshot(value) for value in inputs]
    yield
    for index, (value, copy) in enumerate(zip(inputs, before)):
        if copy is not None:
            _check_unchanged(index, value, copy)


@pytest.fixture
def unchanged():
    """``with unchanged(x, t): graded.f(x, t)`` fails if the call changed x or t (arrays, Tensors,
    or the arrays of an object such as a Schedule) in place: callers in minigen reuse them."""
    return _inputs_unchanged
