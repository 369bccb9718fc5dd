"""The contact sheet's HTML: prompts and ids are text, whatever they contain."""

from __future__ import annotations

from html.parser import HTMLParser
from typing import Any

from airflow_provider_segmind.utils.contact_sheet import render_html

HOSTILE = 'Evil <script>alert("pwned")</script> and "quotes" \' onerror="alert(1)" & <img src=x>'


class _Page(HTMLParser):
    """Every element a browser would build from the page, with its attributes, and the text of each cell."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.elements: list[tuple[str, dict[str, str | None]]] = []
        self.text: dict[str, list[str]] = {}
        self._open: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.elements.append((tag, dict(attrs)))
        self._open.append(tag)

    def handle_endtag(self, tag: str) -> None:
        if tag in self._open:
            del self._open[len(self._open) - 1 - self._open[::-1].index(tag) :]

    def handle_data(self, data: str) -> None:
        if self._open:
            self.text.setdefault(self._open[-1], []).append(data)


def _parse(page: str) -> _Page:
    parser = _Page()
    parser.feed(page)
    parser.close()
    return parser


def _entry(prompt: str, **extra: Any) -> dict[str, Any]:
    return {
        "prompt": prompt,
        "negative_prompt": extra.pop("negative_prompt", None),
        "seed": 7,
        "width": 1024,
        "height": 768,
        "cost": 0.05,
        "request_id": "req-1",
        "uri": "s3://bucket/segmind/d/r/t/-1/req-1-0.jpeg",
        **extra,
    }


def test_a_hostile_prompt_renders_as_inert_text() -> None:
    entries = [_entry(HOSTILE, negative_prompt=HOSTILE), _entry(HOSTILE)]
    page = render_html(entries, ["data:image/jpeg;base64,AAAA", None], dag_id="d<script>", run_id='r"><b>')
    parsed = _parse(page)

    tags = [tag for tag, _ in parsed.elements]
    assert "script" not in tags
    assert "b" not in tags
    assert tags.count("img") == 1  # the thumbnail; the prompt's <img src=x> stays text
    assert all("onerror" not in attrs for _, attrs in parsed.elements)
    (image,) = (attrs for tag, attrs in parsed.elements if tag == "img")
    assert image == {"src": "data:image/jpeg;base64,AAAA", "alt": HOSTILE}
    (link,) = (attrs for tag, attrs in parsed.elements if tag == "a")  # no thumbnail: a link to the object
    assert link == {"href": "s3://bucket/segmind/d/r/t/-1/req-1-0.jpeg"}
    assert parsed.text["td"].count(HOSTILE) == 3  # two prompts and one negative prompt, shown verbatim
    assert parsed.text["title"] == ['d<script> r"><b>']
    assert parsed.text["code"] == ['r"><b>']


def test_the_sheet_lists_each_image_and_the_total_cost() -> None:
    entries = [_entry("a mug"), _entry("a shoe", cost=None, metrics={"cost": 0.25}, width=None, seed=None)]
    parsed = _parse(render_html(entries, [None, None], dag_id="d", run_id="r"))

    headers = parsed.text["th"]
    first, second = ["Prompt", "Seed", "Size", "Cost", "Request", "Object"], ["Prompt", "Request", "Object"]
    assert headers == [*first, *second]  # empty rows (no seed, size or cost) are left out
    assert "1024x768" in parsed.text["td"]
    assert "".join(parsed.text["p"]).endswith(": 2 images, 0.3 credits.")
