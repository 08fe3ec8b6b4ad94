"""Run every ```python block of README.md and docs/*.md, so that the examples cannot rot.

Conventions for the documentation:

* Every fenced block opened with exactly ```python is collected, in README.md and in each
  docs/*.md file. Other fences (```bash, ```text, ...) are not run. A fence that looks like
  Python under another name (```py, ```python3, ```pycon) is refused by a test below, so
  that no example escapes by accident.
* A block whose previous non-blank line is the HTML comment ``<!-- no-run -->`` is reported
  as skipped instead of run. Use it sparingly, for fragments that cannot stand alone: a
  block that is not run can rot.
* A block runs as a script of its own: compiled under the Markdown file's path, shifted so
  that a traceback points at the right line of the Markdown file, and executed with
  ``exec`` in a fresh namespace whose ``__name__`` is ``"__main__"``. Blocks share
  nothing; each imports what it uses.
* A block that needs Redis reads the URL from ``os.environ["REDIS_URL"]``. Every block
  that mentions ``REDIS_URL`` gets the session redis-server of the ``redis_server`` fixture
  (tests/conftest.py), emptied first, so each starts from an empty server and gives the
  same answers every run. Without redis-server such blocks are skipped like the other
  Redis tests (a failure under ``CI=true``). Other blocks run with ``REDIS_URL`` unset.
* A block calls ``asyncio.run`` itself, as a user would, so the tests here are plain
  synchronous tests.
* Every block that runs must check or show its result: it contains an ``assert``
  statement or a ``print`` call (a test below enforces it). Prefer ``assert`` lines: they
  document the result and fail when it changes.
* The README's first Python block is the quick start, and must stay identical to
  examples/quickstart.py (without its docstring), which ``make demo`` runs.
"""

from __future__ import annotations

import ast
import re
from dataclasses import dataclass
from pathlib import Path

import pytest

from resilient_cache.testing import RedisServer

ROOT = Path(__file__).resolve().parent.parent
DOCUMENTS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
NO_RUN = "<!-- no-run -->"

_FENCE = re.compile(r"^(?P<indent>[ \t]*)(?P<fence>`{3,}|~{3,})[ \t]*(?P<info>[^`\s]*)")


@dataclass(frozen=True)
class Block:
    """One fenced code block of a Markdown file."""

    path: str  # relative to the repository root
    language: str
    index: int  # 1-based, among the file's blocks of this language
    line: int  # 1-based line of the block's first line of code
    code: str
    run: bool

    @property
    def id(self) -> str:
        return f"{self.path}-block{self.index}-L{self.line}"


def fenced_blocks(text: str, path: str) -> list[Block]:
    """Every fenced block of the Markdown ``text``, with its language, position and mark."""
    lines = text.splitlines()
    blocks: list[Block] = []
    counts: dict[str, int] = {}
    i = 0
    while i < len(lines):
        opening = _FENCE.match(lines[i])
        if opening is None:
            i += 1
            continue
        indent, fence, language = opening["indent"], opening["fence"], opening["info"]
        previous = next((s.strip() for s in reversed(lines[:i]) if s.strip()), "")
        start = i + 1
        i = start
        while i < len(lines):
            stripped = lines[i].strip()
            if stripped.startswith(fence[0] * len(fence)) and not stripped.strip(fence[0]):
                break
            i += 1
        body = [ln[len(indent) :] if ln.startswith(indent) else ln for ln in lines[start:i]]
        counts[language] = counts.get(language, 0) + 1
        blocks.append(
            Block(
                path=path,
                language=language,
                index=counts[language],
                line=start + 1,
                code="\n".join(body) + "\n",
                run=previous != NO_RUN,
            )
        )
        i += 1  # past the closing fence
    return blocks


ALL_BLOCKS = [
    block
    for path in DOCUMENTS
    for block in fenced_blocks(path.read_text(encoding="utf-8"), path.relative_to(ROOT).as_posix())
]
PYTHON_BLOCKS = [block for block in ALL_BLOCKS if block.language == "python"]
RUNNABLE = [block for block in PYTHON_BLOCKS if block.run]


def _params() -> list[object]:
    return [
        pytest.param(
            block,
            id=block.id,
            marks=() if block.run else pytest.mark.skip(reason=f"marked {NO_RUN}"),
        )
        for block in PYTHON_BLOCKS
    ]


@pytest.mark.parametrize("block", _params())
def test_python_block_runs(
    block: Block, request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch
) -> None:
    if "REDIS_URL" in block.code:
        server: RedisServer = request.getfixturevalue("redis_server")
        assert server.command("FLUSHALL") == "+OK"
        monkeypatch.setenv("REDIS_URL", server.url)
    else:
        monkeypatch.delenv("REDIS_URL", raising=False)
    # Leading blank lines make the line numbers of a traceback those of the Markdown file.
    code = compile("\n" * (block.line - 1) + block.code, str(ROOT / block.path), "exec")
    exec(code, {"__name__": "__main__", "__file__": str(ROOT / block.path)})


def _checks_or_shows(code: str) -> bool:
    for node in ast.walk(ast.parse(code)):
        if isinstance(node, ast.Assert):
            return True
        if (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Name)
            and node.func.id == "print"
        ):
            return True
    return False


@pytest.mark.parametrize("block", RUNNABLE, ids=lambda block: block.id)
def test_python_block_checks_or_shows_its_result(block: Block) -> None:
    assert _checks_or_shows(block.code), f"{block.id}: an example must assert or print its result"


def test_the_documents_have_runnable_examples() -> None:
    assert (ROOT / "README.md") in DOCUMENTS
    assert any(block.path == "README.md" for block in RUNNABLE)
    assert any(block.path.startswith("docs/") for block in RUNNABLE)


def test_no_python_block_hides_under_another_fence_name() -> None:
    aliases = {"py", "python3", "py3", "pycon", "ipython", "Python"}
    hidden = [block.id for block in ALL_BLOCKS if block.language in aliases]
    assert not hidden, f"use ```python so that these blocks are run: {hidden}"


def test_no_run_marks_only_python_blocks() -> None:
    """A stray ``<!-- no-run -->`` before a non-Python block is a mistake: it does nothing."""
    stray = [b.id for b in ALL_BLOCKS if not b.run and b.language != "python"]
    assert not stray


def test_the_readme_quick_start_is_the_demo_script() -> None:
    quickstart = (ROOT / "examples" / "quickstart.py").read_text(encoding="utf-8")
    tree = ast.parse(quickstart)
    first = tree.body[0]
    assert isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant)
    assert first.end_lineno is not None
    without_docstring = "\n".join(quickstart.splitlines()[first.end_lineno :]).strip()
    readme = next(block for block in PYTHON_BLOCKS if block.path == "README.md")
    assert readme.code.strip() == without_docstring


def test_the_block_parser_follows_the_conventions() -> None:
    text = "\n".join(
        [
            "# Title",
            "```python",
            "print(1)",
            "```",
            "<!-- no-run -->",
            "",
            "```python",
            "fragment(",
            "```",
            "````markdown",
            "```python",
            "print('inside another fence: not a block')",
            "```",
            "````",
            "1. a list item:",
            "   ```python",
            "   if True:",
            "       print(2)",
            "   ```",
            "```bash",
            "make test",
            "```",
        ]
    )
    blocks = fenced_blocks(text, "x.md")
    python = [b for b in blocks if b.language == "python"]
    assert [(b.index, b.line, b.run) for b in python] == [
        (1, 3, True),
        (2, 8, False),
        (3, 17, True),
    ]
    assert python[0].code == "print(1)\n"
    assert python[2].code == "if True:\n    print(2)\n"
    assert [b.language for b in blocks] == ["python", "python", "markdown", "python", "bash"]
    assert python[1].id == "x.md-block2-L8"


def _slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def _anchors(path: Path) -> set[str]:
    text = path.read_text(encoding="utf-8")
    fenced = {b.line + i for b in fenced_blocks(text, "") for i in range(b.code.count("\n"))}
    return {
        _slug(line.lstrip("#"))
        for number, line in enumerate(text.splitlines(), start=1)
        if line.startswith("#") and number not in fenced
    }


_LINK = re.compile(r"\]\((?P<target>[^)\s]+)\)")


@pytest.mark.parametrize("document", DOCUMENTS, ids=lambda path: path.relative_to(ROOT).as_posix())
def test_relative_links_and_anchors_resolve(document: Path) -> None:
    broken = []
    for match in _LINK.finditer(document.read_text(encoding="utf-8")):
        target = match["target"]
        if re.match(r"[a-z]+:", target):  # https:, mailto:
            continue
        file_part, _, anchor = target.partition("#")
        linked = (document.parent / file_part).resolve() if file_part else document
        if not linked.exists() or (
            anchor and linked.suffix == ".md" and anchor not in _anchors(linked)
        ):
            broken.append(target)
    assert not broken, f"broken links in {document.name}: {broken}"
