"""The README and docs/ as data: their pages, marked examples, headings and relative links (pure)."""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
README = REPO / "README.md"
DOCS = REPO / "docs"
MARKER = re.compile(r'^<!-- example: (?P<name>[\w-]+)(?P<attributes>( \w+="[^"]*")*) -->$')
ATTRIBUTE = re.compile(r'(\w+)="([^"]*)"')
FENCE = re.compile(r"^```(\w+)$")
LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")
INLINE_CODE = re.compile(r"`[^`]*`")
EXTERNAL = ("http://", "https://", "mailto:")
EXAMPLE_LANGUAGES = {"bash", "sh", "shell", "console", "python", "toml"}  # a block in one of these needs a marker


@dataclass
class Example:
    """One fenced block of a documentation page and its marker."""

    page: str
    name: str
    language: str
    code: str
    line: int
    skip: str | None = None
    needs: str | None = None


def fenced_blocks(text: str) -> list[tuple[int, str, str, re.Match[str] | None]]:
    """(line, language, code, marker match) of every fenced block with a language."""
    lines, blocks, index = text.splitlines(), [], 0
    while index < len(lines):
        fence = FENCE.match(lines[index])
        if fence is None:
            index += 1
            continue
        end = lines.index("```", index + 1)
        marker = MARKER.match(lines[index - 1]) if index else None
        blocks.append((index + 1, fence.group(1), "\n".join(lines[index + 1 : end]) + "\n", marker))
        index = end + 1
    return blocks


def documented_pages() -> list[Path]:
    """README.md, then every page of docs/ in file-name order."""
    return [README, *sorted(DOCS.glob("*.md"))]


def page_name(page: Path) -> str:
    """A page's path from the repository's root."""
    return page.relative_to(REPO).as_posix()


def documented_examples() -> list[Example]:
    """The marked examples of every page, page by page, each page's in order."""
    examples = []
    for page in documented_pages():
        for line, language, code, marker in fenced_blocks(page.read_text()):
            if marker is not None:
                attributes = dict(ATTRIBUTE.findall(marker.group("attributes")))
                examples.append(Example(page_name(page), marker.group("name"), language, code, line,
                                        attributes.get("skip"), attributes.get("needs")))
    return examples


def prose_lines(page: Path) -> Iterator[str]:
    """The page's lines outside fenced blocks."""
    fenced = False
    for line in page.read_text().splitlines():
        if line.startswith("```"):
            fenced = not fenced
        elif not fenced:
            yield line


def heading_anchors(page: Path) -> set[str]:
    """The anchors GitHub gives the page's headings (lowercased, punctuation dropped, `-` for spaces)."""
    anchors: list[str] = []
    for line in prose_lines(page):
        if line.startswith("#"):
            slug = re.sub(r"[^\w\- ]", "", line.lstrip("#").strip().lower()).replace(" ", "-")
            seen = anchors.count(slug)
            anchors.append(slug)
            anchors.extend([f"{slug}-{seen}"] if seen else [])
    return set(anchors)


def relative_links(page: Path) -> list[tuple[str, Path, str]]:
    """(link as written, the file it names, its anchor) of every relative link of the page."""
    found = []
    for line in prose_lines(page):
        for target in LINK.findall(INLINE_CODE.sub("``", line)):
            if not target.startswith(EXTERNAL):
                path, _, anchor = target.partition("#")
                found.append((target, (page.parent / path).resolve() if path else page, anchor))
    return found


def unmarked_examples() -> list[str]:
    """`page:line (language)` of every example-language block without a marker."""
    return [f"{page_name(page)}:{line} ({language})" for page in documented_pages()
            for line, language, _, marker in fenced_blocks(page.read_text())
            if language in EXAMPLE_LANGUAGES and marker is None]


def broken_links() -> list[str]:
    """`page: link` of every relative link to a missing file, or to a heading its page lacks."""
    return [f"{page_name(page)}: {link}" for page in documented_pages()
            for link, target, anchor in relative_links(page)
            if not target.exists() or (anchor and target.suffix == ".md" and anchor not in heading_anchors(target))]
