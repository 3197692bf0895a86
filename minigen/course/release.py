"""What a course hands out: the students' copy of the exercises, and a Gradescope autograder.

    minigen course release OUT_DIR                      # exercises/ and the public checks, for students
    minigen grade --gradescope-autograder OUT.zip       # the autograder to upload to Gradescope

The student release holds the generated stubs (``exercises/``, with its
README) and the graded checks without the instructors' ``hidden/`` folder, so
a student can run ``minigen grade --target exercises --tests tests/graded``.

The autograder zip holds, at its root, what Gradescope's specification asks
for (gradescope/autograder_samples, docs/specs.md): ``setup.sh``, which
installs Python, pytest and this minigen (its source is in the zip, so the
image grades with the version the course was built with), and
``run_autograder``, which grades the chapter files in /autograder/submission
with every check, hidden ones included, and writes
/autograder/results/results.json. Hidden checks' names and failures reach
students only once the grades are published (see
:meth:`minigen.course.grading.GradeResult.gradescope`).
"""

from __future__ import annotations

import io
import os
import shutil
import zipfile
from pathlib import Path

from ..errors import UserError
from ..files import write_atomically
from .exercises import README, generate, readme_source
from .grading import DEFAULT_TESTS, HIDDEN

PACKAGE = Path(__file__).resolve().parents[1]  # minigen/
SOURCE_ROOT = PACKAGE.parent  # a clone: pyproject.toml, README.md, tests/
RELEASE_README = Path("exercises") / README

SETUP_SH = """#!/usr/bin/env bash
# Gradescope runs this once, to build the autograder's image.
set -euo pipefail
apt-get update
apt-get install -y python3 python3-pip python3-venv
python3 -m venv /autograder/venv
/autograder/venv/bin/pip install --upgrade pip
/autograder/venv/bin/pip install "pytest>=8" /autograder/source
"""

RUN_AUTOGRADER = """#!/usr/bin/env bash
# Gradescope runs this for every submission: the student's chapter files are in
# $ROOT/submission (or its exercises/ folder); the report goes to $ROOT/results/results.json.
set -uo pipefail
ROOT="${AUTOGRADER_ROOT:-/autograder}"
PYTHON="${AUTOGRADER_PYTHON:-$ROOT/venv/bin/python}"
TARGET="$ROOT/submission"
if [ -d "$TARGET/exercises" ]; then TARGET="$TARGET/exercises"; fi
mkdir -p "$ROOT/results"
cd "$ROOT/source"
"$PYTHON" -m minigen grade --target "$TARGET" --tests "$ROOT/source/tests/graded" \\
    --json "$ROOT/results/results.json"
"""


def _require_clone() -> None:
    """The release and the autograder are built from a clone (the checks are not in the package)."""
    missing = [name for name in ("pyproject.toml", "README.md", str(DEFAULT_TESTS), str(RELEASE_README))
               if not (SOURCE_ROOT / name).exists()]
    if missing:
        raise UserError(f"the course files are not here ({', '.join(missing)} missing beside {PACKAGE}): "
                        "build the release from a clone of minigen (git clone, then pip install -e .)")


def _empty_folder(out_dir) -> Path:
    out = Path(out_dir)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise UserError(f"{out} already exists and is not an empty folder; choose a new OUT_DIR")
    return out


def public_checks(tests_dir: Path = SOURCE_ROOT / DEFAULT_TESTS):
    """(path, relative path) of every graded check file students may see: all but ``hidden/``."""
    for path in sorted(tests_dir.rglob("*.py")):
        relative = path.relative_to(tests_dir)
        if relative.parts[0] != HIDDEN and "__pycache__" not in relative.parts:
            yield path, relative


def release(out_dir) -> list:
    """Write the students' copy to the new folder ``out_dir``: ``exercises/`` (the stubs and
    their README) and ``tests/graded/`` without ``hidden/``. Returns the paths written."""
    _require_clone()
    out = _empty_folder(out_dir)
    written = generate(out / "exercises")
    readme = out / "exercises" / README
    readme.write_text(readme_source((SOURCE_ROOT / RELEASE_README).read_text(), readme))
    written.append(readme)
    for path, relative in public_checks():
        target = out / DEFAULT_TESTS / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, target)
        written.append(target)
    return written


def _source_files():
    """(path, name in the zip) of the minigen source: the package, pyproject.toml, README.md,
    and every graded check (hidden ones included: the autograder runs them)."""
    for name in ("pyproject.toml", "README.md"):
        yield SOURCE_ROOT / name, name
    roots = [(PACKAGE, "minigen"), (SOURCE_ROOT / DEFAULT_TESTS, DEFAULT_TESTS.as_posix())]
    for root, prefix in roots:
        for path in sorted(root.rglob("*")):
            if path.is_file() and "__pycache__" not in path.parts and path.suffix != ".pyc":
                yield path, f"{prefix}/{path.relative_to(root).as_posix()}"


def _executable(name: str) -> zipfile.ZipInfo:
    info = zipfile.ZipInfo(name)
    info.external_attr = 0o100755 << 16  # a regular file, rwxr-xr-x
    info.compress_type = zipfile.ZIP_DEFLATED
    return info


def gradescope_autograder(zip_path) -> list:
    """Write the Gradescope autograder to ``zip_path`` (atomically); returns the names in it."""
    _require_clone()
    if not str(zip_path).endswith(".zip"):
        raise UserError(f"the autograder is a zip file: give a path ending in .zip, got {zip_path}")
    buffer, names = io.BytesIO(), []
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, text in (("setup.sh", SETUP_SH), ("run_autograder", RUN_AUTOGRADER)):
            archive.writestr(_executable(name), text)
            names.append(name)
        for path, name in _source_files():
            archive.write(path, name)
            names.append(name)
    os.makedirs(os.path.dirname(os.path.abspath(zip_path)), exist_ok=True)
    write_atomically(str(zip_path), lambda file: file.write(buffer.getvalue()))
    return names


def add_command(commands) -> None:
    """The ``course`` sub-command of the ``minigen`` CLI (``course release``)."""
    course = commands.add_parser("course", help="hand out the exercises: the students' copy")
    actions = course.add_subparsers(dest="action", metavar="ACTION", required=True)
    out = actions.add_parser("release", help="write the exercises and the public graded checks for students")
    out.add_argument("out_dir", metavar="OUT_DIR", help="a new (or empty) folder")
    out.set_defaults(run=_release_command)


def _release_command(args) -> int:
    written = release(args.out_dir)
    print(f"wrote {len(written)} files to {args.out_dir}: exercises/ (the stubs) and tests/graded/ (the public "
          f"checks; the hidden ones stay with the autograder). Students grade with\n"
          f"  minigen grade --target {args.out_dir}/exercises --tests {args.out_dir}/tests/graded")
    return 0
