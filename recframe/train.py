"""``python -m recframe.train``: see :mod:`recframe.cli.train`."""

import sys

from recframe.cli.train import main

if __name__ == "__main__":
    sys.exit(main())
