"""Review page (AppTest): each action changes the store and the meta-data at once, undo walks back,
captions stay plain text, the bulk grid decides in one transaction, review sets arrive from Explore,
empty states. One pair at a time is the card: a test reads the data it was sent and decides as its script
does, by adding an entry to the card's log (the browser's part is tests/browser/test_review_browser.py)."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from core.store import Store
from pages.common import get_store
from tests.page_resources import fresh_page_resources
from tests.test_review import SCRIPT, review_run

PAGE = str(Path(__file__).resolve().parent.parent / "pages" / "review.py")


@pytest.fixture(autouse=True)
def fresh_store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("CONCORD_CACHE", str(tmp_path / "cache"))   # run ids restart at 1 in every database
    with fresh_page_resources():
        yield


@pytest.fixture
def rv(tmp_path):
    with Store.open() as s:
        return review_run(s, tmp_path / "data")


def page(dataset: str | None = "rv", **state) -> AppTest:
    at = AppTest.from_file(PAGE, default_timeout=60)
    at.session_state["dataset"] = dataset
    at.session_state["reviewer"] = "ann"
    for k, v in state.items():
        at.session_state[k] = v
    at.run()
    assert not at.exception, at.exception
    return at


def texts(at: AppTest) -> list[str]:
    return [t.value for t in at.text]


def card(at: AppTest) -> dict:
    """What the Review card was sent: its window of pairs, the progress, the notice, its session's token."""
    found = at.get("bidi_component")
    assert len(found) == 1, "no Review card on the page"
    return json.loads(found[0].proto.json)


def shown(at: AppTest) -> dict:
    """The pair on show (the card's first)."""
    return card(at)["pairs"][0]


def suggested(at: AppTest) -> list[str]:
    """The suggested captions' lines ('N  SIMILARITY  CAPTION', as the card draws them), best first."""
    return [f"{i + 1}  {s['similarity']}  {s['caption']}" for i, s in enumerate(shown(at)["captions"])]


def shown_key(at: AppTest) -> str:
    return shown(at)["key"]


def notice(at: AppTest) -> list[str] | None:
    """The card's notice: [kind, text], kind 'done' or 'error'."""
    return card(at)["notice"]


def progress_line(at: AppTest) -> str:
    p = card(at)["progress"]
    return f"{p['decided']} decided · {p['skipped']} skipped · {p['remaining']} left in this queue (of {p['scope']})"


def decide(at: AppTest, action: str, caption: str | None = None) -> AppTest:
    """Do what the card's script does on a key press: add the entry for the pair on show to its log, then run."""
    d = card(at)
    pair = {k: shown(at)[k] for k in ("pair_id", "key", "caption")} if action != "undo" else None
    entry = {"token": d["token"], "seq": d["acked"] + 1, "where": d["where"], "action": action}
    if pair is not None:
        entry |= {"pair": pair, "caption": caption}
    at.session_state["review_card"] = {"log": [entry]}
    at.run()
    assert not at.exception, at.exception
    return at


def click(at: AppTest, key: str) -> AppTest:
    at.button(key=key).click().run()
    assert not at.exception, at.exception
    return at


def log(rv) -> list[tuple]:
    d = get_store().decisions_frame(rv.dataset_id)
    return list(zip(d["pair_key"], d["action"], d["reviewer"], d["new_caption"].fillna("")))


def meta(rv) -> list[tuple]:
    m = get_store().meta_frame(rv.dataset_id)
    return sorted(zip(m["image_path"], m["caption"], m["label"]))


def test_empty_states(tmp_path):
    at = page(dataset=None)
    assert "No dataset yet" in at.info[0].value
    with Store.open() as s:
        review_run(s, tmp_path / "data")
        s.write_dataset("unscored", tmp_path / "data", "csv", s.dataset_records(s.dataset("rv").id))
    at = page(dataset="unscored")
    assert at.info[0].value.startswith("No finished run for this dataset yet")
    at = page(review_split="val")
    assert shown_key(at) == "k4" and [p["key"] for p in card(at)["pairs"]] == ["k4"]
    decide(at, "reject")
    assert card(at)["pairs"] == [] and progress_line(at) == "1 decided · 0 skipped · 0 left in this queue (of 1)"
    decide(at, "undo")                               # undo is still there when the queue is exhausted
    assert notice(at) == ["done", "Undid reject of pair k4"] and shown_key(at) == "k4"


def test_keep_reject_fix_skip_undo(rv):
    at = page()
    assert [p["key"] for p in card(at)["pairs"]] == ["k2", "k4", "k3", "k5"]   # most suspicious first, 4 ahead
    decide(at, "keep")
    assert notice(at) == ["done", "Kept pair k2"] and shown_key(at) == "k4"
    assert log(rv) == [("k2", "keep", "ann", "")] and meta(rv) == [("a.png", SCRIPT, 1)]
    decide(at, "reject")
    assert shown_key(at) == "k3" and meta(rv)[-1] == ("b.png", "a green star", 0)
    # k3 is image b, whose other caption k4 was rejected: the caption nearest to b that is not b's is k5's
    # (0.6); "Use" fixes with it
    assert suggested(at)[0].startswith("1  0.600  ")
    suggestion = suggested(at)[0].split("  ", 2)[2]
    decide(at, "fix", suggestion)
    assert log(rv)[-1] == ("k3", "fix", "ann", suggestion) and shown_key(at) == "k5"
    assert ("b.png", "a blue square", 0) in meta(rv) and ("b.png", suggestion, 1) in meta(rv)
    decide(at, "fix", "a blue square on a white ground")
    assert log(rv)[-1] == ("k5", "fix", "ann", "a blue square on a white ground")
    decide(at, "skip")
    assert log(rv)[-1] == ("k1", "skip", "ann", "") and shown_key(at) == "k6"
    for expected in ("Undid skip of pair k1", "Undid fix of pair k5", "Undid fix of pair k3"):
        decide(at, "undo")
        assert notice(at) == ["done", expected]
    assert shown_key(at) == "k3"
    assert meta(rv) == [("a.png", SCRIPT, 1), ("b.png", "a green star", 0)]
    assert [a for _, a, _, _ in log(rv)] == ["keep", "reject", "fix", "fix", "skip", "undo", "undo", "undo"]
    assert card(at)["acked"] == 8


def test_card_log_is_stored_once_in_order_and_only_from_this_session(rv):
    at = page()
    d, pairs = card(at), card(at)["pairs"]
    entry = lambda seq, pair, action: {"token": d["token"], "seq": seq, "where": d["where"],  # noqa: E731
                                       "action": action, "pair": {k: pair[k] for k in ("pair_id", "key", "caption")}}
    # three keys pressed before the server answered: the card sends them in one log
    at.session_state["review_card"] = {"log": [entry(2, pairs[1], "reject"), entry(1, pairs[0], "keep"),
                                               entry(3, pairs[2], "skip")]}
    at.run()
    assert [(k, a) for k, a, _, _ in log(rv)] == [("k2", "keep"), ("k4", "reject"), ("k3", "skip")]
    assert card(at)["acked"] == 3 and shown_key(at) == "k5"
    at.run()                                          # the same log again (a rerun before the card trimmed it)
    at.session_state["review_card"] = {"log": [entry(3, pairs[2], "skip"), {**entry(4, pairs[3], "keep"),
                                                                            "token": "another-server-session"}]}
    at.run()
    assert len(log(rv)) == 3 and card(at)["acked"] == 3   # nothing twice, nothing from another session


def test_fix_without_a_caption_or_with_its_own_is_refused(rv):
    at = page()
    decide(at, "fix", SCRIPT)
    assert notice(at)[0] == "error" and "the pair's own caption" in notice(at)[1] and shown_key(at) == "k2"
    decide(at, "fix", "")
    assert notice(at) == ["error", "a fix needs the new caption: type one or use a suggestion"]
    assert shown_key(at) == "k2" and log(rv) == [] and meta(rv) == []


def test_suggestions_leave_out_the_images_own_captions(rv):
    at = page()
    assert shown_key(at) == "k2"
    lines = [line.split("  ", 1)[1] for line in suggested(at)]
    # image a's other caption k1 (1,0,0) decides: k4's caption (0.8) first; a's own captions are not offered
    assert lines.index("0.800  a green star") < lines.index("0.000  a blue square")
    assert "1.000  a red circle" not in lines
    assert shown(at)["basis"] == "agreement with the image's other captions"
    decide(at, "fix", shown(at)["captions"][0]["caption"])
    assert log(rv) == [("k2", "fix", "ann", "a green star")]
    assert meta(rv) == [("a.png", SCRIPT, 0), ("a.png", "a green star", 1)]


def test_caption_with_markup_is_sent_as_text(rv):
    at = page()
    assert shown(at)["caption"] == SCRIPT               # the card sets it as text (textContent), never as HTML
    rendered = " ".join(str(m.value) for m in [*at.markdown, *at.caption, *at.info, *at.error, *at.subheader])
    assert "alert" not in rendered and "**x**" not in rendered
    assert not at.get("html")


def test_bulk_grid_decides_in_one_transaction(rv):
    at = page()
    at.radio(key="review_mode").set_value("Bulk grid").run()
    assert [t for t in texts(at) if t in {p for p in (SCRIPT, "a green star", "a blue square")}] == \
        [SCRIPT, "a green star", "a blue square"]
    ids = get_store().pairs_frame(rv.dataset_id).set_index("key")["pair_id"]
    at.checkbox(key=f"review_pick_{ids['k2']}").check()
    at.checkbox(key=f"review_pick_{ids['k3']}").check()
    click(at, "review_bulk_reject")
    assert texts(at)[0] == "Rejected 2 pairs"
    d = get_store().decisions_frame(rv.dataset_id)
    assert list(d["pair_key"]) == ["k2", "k3"] and d["created_at"].nunique() == 1
    assert meta(rv) == [("a.png", SCRIPT, 0), ("b.png", "a blue square", 0)]
    click(at, "review_bulk_all")
    click(at, "review_bulk_keep")
    assert texts(at)[0] == "Kept 4 pairs"
    assert at.info[0].value.startswith("Nothing left in this queue")


def test_review_set_from_explore(rv):
    with Store.open() as s:
        set_id = s.create_review_set(rv.dataset_id, "lasso", [rv.pair["k5"], rv.pair["k1"]])
    at = page(review_set=set_id)
    assert at.selectbox(key="review_order").value == "set" and at.selectbox(key="review_set_id").value == set_id
    assert [p["key"] for p in card(at)["pairs"]] == ["k5", "k1"]
    decide(at, "keep")
    assert shown_key(at) == "k1"
    decide(at, "keep")
    assert card(at)["pairs"] == [] and card(at)["progress"]["remaining"] == 0


def test_revisiting_skipped_pairs(rv):
    at = page()
    decide(at, "skip")
    at.selectbox(key="review_state").set_value("skipped").run()
    assert shown_key(at) == "k2" and card(at)["progress"]["exact"] is False
    decide(at, "keep")                              # decided again: it leaves the skipped queue
    assert card(at)["pairs"] == []
    assert [a for _, a, _, _ in log(rv)] == ["skip", "keep"]


def test_the_review_set_order_without_a_set_says_so_and_shows_the_most_suspicious(rv):
    at = page(review_set=999)
    assert not at.error and at.info[0].value.startswith("The review-set order needs a review set: pick one")
    assert at.info[0].value.endswith("Meanwhile the queue is most suspicious first.") and shown_key(at) == "k2"
    at.selectbox(key="review_order").set_value("suspicious").run()
    assert not [i for i in at.info if "review-set order" in i.value] and shown_key(at) == "k2"
    at.selectbox(key="review_order").set_value("set").run()      # chosen by hand without a set: the same note
    assert at.info[0].value.startswith("The review-set order needs a review set") and shown_key(at) == "k2"


def test_fused_run_explains_its_flags_and_refits_as_you_review():
    from core.generated import GenerateOptions, create_generated
    from core.progress import Progress
    from core.training import execute_run, start_run
    from pages.common import job_manager
    with Store.open() as s:
        create_generated(s, "fz", GenerateOptions(images=40, noise=0.4, noise_kind="hard", seed=3))
        execute_run(s, start_run(s, "fz", "b1", epochs=1, settings={"batch_size": 32}), Progress())
        fused = start_run(s, "fz", "concord", settings={"refit_every": 2}, meta_fraction=0.125)
        execute_run(s, fused, Progress())
    at = page(dataset="fz", review_run=fused)
    line = shown(at)["flag"]
    assert line.startswith(("Flagged by:", "No single signal"))
    assert "sibling" in line or "matches another" in line or "nearest" in line or line.startswith("No single")
    assert any("Fused classifier: cross-validated AUROC" in c.value and "sibling context" in c.value
               for c in at.caption)
    first = shown_key(at)
    decide(at, "reject")
    assert get_store().run(fused).metrics["fused"].get("refits") is None      # one decision: not yet due
    decide(at, "keep")
    jobs = [j for j in job_manager().jobs() if j.key == f"refit-{fused}"]
    assert len(jobs) == 1
    job_manager().wait(jobs[0].id, timeout=60)
    assert get_store().run(fused).metrics["fused"]["refits"] == 1
    assert get_store().run(fused).metrics["fused"]["labelled"]["negatives"] == 1
    decide(at, "skip")                                                         # the queue goes on after the refit
    assert shown_key(at) != first
