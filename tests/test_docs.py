"""The README and docs/architecture.md point only inside the repository, at files that exist."""
from __future__ import annotations

import re

import pytest

from tests.conftest import REPO

DOCS = [REPO / "README.md", REPO / "docs" / "architecture.md"]


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: p.name)
def test_links_stay_in_the_repository_and_resolve(doc):
    text = doc.read_text()
    assert "../" not in text, f"{doc.name} points outside the repository"
    for target in re.findall(r"\]\(([^)#]+)\)", text):
        if not target.startswith(("http://", "https://")):
            assert (doc.parent / target).exists(), f"{doc.name} links to missing {target}"


def test_the_architecture_page_names_existing_modules_and_tests():
    text = (REPO / "docs" / "architecture.md").read_text()
    package = REPO / "src" / "fly64_train"
    for name in set(re.findall(r"`((?:backends/|data/|iterative/)?\w+\.py)`", text)):
        candidates = [package / name, package / "backends" / name, package / "data" / name,
                      package / "iterative" / name, REPO / "tests" / name]
        assert any(path.is_file() for path in candidates), name
    for name in re.findall(r"`(tests/\w+\.py)`", text):
        assert (REPO / name).is_file(), name
