"""Every shell command and Python snippet of the README and the documentation pages runs as written, or
its page says why not (`fences.py` defines the markers); the README's links stay inside the repository.

The fast tests check the pages' form: languages, markers, reasons, the `same-as` claims and the README's
links. The slow one runs each page's blocks in order in a copy of the checkout.
"""

from __future__ import annotations

import re
from urllib.parse import urlsplit

import pytest
from fences import (
    MARKERS,
    PYTHON,
    ROOT,
    RUN_ELSEWHERE,
    SHELL,
    PageRunner,
    commands,
    copy_checkout,
    dangling_markers,
    expected_prints,
    pages,
    parse,
    shell_words,
)

ALL = {page: parse(page) for page in pages()}
RUNNABLE = [page for page, fences in ALL.items() if page not in RUN_ELSEWHERE and any(f.executed for f in fences)]
# the README may link outside the repository only to papers and official code
PAPER_HOSTS = ("arxiv.org", "doi.org", "openreview.net", "proceedings.neurips.cc", "openaccess.thecvf.com")


def test_the_pages_hold_shell_and_python_blocks_to_run():
    # the parser sees what the pages hold: a parse that found nothing would make every check below vacuous
    assert "README.md" in RUNNABLE and "docs/api/index.md" in RUNNABLE
    blocks = [f for fences in ALL.values() for f in fences]
    assert sum(f.executed for f in blocks) >= 20
    assert any(f.marker == "not-run" for f in blocks) and any(f.marker == "same-as" for f in blocks)


@pytest.mark.parametrize("page", list(ALL))
def test_every_fence_names_its_language(page):
    unnamed = [f.where for f in ALL[page] if not f.lang]
    assert not unnamed, f"fences without a language (write ```text for plain text): {unnamed}"


@pytest.mark.parametrize("page", list(ALL))
def test_markers_are_known_and_say_why(page):
    assert not dangling_markers(page), f"markers not right before a fence: {dangling_markers(page)}"
    for fence in ALL[page]:
        if fence.marker is None:
            continue
        assert fence.marker in MARKERS, f"{fence.where}: unknown marker {fence.marker!r}; use one of {MARKERS}"
        assert fence.lang in SHELL + PYTHON, f"{fence.where}: a {fence.marker} marker on a ```{fence.lang} block"
        if fence.marker == "not-run":
            assert len(fence.argument.split()) >= 4, f"{fence.where}: `not-run:` needs a reason, not {fence.argument!r}"
        if fence.marker == "test-overrides":
            assert fence.lang in SHELL and shell_words(fence.argument), f"{fence.where}: overrides for a shell block"
            assert any(re.search(r"(sslp|-m ssl_platform)\s+(pretrain|eval)", c) for c in commands(fence)), (
                f"{fence.where}: test-overrides on a block without a pretrain or eval command")


def test_same_as_blocks_are_in_the_page_they_name():
    claims = [f for fences in ALL.values() for f in fences if f.marker == "same-as"]
    for fence in claims:
        assert fence.argument in ALL, f"{fence.where}: same-as names {fence.argument!r}, which is not a page"
        there = {c for f in ALL[fence.argument] if f.lang in SHELL for c in commands(f)}
        missing = [c for c in commands(fence) if c not in there]
        assert not missing, f"{fence.where}: not in the blocks of {fence.argument}: {missing}"
        assert fence.argument in RUN_ELSEWHERE or fence.argument in RUNNABLE, f"{fence.argument} is not run"


def test_pages_run_elsewhere_are_read_by_their_tests():
    for page, test in RUN_ELSEWHERE.items():
        assert (ROOT / page).is_file(), page
        assert page in (ROOT / test).read_text(), f"{test} does not read {page}"


def _slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, markup and punctuation dropped, spaces to '-'."""
    text = re.sub(r"[`*_]", "", heading.strip().lower())
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


def test_readme_links_stay_in_the_repository_and_its_contents_match_its_headings():
    text = (ROOT / "README.md").read_text()
    prose = re.sub(r"```.*?```", "", text, flags=re.DOTALL)
    anchors = {_slug(h) for h in re.findall(r"^#+ (.+)$", prose, flags=re.MULTILINE)}
    links = re.findall(r"\]\(([^)\s]+)\)", prose)
    assert links, "the README links its pages"
    for link in links:
        parts = urlsplit(link)
        if parts.scheme:
            assert parts.scheme == "https" and parts.hostname in PAPER_HOSTS, f"README links outside the repo: {link}"
        elif parts.path:
            assert (ROOT / parts.path).exists(), f"README links {link}, which is not in the repository"
        else:
            assert parts.fragment in anchors, f"README links #{parts.fragment}, which no heading gives"


def test_readme_opens_with_make_demo_and_make_test():
    first = ALL["README.md"][0]
    assert first.line <= 4 and [c.split("#")[0].strip() for c in commands(first)] == ["make demo", "make test"]


@pytest.mark.slow
@pytest.mark.parametrize("page", RUNNABLE)
def test_page_blocks_run(page, tmp_path):
    with PageRunner(copy_checkout(tmp_path / "checkout")) as runner:
        for fence in ALL[page]:
            if fence.executed or fence.title is not None:
                printed = runner.run(fence)
                for expected in expected_prints(fence):  # `print(x)  # what it prints`: the page's claim
                    assert expected in printed, f"{fence.where}: says it prints {expected!r}; it printed:\n{printed}"
