"""``python -m skpo …`` is ``skpo …``."""

from skpo.cli import main

raise SystemExit(main())
