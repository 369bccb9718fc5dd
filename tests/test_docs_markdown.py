"""The docs site's Markdown as Python-Markdown (MkDocs) reads it, not as GitHub does.

GitHub starts a list right after a paragraph line; Python-Markdown needs a blank line first and
otherwise renders the items inline as "... - item; - item" (seen in a headless-browser screenshot
of the trigger page when the README was moved into docs/). ``mkdocs build --strict`` does not warn.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

DOCS = Path(__file__).resolve().parents[1] / "docs"
_ITEM = re.compile(r"^([-*+]|\d+\.)\s")


def _lists_glued_to_a_paragraph(text: str) -> list[int]:
    glued, fence, previous = [], False, ""
    for number, line in enumerate(text.splitlines(), start=1):
        if line.strip().startswith(("```", "~~~")):
            fence = not fence
        elif (
            not fence
            and _ITEM.match(line)
            and previous.strip()
            and not _ITEM.match(previous)
            and not previous.startswith((" ", "\t", "|", "#", ">", "--8<--"))
        ):
            glued.append(number)
        previous = line
    return glued


@pytest.mark.parametrize("page", sorted(DOCS.glob("*.md")), ids=lambda p: p.name)
def test_every_list_starts_after_a_blank_line(page: Path) -> None:
    assert _lists_glued_to_a_paragraph(page.read_text(encoding="utf-8")) == []


def test_the_check_sees_a_glued_list() -> None:
    assert _lists_glued_to_a_paragraph("Guarantees:\n- one\n- two\n\nText\n\n- fine\n") == [2]
