"""``python -m recframe <command>``: the same as ``recframe <command>``."""

import sys

from recframe.cli.main import main

sys.exit(main())
