"""``python -m dvecdb_node`` is ``dvecdb-node``."""

from dvecdb_node.cli import main

raise SystemExit(main())
