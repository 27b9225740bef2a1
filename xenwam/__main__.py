"""``python3 -m xenwam``: the same command as ``xenwam``."""

import sys

from xenwam.cli import main

sys.exit(main())
