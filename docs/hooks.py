"""MkDocs hook: pages made from the repository's READMEs, so that the site and the READMEs cannot
drift apart.

A docs page holding the line ``<!-- include: experiments/README.md -->`` shows that README there.
Its relative links are rewritten from the README's folder to the docs root: a link to another
included README goes to the page that includes it, a link to any other file of the repository
(a figure, a CSV, a script) goes to a copy of that file in the site, which this hook adds to the
build. A link to a file that does not exist stays as it is, so that ``mkdocs build --strict``
reports it.
"""

from __future__ import annotations

import posixpath
import re
from pathlib import Path
from typing import Any

from mkdocs.structure.files import File, Files, InclusionLevel

ROOT = Path(__file__).resolve().parent.parent  # the repository
INCLUDE = re.compile(r"^<!-- include: (?P<path>\S+) -->[ \t]*$", re.MULTILINE)
# [text](target) and ![alt](target); the target has no spaces or parentheses.
LINK = re.compile(r"(?P<head>!?\[[^\]]*\]\()(?P<target>[^)\s]+)(?P<tail>\))")
FENCE = re.compile(r"^(```|~~~).*?^\1[ \t]*$", re.MULTILINE | re.DOTALL)


def _included(docs_dir: Path) -> dict[str, str]:
    """``{README path in the repository: the docs page (relative to docs/) that includes it}``."""
    pages = {}
    for page in sorted(docs_dir.rglob("*.md")):
        for m in INCLUDE.finditer(page.read_text(encoding="utf-8")):
            pages[m.group("path")] = page.relative_to(docs_dir).as_posix()
    return pages


def _target(readme: str, target: str) -> tuple[str, str] | None:
    """The repository path a relative link of ``readme`` points to, and its ``#fragment``."""
    if re.match(r"^[a-z][a-z0-9+.-]*:", target) or target.startswith(("#", "/")):
        return None
    path, _, fragment = target.partition("#")
    resolved = posixpath.normpath(posixpath.join(posixpath.dirname(readme), path))
    return resolved, f"#{fragment}" if fragment else ""


def rewrite_links(text: str, readme: str, page: str, pages: dict[str, str]) -> str:
    """``text`` (the README ``readme``) with its relative links made relative to ``page``.

    Links inside fenced code blocks are left alone.
    """
    page_dir = posixpath.dirname(page)

    def fix(m: re.Match[str]) -> str:
        found = _target(readme, m.group("target"))
        if found is None or not (ROOT / found[0]).is_file():
            return m.group(0)
        path, fragment = found
        # an included README is its page, a docs page itself, any other file its copy
        doc = pages.get(path) or path.removeprefix("docs/")
        link = posixpath.relpath(doc, page_dir or ".") + fragment
        return f"{m.group('head')}{link}{m.group('tail')}"

    out, last = [], 0
    for fence in FENCE.finditer(text):
        out += [LINK.sub(fix, text[last : fence.start()]), fence.group(0)]
        last = fence.end()
    out.append(LINK.sub(fix, text[last:]))
    return "".join(out)


def _linked_files(readme: str) -> set[str]:
    """The repository files (not READMEs) that ``readme``'s relative links point to."""
    text = FENCE.sub("", (ROOT / readme).read_text(encoding="utf-8"))
    found = (_target(readme, m.group("target")) for m in LINK.finditer(text))
    return {
        f[0]
        for f in found
        if f is not None
        and (ROOT / f[0]).is_file()
        and Path(f[0]).name != "README.md"
        and not f[0].startswith("docs/")
    }


def on_files(files: Files, config: Any) -> Files:
    """Adds the files the included READMEs link to (figures, CSVs, scripts) to the site."""
    pages = _included(Path(config["docs_dir"]))
    for path in sorted(set().union(*(_linked_files(r) for r in pages))):
        if files.get_file_from_path(path) is None:
            file = File.generated(config, path, abs_src_path=str(ROOT / path))
            # a linked Markdown file (a benchmark's table) becomes a page outside the nav
            page = file.is_documentation_page()
            file.inclusion = InclusionLevel.NOT_IN_NAV if page else InclusionLevel.INCLUDED
            files.append(file)
    return files


def on_page_markdown(markdown: str, page: Any, config: Any, files: Files) -> str:
    """Replaces each ``<!-- include: PATH -->`` line by the README at ``PATH``, links fixed."""
    pages = _included(Path(config["docs_dir"]))

    def include(m: re.Match[str]) -> str:
        readme = m.group("path")
        text = (ROOT / readme).read_text(encoding="utf-8")
        return rewrite_links(text, readme, page.file.src_uri, pages)

    return INCLUDE.sub(include, markdown)
