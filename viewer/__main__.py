"""``python -m viewer view RUN``: the same as ``rwf view RUN``."""

import sys

from .cli import main

sys.exit(main())
