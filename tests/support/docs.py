"""The code blocks of the project's documentation, as tests/docs runs them.

Documented: README.md, data/README.md and every docs/*.md (a new file is picked up by itself).
Run: fenced blocks whose language is bash (or sh, shell) or python (or py). Other fences (toml,
text, a bare fence) are shown, not run.

A block that cannot run here as written says so in an HTML comment on the line just above its
opening fence (the comment is invisible on GitHub):

    <!-- docs-test: skip: <why> -->
        not run; the test is reported as skipped with the reason

    <!-- docs-test: instead: <check>: <why> -->
        not run as written; the named check in tests/docs/instead.py runs the nearest thing that
        is possible here, and the reason is shown with the test (an unknown name fails)

A `docs-test:` comment anywhere else, or of another form, is an error the tests report, so a
misplaced one cannot silently stop a block from being run (mentions inside `inline code` or
inside a fence are prose, not comments).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

LANGUAGES = {"bash": "bash", "sh": "bash", "shell": "bash", "python": "python", "py": "python"}
_FENCE = re.compile(r"^(?P<indent>[ \t]*)(?P<fence>`{3,}|~{3,})\s*(?P<info>[^`]*)$")
_DIRECTIVE = re.compile(
    r"^\s*<!--\s*docs-test:\s*(?:(?P<skip>skip):\s*(?P<skip_why>\S.*?)"
    r"|(?P<instead>instead):\s*(?P<check>[a-z0-9][a-z0-9-]*):\s*(?P<instead_why>\S.*?))\s*-->\s*$"
)
_MENTION = re.compile(r"docs-test\s*:")
_INLINE_CODE = re.compile(r"`[^`]*`")


@dataclass(frozen=True)
class Directive:
    kind: str  # "skip" or "instead"
    why: str
    check: str | None = None  # for "instead": the name of the substitute in tests/docs/instead.py


@dataclass(frozen=True)
class Block:
    """One fenced block: where it is, its language (bash/python, or None: not run) and code."""

    doc: str  # path relative to the repository root, e.g. "docs/hosting.md"
    line: int  # 1-based line of the opening fence
    language: str | None
    code: str
    directive: Directive | None = None

    @property
    def test_id(self) -> str:
        return f"{self.doc}:{self.line}"


def doc_files(root: Path) -> list[Path]:
    """The documentation files whose blocks are tests, in a stable order."""
    fixed = [root / "README.md", root / "data" / "README.md"]
    return [p for p in fixed if p.is_file()] + sorted((root / "docs").glob("*.md"))


def parse(text: str, doc: str) -> tuple[list[Block], list[str]]:
    """(every fenced block, problems with `docs-test:` comments as 'doc:line: why' lines)."""
    lines = text.split("\n")
    blocks: list[Block] = []
    problems: list[str] = []
    used: set[int] = set()  # line numbers of directives that sit just above a runnable fence
    fenced: set[int] = set()  # line numbers inside fences (examples, not directives)
    index = 0
    while index < len(lines):
        opening = _FENCE.match(lines[index])
        if not opening:
            index += 1
            continue
        indent, fence = opening["indent"], opening["fence"]
        words = opening["info"].split()
        language = LANGUAGES.get(words[0].lower()) if words else None
        body, end = [], index + 1
        while end < len(lines):
            stripped = lines[end].strip()
            if stripped.startswith(fence[0] * len(fence)) and not stripped.strip(fence[0]):
                break
            body.append(lines[end][len(indent) :] if lines[end].startswith(indent) else lines[end])
            end += 1
        directive = None
        if index > 0 and _MENTION.search(lines[index - 1]):
            found = _DIRECTIVE.match(lines[index - 1])
            if found and language:
                used.add(index)  # 1-based number of the directive's line
                if found["skip"]:
                    directive = Directive("skip", found["skip_why"])
                else:
                    directive = Directive("instead", found["instead_why"], found["check"])
        blocks.append(Block(doc, index + 1, language, "\n".join(body) + "\n", directive))
        fenced.update(range(index + 1, end + 2))
        index = end + 1
    for number, line in enumerate(lines, start=1):
        prose = _INLINE_CODE.sub("", line)  # `<!-- docs-test: ... -->` in backticks is prose
        if _MENTION.search(prose) and number not in used and number not in fenced:
            if not _DIRECTIVE.match(line):
                why = "is not `<!-- docs-test: skip: why -->` or `... instead: check: why -->`"
            else:
                why = "is not on the line just above a ```bash or ```python fence"
            problems.append(f"{doc}:{number}: docs-test comment {why}")
    return blocks, problems


def runnable_blocks(root: Path) -> tuple[list[Block], list[str]]:
    """Every bash/python block of every documentation file, and every comment problem."""
    blocks: list[Block] = []
    problems: list[str] = []
    for path in doc_files(root):
        found, wrong = parse(path.read_text(encoding="utf-8"), path.relative_to(root).as_posix())
        blocks.extend(b for b in found if b.language)
        problems.extend(wrong)
    return blocks, problems
