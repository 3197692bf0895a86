"""The one place that chooses minigen's progress bar: a notebook widget, or plain text.

``tqdm.auto`` picks the widget bar whenever it runs inside Jupyter, and there,
without ipywidgets installed, it prints "IProgress not found" instead of a
bar. So the widget bar is chosen only inside IPython and only when ipywidgets
imports; everywhere else (a terminal, a pipe, a notebook without widgets) the
plain-text bar is used, which Jupyter shows as one updating line. Every bar in
minigen outside the engine and the course tools comes from here::

    from .progress import tqdm
"""

from __future__ import annotations

import importlib
import sys


def widgets_available() -> bool:
    """True inside IPython (a notebook kernel) when ipywidgets imports, so the widget bar can draw."""
    if "IPython" not in sys.modules:
        return False
    try:
        importlib.import_module("ipywidgets")
    except ImportError:
        return False
    return True


if widgets_available():
    from tqdm.auto import tqdm
else:
    from tqdm.std import tqdm

__all__ = ["tqdm", "widgets_available"]
