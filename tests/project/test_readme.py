"""The README's promises: two commands up front, and CI runs the second one."""

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _readme_commands():
    return re.findall(r"```bash\n(.*?)\n```", (ROOT / "README.md").read_text(), re.S)


def test_readme_opens_with_two_commands():
    install_and_demo, install_and_test = _readme_commands()[:2]
    assert "minigen demo" in install_and_demo
    assert "pytest" in install_and_test


def test_ci_runs_the_readme_test_command():
    ci_lines = (ROOT / ".ci" / "run").read_text().splitlines()
    assert _readme_commands()[1] in ci_lines


def test_no_placeholders_left_in_readme():
    assert "PLACEHOLDER" not in (ROOT / "README.md").read_text()


def test_readme_python_examples_run(tmp_path, monkeypatch):
    """The tour's code is what a reader will paste: it must run as written."""
    monkeypatch.chdir(tmp_path)
    blocks = re.findall(r"```python\n(.*?)\n```", (ROOT / "README.md").read_text(), re.S)
    assert blocks
    for block in blocks:
        exec(compile(block, "README.md", "exec"), {})
