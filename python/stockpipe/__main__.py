"""``python -m stockpipe``: the same as the ``stockpipe`` command."""

import sys

from stockpipe.cli import main

sys.exit(main(prog="python -m stockpipe"))
