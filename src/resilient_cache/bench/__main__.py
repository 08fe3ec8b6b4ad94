"""``python -m resilient_cache.bench``, deprecated: ``resilient-cache bench`` (or
``python -m resilient_cache.cli.bench``) runs the same."""

import sys

from resilient_cache.cli.bench.__main__ import main

print(
    "note: `python -m resilient_cache.bench` is deprecated; run `resilient-cache bench`",
    file=sys.stderr,
)
sys.exit(main())
