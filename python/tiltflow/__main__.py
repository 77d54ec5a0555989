"""``python -m tiltflow``: the same command line as the ``tiltflow`` script."""

from tiltflow.cli import main

raise SystemExit(main())
