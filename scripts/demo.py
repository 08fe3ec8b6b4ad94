"""Run examples/quickstart.py against a private, throw-away redis-server.

The server listens on a free loopback port (never 6379), keeps no data on disk, lives in a
temporary directory and is always stopped by its PID afterwards.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

from resilient_cache.testing import RedisServer

QUICKSTART = Path(__file__).resolve().parent.parent / "examples" / "quickstart.py"


def main() -> int:
    binary = shutil.which("redis-server")
    if binary is None:
        print("redis-server not found: run scripts/install-deps.sh", file=sys.stderr)
        return 1
    with RedisServer(binary) as server:
        print(f">> private redis-server on {server.url}")
        result = subprocess.run(
            [sys.executable, str(QUICKSTART)],
            env={**os.environ, "REDIS_URL": server.url},
            timeout=60,
            check=False,
        )
    return result.returncode


if __name__ == "__main__":
    sys.exit(main())
