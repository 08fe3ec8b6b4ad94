"""What the source distribution carries: the project's files (tracked, or new and not
ignored), nothing else of a checkout's.

Before: a sdist built in a working checkout carried the floors and latest venvs (7,000 files)
and, after ``make demo``, its report and log.
"""

from __future__ import annotations

import re
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
REPOSITORY = "https://github.com/resilient-cache/resilient-cache"


@pytest.mark.slow
def test_the_sdist_carries_the_projects_files_only(tmp_path: Path) -> None:
    tracked = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    if tracked.returncode != 0:
        pytest.skip("not a git checkout")
    stray = [ROOT / "resilient-cache-report.html", ROOT / "build" / "stray.txt"]
    kept = {path: path.read_bytes() for path in stray if path.exists()}  # a developer's own
    for path in stray:  # what a demo run or a build leaves behind
        path.parent.mkdir(exist_ok=True)
        path.write_text("not the project's")
    try:
        subprocess.run(
            [sys.executable, "-m", "hatchling", "build", "-t", "sdist", "-d", str(tmp_path)],
            cwd=ROOT, check=True, capture_output=True, timeout=120,
        )  # fmt: skip
    finally:
        for path in stray:
            if path in kept:
                path.write_bytes(kept[path])
            else:
                path.unlink()
    (archive,) = tmp_path.glob("*.tar.gz")
    with tarfile.open(archive) as sdist:
        members = {name.partition("/")[2] for name in sdist.getnames()}
        (pkg_info,) = (m for m in sdist.getmembers() if m.name.endswith("/PKG-INFO"))
        extracted = sdist.extractfile(pkg_info)
        assert extracted is not None
        description = extracted.read().decode()
    members.discard("")
    shipped = {name for name in members if name != "PKG-INFO"}
    extra = shipped - set(tracked.stdout.split())
    assert not extra, sorted(extra)[:20]
    assert {"src/resilient_cache/__init__.py", "src/resilient_cache/py.typed", "README.md",
            "LICENSE", "pyproject.toml"} <= shipped  # fmt: skip
    # the package page's description: README.md, every link absolute (before: 26 relative
    # links, broken on the package page)
    links = re.findall(r"\]\(([^)\s]+)\)", description)
    assert len(links) > 20
    relative = [link for link in links if not link.startswith(("https://", "http://"))]
    assert not relative, relative
    assert f"]({REPOSITORY}/blob/main/docs/contract.md)" in description
