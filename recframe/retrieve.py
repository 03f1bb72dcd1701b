"""``python -m recframe.retrieve``: see :mod:`recframe.cli.retrieve`."""

import sys

from recframe.cli.retrieve import main

if __name__ == "__main__":
    sys.exit(main())
