"""Review page end to end in headless Chromium: keyboard-only review, keys faster than the server answers,
two tabs at once, a killed server, captions with markup shown literally. The decisions are read from the DuckDB
file after the server stops."""
from __future__ import annotations

import re
from pathlib import Path

import pytest

from core.store import Store
from tests.test_projection import fabricate_run
from tests.test_review import SCRIPT, review_run

LABEL = {"k": "keep", "x": "reject", "f": "fix", "s": "skip"}
DONE = {"k": "Kept", "x": "Rejected", "f": "Fixed", "s": "Skipped"}


@pytest.fixture(autouse=True)
def own_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CONCORD_CACHE", str(tmp_path / "cache"))


def review_page(open_app, server):
    """A tab on the Review page, reached through the navigation as a person does."""
    return open_app(server).nav("Review")


def shown(app) -> str:
    """The key of the pair on show."""
    return re.search(r"^pair (\S+) · split", app.text(), re.M).group(1)


def first_suggestion(app) -> str:
    return re.search(r"^1  \d\.\d{3}  (.*)$", app.text(), re.M).group(1)


def key_down(app, key: str) -> None:
    """Press `key` with no widget focused (as after clicking on the page's background)."""
    app.page.evaluate("document.activeElement && document.activeElement.blur()")
    app.page.keyboard.press(key)


def saved(app) -> bool:
    """Has the server stored every decision the card made (none waits in its log)?"""
    return app.page.evaluate("document.querySelector('.concord-card')?.dataset.pending") == "0"


def press(app, key: str, expect: str) -> None:
    """Press `key`, wait for the notice `expect` and for the decision to be stored."""
    key_down(app, key)
    app.wait_until(lambda: expect in app.text(), what=expect)
    app.wait_until(lambda: saved(app), what="the decision stored")
    app.wait_idle()


def expected_meta(pairs, log: list[tuple[str, str, str]]) -> set[tuple[str, str, int]]:
    """The active meta-data after these (key, action, new caption) decisions, applied in order."""
    by_key = pairs.set_index("key")
    state: dict[tuple[str, str], int] = {}
    for key, action, new in log:
        img, cap = by_key.loc[key, "image_path"], by_key.loc[key, "caption"]
        if action == "fix":
            state[(img, new)] = 1
        if action in ("keep", "reject", "fix"):
            state[(img, cap)] = int(action == "keep")
    return {(i, c, l) for (i, c), l in state.items()}


def test_keyboard_only_review(server_factory, open_app, tmp_path):
    with Store.open() as s:
        fab = fabricate_run(s, tmp_path / "data")
    server = server_factory()
    app = review_page(open_app, server)
    assert "K keep · X reject · F fix" in app.text()
    done: list[tuple[str, str, str]] = []
    for n, key in enumerate("kxfkxkfkxkk"):
        pair = shown(app)
        new = first_suggestion(app) if key == "f" else ""
        press(app, key, f"{DONE[key]} pair {pair}")
        done.append((pair, LABEL[key], new))
        if n == 4:   # undo the reject just made: the pair comes back and is decided again
            press(app, "u", f"Undid reject of pair {pair}")
            assert shown(app) == pair
            done.pop()
    assert len(done) == 10
    server.stop()
    with Store.open() as s:
        log = s.decisions_frame(fab.dataset_id)
        effective = log[(log["action"] != "undo") & ~log["decision_id"].isin(log["reverts"].dropna())]
        assert list(zip(effective["pair_key"], effective["action"], effective["new_caption"].fillna(""))) == done
        assert list(log["action"]).count("undo") == 1 and set(log["reviewer"]) == {"reviewer"}
        assert len(log) == 12   # 11 decisions and the undo, in the order made
        meta = s.meta_frame(fab.dataset_id)
        assert set(zip(meta["image_path"], meta["caption"], meta["label"])) == \
            expected_meta(s.pairs_frame(fab.dataset_id), done)


def test_keys_faster_than_the_server_show_the_next_pairs_at_once(server_factory, open_app, tmp_path):
    with Store.open() as s:
        fab = fabricate_run(s, tmp_path / "data")
    server = server_factory()
    app = review_page(open_app, server)
    seen = []
    for key in "kxs":              # no wait for the server: each key shows the card's next pair at once
        seen.append(shown(app))
        key_down(app, key)
        assert shown(app) != seen[-1] and f"{DONE[key]} pair {seen[-1]}" in app.text()
    app.wait_until(lambda: saved(app), what="the three decisions stored")
    app.wait_idle()
    app.wait_until(lambda: "2 decided · 1 skipped" in app.text(), what="the queue's count after the three keys")
    server.stop()
    with Store.open() as s:
        log = s.decisions_frame(fab.dataset_id)
        assert list(zip(log["pair_key"], log["action"])) == list(zip(seen, ["keep", "reject", "skip"]))


def test_two_tabs_at_once(server_factory, open_app, tmp_path):
    with Store.open() as s:
        fab = fabricate_run(s, tmp_path / "data")
    server = server_factory()
    one, two = review_page(open_app, server), review_page(open_app, server)
    two.fill("Reviewer", "bob")
    made = []
    for _ in range(4):
        a, b = shown(one), shown(two)
        key_down(one, "k")
        key_down(two, "x")
        one.wait_until(lambda: f"Kept pair {a}" in one.text() and saved(one), what="keep in tab one")
        two.wait_until(lambda: f"Rejected pair {b}" in two.text() and saved(two), what="reject in tab two")
        one.wait_idle()
        two.wait_idle()
        made += [(a, "keep", "reviewer"), (b, "reject", "bob")]
    for app in (one, two):
        assert not app.page.get_by_test_id("stException").count()
        assert not app.page.get_by_test_id("stAlertContentError").count()
    server.stop()
    with Store.open() as s:
        log = s.decisions_frame(fab.dataset_id)
        assert sorted(zip(log["pair_key"], log["action"], log["reviewer"])) == sorted(made)


def test_killed_server_loses_no_decision_and_markup_is_literal(server_factory, open_app, tmp_path):
    with Store.open() as s:
        rv = review_run(s, tmp_path / "data")
    server = server_factory()
    app = review_page(open_app, server)
    assert SCRIPT in app.text()                      # shown literally: tags and asterisks as typed
    assert not app.main.locator("script").count() and not app.main.locator("strong").count()
    press(app, "k", "Kept pair k2")
    press(app, "x", "Rejected pair k4")
    server.kill()                                    # right after the decision: no clean shutdown
    server.start()
    app.reload()          # the tab reconnects at /review on a fresh server process
    app.wait_until(lambda: "· split" in app.text(), what="the next pair")
    assert shown(app) == "k3" and "Dataset" in app.text("sidebar")
    server.stop()
    with Store.open() as s:
        log = s.decisions_frame(rv.dataset_id)
        assert list(zip(log["pair_key"], log["action"])) == [("k2", "keep"), ("k4", "reject")]
        meta = s.meta_frame(rv.dataset_id)
        assert sorted(zip(meta["caption"], meta["label"])) == [(SCRIPT, 1), ("a green star", 0)]
