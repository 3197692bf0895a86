"""The graded checks run only through ``minigen grade`` (or pytest with
``-p minigen.course.grading_plugin --grade-target ...``): the normal suite skips this folder,
since it would otherwise grade the unfinished stubs. The normal suite proves the
checks right another way, in tests/course/test_grading.py.

The task markers (``@pytest.mark.task3_2``) are registered by that plugin, from
``TASKS`` in minigen/course/exercises.py; the normal suite never imports these
files, so it needs no such markers."""

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
