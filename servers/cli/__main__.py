"""``python -m servers.cli``: the ``dataproducts`` command without its console script."""

from servers.cli import main

main()
