"""``python -m hierarchy.cli``: the ``hierarchy`` console script."""

import sys

from hierarchy.cli import main

sys.exit(main())
