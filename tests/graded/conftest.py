"""The graded checks run only through ``minigen grade`` (or pytest with
``-p minigen.course.grading_plugin --grade-target ...``): the normal suite skips this folder,
since it would otherwise grade the unfinished stubs. The normal suite proves the
checks right another way, in tests/course/test_grading.py."""


def pytest_ignore_collect(collection_path, config):
    if not config.getoption("grade_target", None):
        return True
    return None
