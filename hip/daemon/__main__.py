"""``python -m hip.daemon``: hipd, the same program as the ``hipd`` console script."""

from hip.daemon import main

main()
