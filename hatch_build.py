"""The package page's description: README.md, its relative links made absolute.

The README is read on GitHub, where ``[contract](docs/contract.md)`` resolves next to it, and
on PyPI, where the same link would point nowhere. This metadata hook (hatchling's ``custom``
hook, no extra build dependency) gives the package the README with every relative link
pointing at the repository's copy of the file.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from hatchling.metadata.plugin.interface import MetadataHookInterface

REPOSITORY = "https://github.com/resilient-cache/resilient-cache"
_LINK = re.compile(r"\]\((?!https?://|mailto:)([^)\s]+)\)")


def absolute_links(markdown: str, base: str = f"{REPOSITORY}/blob/main/") -> str:
    """Every relative Markdown link of README.md made absolute against ``base`` (a link to
    one of its own headings too: the package page gives headings no anchors)."""

    def absolute(match: re.Match[str]) -> str:
        target = match.group(1)
        return f"]({base}{'README.md' if target.startswith('#') else ''}{target})"

    return _LINK.sub(absolute, markdown)


class ReadmeHook(MetadataHookInterface):
    PLUGIN_NAME = "custom"

    def update(self, metadata: dict[str, Any]) -> None:
        readme = Path(self.root, "README.md").read_text(encoding="utf-8")
        metadata["readme"] = {"content-type": "text/markdown", "text": absolute_links(readme)}
