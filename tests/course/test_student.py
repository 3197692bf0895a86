"""MINIGEN_EXERCISES: a student's chapter files power the library's models, and never the grader."""

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import minigen as mg
from minigen.course import student
from minigen.course.exercises import TASKS, generate, reference_function
from minigen.course.grading import grade, grading_environment
from minigen.models import ddpm, diffusion, pixelcnn

ROOT = Path(__file__).resolve().parents[2]
GRADED = ROOT / "tests" / "graded"
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1"}


@pytest.fixture(scope="module")
def solutions(tmp_path_factory):
    folder = tmp_path_factory.mktemp("student")
    generate(folder, solution=True)
    return folder


def pixelcnn_losses(steps=3):
    mg.manual_seed(0)
    model = pixelcnn.PixelCNN(channels=1, levels=2, hidden=4, blocks=1, first_kernel=3)
    optimizer = mg.optim.Adam(model.parameters(), lr=0.01)
    x = np.random.default_rng(0).integers(0, 2, (4, 1, 5, 5))
    from minigen import train
    return [train.training_step(model, optimizer, x).item() for _ in range(steps)]


def test_solved_functions_replace_the_librarys_and_a_model_trains_the_same(solutions):
    expected = pixelcnn_losses()
    try:
        taken, left = student.use_exercises(solutions)
        assert taken == [task.id for task in TASKS] and left == []
        chapter4 = sys.modules["minigen_exercises_ch4_pixelcnn"]
        assert pixelcnn.sample_levels is chapter4.sample_levels
        assert pixelcnn.masked_conv is sys.modules["minigen_exercises_ch3_masking"].masked_conv
        assert ddpm.q_sample is diffusion.q_sample is sys.modules["minigen_exercises_ch5_schedules"].q_sample
        assert pixelcnn_losses() == expected
    finally:
        student.restore()
    assert all(reference_function(task) is student.library[task.id] for task in TASKS)
    assert pixelcnn.sample_levels.__module__ == "minigen.models.pixelcnn"


def test_stubs_leave_the_librarys_functions():
    before = {task.id: reference_function(task) for task in TASKS}
    try:
        taken, left = student.use_exercises(ROOT / "exercises")
        assert taken == [] and left == [task.id for task in TASKS]
        assert {task.id: reference_function(task) for task in TASKS} == before
    finally:
        student.restore()


def run_python(code, folder):
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT,
                          env={**ENV, student.VARIABLE: str(folder)})


def test_importing_minigen_with_the_variable_uses_the_folder_and_says_so_in_one_line(solutions, tmp_path):
    folder = tmp_path / "partly"
    generate(folder, solution=True)
    stub = (ROOT / "exercises" / "ch6_ddpm.py").read_text()
    (folder / "ch6_ddpm.py").write_text(stub)
    done = run_python("import minigen.models.pixelcnn as p, minigen.models.ddpm as d; "
                      "print(p.sample_levels.__module__, d.simple_loss.__module__)", folder)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["minigen_exercises_ch4_pixelcnn", "minigen.models.ddpm"]
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "tasks 1.1, 1.2" in lines[0], lines
    six = ", ".join(task.id for task in TASKS if task.chapter == 6)
    assert lines[0].endswith(f"still stubs, so the library's: {six}")


def test_a_bad_folder_is_a_one_line_error(tmp_path):
    done = run_python("import minigen", tmp_path / "nowhere")
    assert done.returncode == 1
    assert done.stderr.strip().splitlines() == [
        f"minigen: MINIGEN_EXERCISES={tmp_path / 'nowhere'}: no such folder (it should hold the chapter files, "
        "like exercises/)"]
    (tmp_path / "ch2_autograd.py").write_text("def broken(:\n")
    done = run_python("import minigen", tmp_path)
    assert done.returncode == 1 and len(done.stderr.strip().splitlines()) == 1
    assert "ch2_autograd.py does not import: SyntaxError" in done.stderr


def test_the_grader_ignores_the_variable(solutions, tmp_path, monkeypatch):
    """A folder whose functions are all wrong, in MINIGEN_EXERCISES while grading: the reference and
    the graded folder still score what they score without it."""
    wrong = tmp_path / "wrong"
    generate(wrong, solution=True)
    path = wrong / "ch5_schedules.py"
    path.write_text(path.read_text() + "\n\ndef linear_betas(T):\n    return np.zeros(T)\n")
    monkeypatch.setenv(student.VARIABLE, str(wrong))
    assert student.VARIABLE not in grading_environment()
    for target in ("reference", str(solutions)):
        result = grade(target, tasks=["5.1", "5.3"], tests_dir=GRADED)
        assert result.total == 2.0, result.table()
    refused = subprocess.run([sys.executable, "-m", "pytest", str(GRADED), "-p", "minigen.course.grading_plugin",
                              "-p", "no:cacheprovider", "--grade-target", "reference", "-m", "task5_1"],
                             capture_output=True, text=True, cwd=ROOT, env={**ENV, student.VARIABLE: str(wrong)})
    assert refused.returncode != 0 and "MINIGEN_EXERCISES is set" in refused.stdout + refused.stderr
