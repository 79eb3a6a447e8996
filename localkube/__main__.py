"""``python -m localkube`` is the ``localkube`` command."""

from localkube.cli import main

main()
