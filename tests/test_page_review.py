"""Review page (AppTest): each action changes the store and the meta-data at once, undo walks back,
captions stay plain text, the bulk grid decides in one transaction, review sets arrive from Explore,
empty states."""
from __future__ import annotations

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


def suggested(at: AppTest) -> list[str]:
    """The suggested captions' lines ('N  SIMILARITY  CAPTION'), best first."""
    block = next((t for t in texts(at) if t.startswith("1  ")), "")
    return block.splitlines()


def shown_key(at: AppTest) -> str:
    """The key of the pair on show (from its 'pair KEY · split S' line)."""
    return next(t for t in texts(at) if t.startswith("pair ")).split(" ")[1]


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
    assert shown_key(at) == "k4"
    click(at, "review_reject")
    assert at.info[0].value.startswith("Nothing left in this queue")
    assert "1 decided · 0 skipped · 0 left in this queue (of 1)" in at.get("progress")[0].proto.text
    click(at, "review_undo")                        # undo is still there when the queue is exhausted
    assert texts(at)[0] == "Undid reject of pair k4" and shown_key(at) == "k4"


def test_keep_reject_fix_skip_undo(rv):
    at = page()
    assert shown_key(at) == "k2"                    # most suspicious first
    click(at, "review_keep")
    assert texts(at)[0] == "Kept pair k2" and shown_key(at) == "k4"
    assert log(rv) == [("k2", "keep", "ann", "")] and meta(rv) == [("a.png", SCRIPT, 1)]
    click(at, "review_reject")
    assert shown_key(at) == "k3" and meta(rv)[-1] == ("b.png", "a green star", 0)
    # k3 is image b, whose other caption k4 was rejected: the caption nearest to b that is not b's is k5's
    # (0.6); "Use" fixes with it
    assert suggested(at)[0].startswith("1  0.600  ")
    suggestion = suggested(at)[0].split("  ", 2)[2]
    click(at, "review_use_0")
    assert log(rv)[-1] == ("k3", "fix", "ann", suggestion) and shown_key(at) == "k5"
    assert ("b.png", "a blue square", 0) in meta(rv) and ("b.png", suggestion, 1) in meta(rv)
    at.text_input(key="review_fix_text").set_value("a blue square on a white ground")
    click(at, "review_fix")
    assert log(rv)[-1] == ("k5", "fix", "ann", "a blue square on a white ground")
    assert at.text_input(key="review_fix_text").value == ""      # cleared for the next pair
    click(at, "review_skip")
    assert log(rv)[-1] == ("k1", "skip", "ann", "") and shown_key(at) == "k6"
    for expected in ("Undid skip of pair k1", "Undid fix of pair k5", "Undid fix of pair k3"):
        click(at, "review_undo")
        assert texts(at)[0] == expected
    assert shown_key(at) == "k3"
    assert meta(rv) == [("a.png", SCRIPT, 1), ("b.png", "a green star", 0)]
    assert [a for _, a, _, _ in log(rv)] == ["keep", "reject", "fix", "fix", "skip", "undo", "undo", "undo"]


def test_fix_without_a_caption_or_with_its_own_is_refused(rv):
    at = page()
    at.text_input(key="review_fix_text").set_value(SCRIPT)
    click(at, "review_fix")
    assert "the pair's own caption" in at.error[0].value and shown_key(at) == "k2"
    assert log(rv) == [] and meta(rv) == []


def test_fix_key_uses_the_first_suggestion(rv):
    at = page()
    assert shown_key(at) == "k2"
    lines = [line.split("  ", 1)[1] for line in suggested(at)]
    # image a's other caption k1 (1,0,0) decides: k4's caption (0.8) first; a's own captions are not offered
    assert lines.index("0.800  a green star") < lines.index("0.000  a blue square")
    assert "1.000  a red circle" not in lines
    assert "From elsewhere in the dataset, by agreement with the image's other captions under this run." in \
        [c.value for c in at.caption]
    click(at, "review_fix")
    assert log(rv) == [("k2", "fix", "ann", "a green star")]
    assert meta(rv) == [("a.png", SCRIPT, 0), ("a.png", "a green star", 1)]


def test_caption_with_markup_is_plain_text(rv):
    at = page()
    assert SCRIPT in texts(at)
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
    assert shown_key(at) == "k5"
    click(at, "review_keep")
    assert shown_key(at) == "k1"
    click(at, "review_keep")
    assert at.info[0].value.startswith("Nothing left in this queue")


def test_revisiting_skipped_pairs(rv):
    at = page()
    click(at, "review_skip")
    at.selectbox(key="review_state").set_value("skipped").run()
    assert shown_key(at) == "k2"
    click(at, "review_keep")                        # decided again: it leaves the skipped queue
    assert at.info[0].value.startswith("Nothing left in this queue")
    assert [a for _, a, _, _ in log(rv)] == ["skip", "keep"]


def test_unknown_review_set_is_refused_with_the_reason(rv):
    at = page(review_set=999)
    assert at.error[0].value == "the review-set order needs a review set"
    at.selectbox(key="review_order").set_value("suspicious").run()
    assert not at.error and shown_key(at) == "k2"


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
    line = next(t for t in texts(at) if t.startswith(("Flagged by:", "No single signal")))
    assert "sibling" in line or "matches another" in line or "nearest" in line or line.startswith("No single")
    assert any("Fused classifier: cross-validated AUROC" in c.value for c in at.caption)
    first = shown_key(at)
    click(at, "review_reject")
    assert get_store().run(fused).metrics["fused"].get("refits") is None      # one decision: not yet due
    click(at, "review_keep")
    jobs = [j for j in job_manager().jobs() if j.key == f"refit-{fused}"]
    assert len(jobs) == 1
    job_manager().wait(jobs[0].id, timeout=60)
    assert get_store().run(fused).metrics["fused"]["refits"] == 1
    assert get_store().run(fused).metrics["fused"]["labelled"]["negatives"] == 1
    click(at, "review_skip")                                                   # the queue goes on after the refit
    assert shown_key(at) != first
