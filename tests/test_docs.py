"""The documentation holds together: every relative link in README.md, docs/*.md and experiments/README.md
names a file that exists, every #anchor a heading of its target, and the README stays a short user's page."""
import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
DOCS = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md")), REPO / "experiments" / "README.md"]
README_LIMIT = 15_000  # bytes, as `wc -c README.md` counts them

FENCE = re.compile(r"^ {0,3}(```|~~~).*?^ {0,3}\1[^\n]*$", re.M | re.S)
CODE_SPAN = re.compile(r"`[^`\n]*`")
LINK = re.compile(r"!?\[(?:[^\[\]]|\[[^\]]*\])*\]\(([^()\s]*(?:\([^()\s]*\)[^()\s]*)*)(?:\s+\"[^\"]*\")?\)")
HEADING = re.compile(r"^ {0,3}#{1,6}[ \t]+(.+?)[ \t]*#*[ \t]*$", re.M)


def prose(text: str) -> str:
    """Markdown without its code blocks, where brackets and '#' are code, not links or headings."""
    return FENCE.sub("", text)


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: its text (links by their label) in lower case, punctuation other than
    hyphens and underscores dropped, each space a hyphen."""
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", heading).lower()
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


def anchors(path: Path) -> set[str]:
    """Every heading anchor of a Markdown file; a repeated heading gets -1, -2, ... as on GitHub."""
    seen: dict[str, int] = {}
    out = set()
    for heading in HEADING.findall(prose(path.read_text(encoding="utf-8"))):
        base = slug(heading)
        n = seen.get(base, 0)
        seen[base] = n + 1
        out.add(base if n == 0 else f"{base}-{n}")
    return out


def relative_links(path: Path) -> list[str]:
    text = CODE_SPAN.sub("", prose(path.read_text(encoding="utf-8")))
    return [t for t in LINK.findall(text) if t and not re.match(r"[a-z][a-z0-9+.-]*:", t, re.I)]


def broken_links(path: Path) -> list[str]:
    broken = []
    for target in relative_links(path):
        file_part, _, anchor = target.partition("#")
        dest = (path.parent / file_part).resolve() if file_part else path
        if not dest.exists():
            broken.append(f"{target}: no such file")
        elif anchor and dest.suffix == ".md" and anchor not in anchors(dest):
            broken.append(f"{target}: no heading #{anchor} in {file_part or path.name}")
    return broken


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: str(p.relative_to(REPO)))
def test_every_relative_link_and_anchor_resolves(doc):
    assert doc.is_file()
    assert broken_links(doc) == []


def test_the_readme_links_every_page_of_docs():
    linked = {(REPO / t.partition("#")[0]).resolve() for t in relative_links(REPO / "README.md")}
    assert [p.name for p in DOCS if p.parent.name == "docs" and p.resolve() not in linked] == []


def test_the_readme_is_a_short_users_page():
    size = len((REPO / "README.md").read_bytes())
    assert size <= README_LIMIT, f"README.md is {size} bytes; details belong in docs/"


def test_slugs_follow_githubs_rules(tmp_path):
    assert slug("v1: Reproducing it") == "v1-reproducing-it"
    assert slug("Training (`bash experiments/train_semantic.sh`)") == "training-bash-experimentstrain_semanticsh"
    assert slug("Issue 11's bar: by how much it is missed (2026-12-05)") == "issue-11s-bar-by-how-much-it-is-missed-2026-12-05"
    page = tmp_path / "page.md"
    page.write_text("# Notes\n\n```\n# not a heading\n```\n\n## Notes\n\n[up](#notes-1) [gone](#missing) [x](nowhere.md)\n")
    assert anchors(page) == {"notes", "notes-1"}
    assert broken_links(page) == ["#missing: no heading #missing in page.md", "nowhere.md: no such file"]
