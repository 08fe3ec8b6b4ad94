"""``python -m resilient_cache``: the same as the ``resilient-cache`` command."""

import sys

from resilient_cache.cli import main

sys.exit(main())
