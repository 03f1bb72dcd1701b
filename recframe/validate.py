"""``python -m recframe.validate``: see :mod:`recframe.cli.validate`."""

import sys

from recframe.cli.validate import main

if __name__ == "__main__":
    sys.exit(main())
