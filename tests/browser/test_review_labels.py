"""Review's action buttons read in full at common widths: the rendered label and shortcut key of every
button of the card (Keep, Reject, Fix, Skip, Undo and each suggestion's Use) are their whole text, with no
element inside cut (wider content than box, as text-overflow: ellipsis shows); the bulk grid's buttons too."""
from __future__ import annotations

from pathlib import Path

import pytest

from core.store import Store
from tests.test_projection import fabricate_run

BUTTONS = {"review_keep": ("Keep", "K"), "review_reject": ("Reject", "X"), "review_fix": ("Fix", "F"),
           "review_skip": ("Skip", "S"), "review_undo": ("Undo", "U"),
           **{f"review_use_{i}": ("Use", str(i + 1)) for i in range(5)}}
BULK = {"review_bulk_keep": ("Keep selected",), "review_bulk_reject": ("Reject selected",),
        "review_bulk_all": ("Select all",), "review_bulk_none": ("Select none",), "review_undo": ("Undo", "U")}

# For each button (the card's by its data-review-button name, Streamlit's by its key): its visible text, and
# every descendant whose content is wider than its box.
READ = """keys => keys.map(key => {
  const box = document.querySelector('[data-review-button="' + key + '"]')
      || document.querySelector('.st-key-' + key + ' button');
  if (!box) return [key, null, []];
  const cut = [...box.querySelectorAll('*'), box].filter(e => e.scrollWidth > e.clientWidth + 1
      && getComputedStyle(e).overflow !== 'visible').map(e => e.tagName + ':' + e.innerText);
  return [key, box.innerText, cut];
})"""


@pytest.fixture(autouse=True)
def own_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CONCORD_CACHE", str(tmp_path / "cache"))


@pytest.mark.parametrize("width", [1280, 1400, 1920])
def test_review_button_labels_are_not_cut(server_factory, chromium_browser, tmp_path, width):
    with Store.open() as s:
        fabricate_run(s, tmp_path / "data")
    server = server_factory()
    from core.app_server import AppPage
    context = chromium_browser.new_context(viewport={"width": width, "height": 1000})
    try:
        app = AppPage(context.new_page(), server).goto().nav("Review")
        app.wait_text("Best-matching captions for this image")
        app.wait_idle()
        one = {key: (text, cut) for key, text, cut in app.page.evaluate(READ, list(BUTTONS))}
        app.main.get_by_text("Bulk grid", exact=True).click()
        app.wait_text("Keep selected")
        app.wait_idle()
        grid = {key: (text, cut) for key, text, cut in app.page.evaluate(READ, list(BULK))}
    finally:
        context.close()
    for rendered, expected in ((one, BUTTONS), (grid, BULK)):
        for key, words in expected.items():
            text, cut = rendered[key]
            assert text is not None, f"button {key} not rendered at {width} px"
            assert text.split() == " ".join(words).split(), f"{key} at {width} px reads {text!r}"
            assert not cut, f"{key} at {width} px has cut parts: {cut}"
