"""Run minigen with a student's exercises: ``MINIGEN_EXERCISES=path/to/folder``.

With that variable set, ``import minigen`` loads the folder's chapter files
(``ch4_pixelcnn.py``, ...) and puts each *solved* task function in place of the
library's own, in its home module and wherever minigen bound the name, so the
book's chapters, ``minigen train`` and any script run the models on the
student's code. A function left as the generated stub (its body still raises
NotImplementedError) stays the library's. One line on stderr says which tasks
came from the folder; a folder that does not exist, or a chapter file that does
not import, stops the program with a one-line error.

The grader never does this: ``minigen grade`` starts pytest without the variable
(:func:`minigen.course.grading.grade`), its plugin refuses to run where it was
applied, and each sandbox starts with an environment of its own.
"""

from __future__ import annotations

import ast
import importlib.util
import inspect
import os
import sys
import textwrap
from pathlib import Path

from .exercises import CHAPTERS, TASKS, reference_function

VARIABLE = "MINIGEN_EXERCISES"

applied: dict = {}  # task id -> the student's function now in the library
library: dict = {}  # task id -> the library's own function it replaced


def is_stub(function) -> bool:
    """Whether ``function`` is still the generated stub: its body (not a nested block) raises
    NotImplementedError, as the stub's last line does."""
    try:
        tree = ast.parse(textwrap.dedent(inspect.getsource(function)))
    except (OSError, TypeError, SyntaxError):
        return False
    body = tree.body[0].body if tree.body and isinstance(tree.body[0], ast.FunctionDef) else []
    for statement in body:
        if isinstance(statement, ast.Raise) and statement.exc is not None:
            raised = statement.exc.func if isinstance(statement.exc, ast.Call) else statement.exc
            if isinstance(raised, ast.Name) and raised.id == "NotImplementedError":
                return True
    return False


def load_chapter(path: Path):
    """The chapter file at ``path`` as a module (named ``minigen_exercises_ch4_pixelcnn``)."""
    name = f"minigen_exercises_{path.stem}"
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses and typing look a module up by name
    try:
        spec.loader.exec_module(module)
    except BaseException:
        sys.modules.pop(name, None)
        raise
    return module


def use_exercises(folder) -> tuple:
    """Put the solved task functions of the chapter files in ``folder`` into the library;
    returns (task ids taken from the folder, task ids left to the library). Raises
    ValueError with a one-line reason if the folder is missing or a file does not import."""
    folder = Path(folder)
    if not folder.is_dir():
        raise ValueError(f"{VARIABLE}={folder}: no such folder (it should hold the chapter files, "
                         "like exercises/)")
    taken, left = [], []
    for chapter, (stem, _) in CHAPTERS.items():
        tasks = [task for task in TASKS if task.chapter == chapter]
        path = folder / f"{stem}.py"
        if not path.is_file():
            left += [task.id for task in tasks]
            continue
        try:
            module = load_chapter(path)
        except Exception as error:
            first = str(error).splitlines()[0] if str(error) else ""
            raise ValueError(f"{VARIABLE}={folder}: {path.name} does not import: "
                             f"{type(error).__name__}: {first}") from None
        for task in tasks:
            function = getattr(module, task.function, None)
            if not callable(function) or is_stub(function):
                left.append(task.id)
                continue
            replace(task, function)
            taken.append(task.id)
    return taken, left


def replace(task, function) -> None:
    """``function`` in place of the library's function of ``task``, in every loaded minigen module
    that holds the library's (its home, and the modules that imported it by name)."""
    original = library.setdefault(task.id, reference_function(task))
    for name, module in list(sys.modules.items()):
        if module is not None and (name == "minigen" or name.startswith("minigen.")):
            namespace = vars(module)
            if namespace.get(task.function) is original:
                namespace[task.function] = function
    applied[task.id] = function


def restore() -> None:
    """Put the library's own functions back (for tests)."""
    for task in TASKS:
        if task.id in applied:
            for name, module in list(sys.modules.items()):
                if module is not None and (name == "minigen" or name.startswith("minigen.")):
                    namespace = vars(module)
                    if namespace.get(task.function) is applied[task.id]:
                        namespace[task.function] = library[task.id]
    applied.clear()


def apply_from_environment() -> None:
    """What ``import minigen`` calls when :data:`VARIABLE` is set: apply, and say so in one line."""
    folder = os.environ.get(VARIABLE, "")
    try:
        taken, left = use_exercises(folder)
    except ValueError as error:
        raise SystemExit(f"minigen: {error}") from None
    unsolved = f"; still stubs, so the library's: {', '.join(left)}" if left else ""
    print(f"minigen: {VARIABLE}={folder}: tasks {', '.join(taken) or 'none'} from the folder{unsolved}",
          file=sys.stderr)
