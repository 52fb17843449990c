"""``python -m llc demo``: the same as the ``llc`` command."""

import sys

from .cli import main

sys.exit(main())
