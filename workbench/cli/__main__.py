"""``python -m workbench.cli ...``: the `workbench` command without its console script (e.g. on a
machine where the project is on PYTHONPATH but not installed)."""

import sys

from . import main

sys.exit(main())
