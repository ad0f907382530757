"""mkdocs hook: the zoo's model cards, kept beside the weights in `zoo/cards/`, become pages of the site.

`docs/zoo.md` (written by `sslp zoo docs`) links every model to `../zoo/cards/<name>/README.md`: right
in a checkout and on a code host, but outside `docs/`, where `mkdocs build --strict` refuses links.
Here each card and its plots are added to the site as `zoo/cards/<name>/...` and the links of the
top-level pages are pointed there, so the build checks them like any other link. Nothing is written
into `docs/`.
"""

from __future__ import annotations

from pathlib import Path

from mkdocs.structure.files import File

CARDS = Path(__file__).resolve().parents[2] / "zoo" / "cards"
OUTSIDE = "](../zoo/cards/"  # how a page at the top of docs/ links a card
INSIDE = "](zoo/cards/"


def on_files(files, config):
    """Add every file under zoo/cards/ (card README.md pages, plots, CSVs) as `zoo/cards/...`."""
    for path in sorted(CARDS.rglob("*")):
        if path.is_file() and not any(part.startswith(".") for part in path.relative_to(CARDS).parts):
            uri = f"zoo/cards/{path.relative_to(CARDS).as_posix()}"
            files.append(File.generated(config, uri, abs_src_path=str(path)))
    return files


def on_page_markdown(markdown, page, config, files):
    """Top-level pages link `../zoo/cards/...`; in the site the cards sit at `zoo/cards/...`."""
    if "/" in page.file.src_uri:  # a deeper page's ../zoo/cards/ already resolves inside docs/
        return markdown
    return markdown.replace(OUTSIDE, INSIDE)
