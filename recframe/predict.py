"""``python -m recframe.predict``: see :mod:`recframe.cli.predict`."""

import sys

from recframe.cli.predict import main

if __name__ == "__main__":
    sys.exit(main())
