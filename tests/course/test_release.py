"""What a course hands out: the students' release (no hidden checks) and the Gradescope
autograder (every check), each tried the way it will be used."""

import json
import os
import stat
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from minigen import cli
from minigen.course.exercises import TASKS, generate
from minigen.course.release import HIDDEN, public_checks

from .test_grading import MAX_SCORE, check_gradescope

ROOT = Path(__file__).resolve().parents[2]
HIDDEN_CHECKS = sorted((ROOT / "tests" / "graded" / HIDDEN).glob("test_*.py"))


def test_there_are_hidden_checks_and_the_release_leaves_them_out(tmp_path, capsys):
    assert HIDDEN_CHECKS, "the hidden folder holds at least one check"
    out = tmp_path / "release"
    assert cli.main(["course", "release", str(out)]) == 0
    assert sorted(p.name for p in (out / "exercises").glob("ch*.py")) == sorted(
        p.name for p in (ROOT / "exercises").glob("ch*.py"))
    shipped = {p.relative_to(out / "tests" / "graded") for p in (out / "tests" / "graded").rglob("*.py")}
    assert shipped == {relative for _, relative in public_checks()}
    assert not (out / "tests" / "graded" / HIDDEN).exists()
    assert "Task 10.2" in (out / "exercises" / "ch10_attention.py").read_text()
    capsys.readouterr()
    assert cli.main(["course", "release", str(out)]) == 2, "an existing release is never overwritten"
    assert "already exists" in capsys.readouterr().err


def test_a_student_grades_the_release_with_its_public_checks(tmp_path, capsys):
    out = tmp_path / "release"
    cli.main(["course", "release", str(out)])
    capsys.readouterr()
    assert cli.main(["grade", "--target", str(out / "exercises"), "--tests", str(out / "tests" / "graded"),
                     "--task", "4.2"]) == 0
    table = capsys.readouterr().out
    assert "4.2   0/1     0/2" in table, table  # the two public checks, not the hidden one


def run_autograder(source: Path, submission: Path, root: Path) -> dict:
    """Run the zip's run_autograder as Gradescope would, with /autograder moved to ``root``."""
    (root / "submission").mkdir(parents=True)
    for path in submission.glob("ch*.py"):
        (root / "submission" / path.name).write_text(path.read_text())
    (root / "source").symlink_to(source)
    env = {**os.environ, "AUTOGRADER_ROOT": str(root), "AUTOGRADER_PYTHON": sys.executable}
    done = subprocess.run(["bash", str(root / "source" / "run_autograder")], env=env, capture_output=True, text=True,
                          timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    return json.loads((root / "results" / "results.json").read_text())


@pytest.fixture(scope="module")
def autograder(tmp_path_factory):
    """The autograder zip, written by the command and unpacked as Gradescope unpacks it."""
    folder = tmp_path_factory.mktemp("autograder")
    zip_path = folder / "autograder.zip"
    assert cli.main(["grade", "--gradescope-autograder", str(zip_path)]) == 0
    with zipfile.ZipFile(zip_path) as archive:
        names = archive.namelist()
        modes = {info.filename: info.external_attr >> 16 for info in archive.infolist()}
        archive.extractall(folder / "source")
    return folder, names, modes


def test_the_autograder_zip_has_gradescopes_two_scripts_at_its_root(autograder):
    folder, names, modes = autograder
    assert {"setup.sh", "run_autograder"} <= set(names)
    assert all(modes[name] & stat.S_IXUSR for name in ("setup.sh", "run_autograder"))
    assert "pyproject.toml" in names and "minigen/course/grading.py" in names
    assert {f"tests/graded/{HIDDEN}/{path.name}" for path in HIDDEN_CHECKS} <= set(names)
    setup = (folder / "source" / "setup.sh").read_text()
    assert "pip install" in setup and "/autograder/source" in setup


def test_the_autograder_grades_a_submission_with_every_check_into_a_valid_report(autograder, tmp_path):
    folder, _, _ = autograder
    solutions = tmp_path / "solutions"
    generate(solutions, solution=True)
    report = run_autograder(folder / "source", solutions, tmp_path / "autograder")
    check_gradescope(report)
    assert report["score"] == MAX_SCORE
    hidden = [test for test in report["tests"] if test["visibility"] == "after_published"]
    assert hidden and all(test["number"].endswith(".hidden") and test["max_score"] == 0 for test in hidden)
    assert [test["number"] for test in report["tests"] if test["visibility"] == "visible"] == [t.id for t in TASKS]


def test_the_autograder_gives_the_stubs_nothing_and_keeps_hidden_failures_unnamed(autograder, tmp_path):
    folder, _, _ = autograder
    report = run_autograder(folder / "source", ROOT / "exercises", tmp_path / "autograder")
    check_gradescope(report)
    assert report["score"] == 0
    bits = next(test for test in report["tests"] if test["number"] == "4.2")
    assert "1 hidden check(s) failed" in bits["output"]
    assert "array_of_nlls" not in bits["output"], "a hidden check is named only once grades are published"
    hidden = next(test for test in report["tests"] if test["number"] == "4.2.hidden")
    assert "test_bits_per_dim_works_on_an_array_of_nlls" in hidden["output"]
