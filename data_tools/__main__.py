"""``python -m data_tools [data] <command> ...``: the ``rwf data`` commands without the rwf entry point."""

import sys

from .cli import main

sys.exit(main())
