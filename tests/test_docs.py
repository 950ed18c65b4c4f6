"""The documents hold together: an index of every one, each linked from the README, and no link or
path that leads outside the repository (a reader of a clone has nothing else)."""
from __future__ import annotations

import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DOCS = sorted((REPO / "docs").glob("*.md"))
LINK = re.compile(r"\]\(([^)\s]+)\)")
OUTSIDE_PATH = re.compile(r"(?<![\w.~-])/(?:work|home|root|Users|mnt)/")


def links(document: Path) -> list[str]:
    return [target for target in LINK.findall(document.read_text("utf-8")) if not re.match(r"[a-z]+:|#", target)]


def test_every_document_is_in_the_index_and_linked_from_the_readme():
    index = {(REPO / "docs" / target).resolve() for target in links(REPO / "docs" / "README.md")}
    readme = {(REPO / target).resolve() for target in links(REPO / "README.md")}
    for document in DOCS:
        if document.name != "README.md":
            assert document in index, f"docs/README.md does not list {document.name}"
        assert document in readme, f"README.md does not link docs/{document.name}"


def test_every_link_leads_to_a_file_of_the_repository_and_no_path_outside_it():
    for document in [REPO / "README.md", *DOCS]:
        for target in links(document):
            path = (document.parent / target.split("#")[0]).resolve()
            assert path.is_relative_to(REPO) and path.exists(), f"{document.name}: {target}"
        found = OUTSIDE_PATH.search(document.read_text("utf-8"))
        assert found is None, f"{document.name} names a path outside the repository near {found and found.group()}"
