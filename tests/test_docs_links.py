"""Citations of docs/algorithms.md resolve: every cited anchor is a heading, every check id exists.

Docstrings, comments and configs cite the project's algorithm reference as
`docs/algorithms.md#<anchor>` (GitHub heading slugs) and its hand-computed values as
`docs/algorithms.md#numeric-checks <id>`. A renamed heading or a dropped check breaks them
silently; these tests make it loud.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from semisup.algorithms import ALGORITHMS

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "algorithms.md"
CITING_TREES = ("src", "tests", "configs", "benchmarks", "docs")
CITING_FILES = ("README.md",)
SUFFIXES = {".py", ".yaml", ".yml", ".md", ".toml", ".txt"}
CITATION = re.compile(r"docs/algorithms\.md#([\w-]+)")
CHECK_ID = r"[A-Z]{1,2}\d+"
# An id or a run of ids after the anchor: "M5", "(C1–C6)", "M3/M5", "E2 / E3".
CHECK_CITATION = re.compile(
    rf"docs/algorithms\.md#numeric-checks\s*\(?({CHECK_ID}(?:\s*[/–,]\s*{CHECK_ID})*)"
)
CHECK_ROW = re.compile(rf"^\| ({CHECK_ID}) \|", re.MULTILINE)


def github_slug(heading: str) -> str:
    """The anchor GitHub gives a Markdown heading: lower case, punctuation dropped, - for spaces."""
    text = heading.strip().lower().replace("`", "").replace("*", "")  # code and bold markers
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


def doc_anchors(markdown: str) -> set[str]:
    """All heading anchors of a Markdown text, with GitHub's -1, -2 suffixes for repeats."""
    anchors: set[str] = set()
    seen: dict[str, int] = {}
    in_fence = False
    for line in markdown.splitlines():
        if line.startswith("```"):
            in_fence = not in_fence
        match = None if in_fence else re.match(r"#{1,6} (.+)", line)
        if match:
            slug = github_slug(match.group(1))
            count = seen.get(slug, 0)
            seen[slug] = count + 1
            anchors.add(slug if count == 0 else f"{slug}-{count}")
    return anchors


def citing_files() -> list[Path]:
    files = [ROOT / name for name in CITING_FILES if (ROOT / name).is_file()]
    for tree in CITING_TREES:
        files += [p for p in sorted((ROOT / tree).rglob("*")) if p.suffix in SUFFIXES]
    return [p for p in files if p.is_file() and p != DOC]


def citations(pattern: re.Pattern[str]) -> list[tuple[str, str]]:
    """(file:line, captured group) for every match of `pattern` in the citing files."""
    found = []
    for path in citing_files():
        for number, line in enumerate(path.read_text(errors="replace").splitlines(), start=1):
            for match in pattern.finditer(line):
                found.append((f"{path.relative_to(ROOT)}:{number}", match.group(1)))
    return found


def test_slugs_follow_github():
    assert github_slug("Numeric checks") == "numeric-checks"
    assert github_slug("CTAugment variants") == "ctaugment-variants"
    assert github_slug("Progressive alignment (CReST+)") == "progressive-alignment-crest"
    assert github_slug("STL-10 folds") == "stl-10-folds"
    assert github_slug("`fixmatch_da`") == "fixmatch_da"
    assert doc_anchors("## A\n### A\n```\n# not a heading\n```\n## B c") == {"a", "a-1", "b-c"}


def test_the_code_cites_the_reference():
    # The project cites it from its docstrings, tests and configs (the old external file's
    # section signs are gone); an empty result would mean the pattern no longer matches them.
    assert len(citations(CITATION)) > 80
    stale = citations(re.compile(r"(algorithms\.md §\S*)"))
    assert stale == [], f"citations of the old external algorithms.md: {stale}"


def test_every_cited_anchor_is_a_heading():
    anchors = doc_anchors(DOC.read_text())
    missing = [(where, anchor) for where, anchor in citations(CITATION) if anchor not in anchors]
    assert missing == [], f"anchors cited but not headings of docs/algorithms.md: {missing}"


def test_every_cited_check_id_is_defined():
    defined = set(CHECK_ROW.findall(DOC.read_text()))
    cited = [
        (where, cid)
        for where, run in citations(CHECK_CITATION)
        for cid in re.findall(CHECK_ID, run)
    ]
    assert len(cited) > 25
    missing = [(where, cid) for where, cid in cited if cid not in defined]
    assert missing == [], f"numeric check ids cited but not defined: {missing}"


def test_internal_links_of_the_reference_resolve():
    text = DOC.read_text()
    links = set(re.findall(r"\]\(#([\w-]+)\)", text))
    assert links, "the table of contents links nothing"
    assert links - doc_anchors(text) == set()


@pytest.mark.parametrize("name", sorted(ALGORITHMS.names()))
def test_every_registered_algorithm_is_documented(name):
    assert f"`{name}`" in DOC.read_text(), f"docs/algorithms.md does not describe `{name}`"
