"""``python -m workflow.search``: the search command line (run a study, or join one as a worker)."""

from .cli import main

raise SystemExit(main())
