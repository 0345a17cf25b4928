"""``python -m groundwatch``: the command line (what child worker processes are started with)."""

import sys

from groundwatch.cli import main

sys.exit(main())
