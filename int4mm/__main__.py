"""``python -m int4mm``: see :mod:`int4mm.cli`."""

import sys

from .cli import main

sys.exit(main())
