"""``python -m minigen`` is the ``minigen`` command."""

from .cli import main

raise SystemExit(main())
