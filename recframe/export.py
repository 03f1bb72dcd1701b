"""``python -m recframe.export``: see :mod:`recframe.cli.export`."""

import sys

from recframe.cli.export import main

if __name__ == "__main__":
    sys.exit(main())
