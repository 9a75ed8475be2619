"""``python -m vision``: the ``vision`` command."""

from vision.cli.main import main

raise SystemExit(main())
