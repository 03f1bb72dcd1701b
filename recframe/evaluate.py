"""``python -m recframe.evaluate``: see :mod:`recframe.cli.evaluate`."""

import sys

from recframe.cli.evaluate import main

if __name__ == "__main__":
    sys.exit(main())
