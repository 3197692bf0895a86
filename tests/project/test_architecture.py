"""The package's layout rules, read from the source: imports point down, names stay in their homes.

The rules are stated in ``minigen/__init__.py`` and the README's "The house"
section; this test holds the code to them. It reads every module's imports
with ``ast`` (no import is executed), resolves relative imports, and checks:

* each module belongs to a layer, and imports only from its own layer or below
  (the engine imports nothing else of minigen; models never reach course or bench);
* no module imports another module's ``_private`` name;
* only the backend imports CuPy.
"""

import ast
from pathlib import Path

import pytest

import minigen

PACKAGE = Path(minigen.__file__).resolve().parent
LAYERS = minigen.LAYERS


def _modules():
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        yield name, path


def _imports(name: str, path: Path):
    """(imported module, imported names, line) for every import in the file, made absolute."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name, [], node.lineno
        elif isinstance(node, ast.ImportFrom):
            base = package.split(".")[: len(package.split(".")) - node.level + 1] if node.level else []
            module = ".".join(base + ([node.module] if node.module else []))
            yield module, [alias.name for alias in node.names], node.lineno


def _part(module: str) -> str | None:
    """The room of a minigen module: 'engine', 'models', 'train', ... (None outside minigen)."""
    parts = module.split(".")
    if parts[0] != "minigen":
        return None
    return parts[1] if len(parts) > 1 else "minigen"


def _layer(part: str) -> int:
    for index, rooms in enumerate(LAYERS):
        if part in rooms:
            return index
    raise AssertionError(f"minigen.{part} is in no layer; add it to minigen.LAYERS where it belongs")


MODULES = list(_modules())


@pytest.mark.parametrize("name, path", MODULES, ids=[name for name, _ in MODULES])
def test_imports_point_down(name, path):
    own = _layer(_part(name))
    for module, names, line in _imports(name, path):
        part = _part(module)
        if part is None:
            continue
        targets = [part] if part != "minigen" else [n for n in names]  # `from . import nn` at the top
        for target in targets:
            if target in {room for rooms in LAYERS for room in rooms}:
                assert _layer(target) <= own, (f"{path.name}:{line} imports minigen.{target} (layer "
                                               f"{_layer(target)}) from layer {own}: imports must point down")


@pytest.mark.parametrize("name, path", MODULES, ids=[name for name, _ in MODULES])
def test_no_private_name_crosses_a_module(name, path):
    for module, names, line in _imports(name, path):
        if _part(module) is None or module == name:
            continue
        private = [n for n in names if n.startswith("_") and not n.startswith("__")]
        assert not private, (f"{path}:{line} imports {', '.join(private)} from {module}: give the helper "
                             "a public name in its one home")


def test_the_engine_imports_nothing_above_it():
    for name, path in MODULES:
        if _part(name) == "engine":
            for module, _, line in _imports(name, path):
                assert _part(module) in (None, "engine"), f"{path.name}:{line} imports {module}"


def test_only_the_backend_imports_cupy():
    importers = {name for name, path in MODULES for module, _, _ in _imports(name, path)
                 if module.split(".")[0] == "cupy"}
    assert importers <= {"minigen.engine.backend"}


def test_the_checker_sees_a_violation(tmp_path):
    """The rule above can fail: an upward import in a models file is caught."""
    fake = tmp_path / "minigen" / "models" / "leaky.py"
    fake.parent.mkdir(parents=True)
    fake.write_text("from ..course import grading\nfrom ..engine.nn import _check_sizes\n")
    found = list(_imports("minigen.models.leaky", fake))
    assert ("minigen.course", ["grading"], 1) in found
    assert _layer("course") > _layer("models")
    assert ("minigen.engine.nn", ["_check_sizes"], 2) in found


def test_every_room_on_disk_is_in_a_layer():
    rooms = {p.stem if p.is_file() else p.name for p in PACKAGE.iterdir()
             if (p.suffix == ".py" and p.stem != "__init__") or (p.is_dir() and (p / "__init__.py").exists())}
    assert rooms <= {room for layer in LAYERS for room in layer}
