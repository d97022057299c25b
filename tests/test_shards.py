"""Sharded scoring (issue 21): the local engine against a run's own scores, resume, cancel, failed shards,
zero-shot calibration, attach (the consensus terms read in place, Explore and Review on an attached set, the
shards folder moved away), and the command line; the Ray engine at the end.

One small demo (30 images, 150 pairs) is trained once for the module (b1, one epoch) and cut into three
shards: relative image paths, image bytes, absolute paths."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

from core.errors import Cancelled, ConcordError
from core.mixtures import fit_gmm
from core.paths import REPO_ROOT
from core.progress import Progress
from core.shards.config import ShardScoreConfig
from core.shards.pipeline import consensus_terms, score_shards
from core.shards.attach import attach
from core.shards.reader import ShardColumns, list_shards
from core.shards.scorer import Mixture, spec_from_run, zero_shot_spec
from core.shards.writer import MANIFEST, output_files
from core.store import Store
from pages.common import get_store


class Source:
    """The module's trained demo and its shards."""

    def __init__(self, home: Path) -> None:
        self.home = home
        self.db = home / "concord.duckdb"
        self.cache = home / "cache"
        self.shards = home / "shards"


@pytest.fixture(scope="module")
def source(tmp_path_factory: pytest.TempPathFactory) -> Source:
    from core.generated import GenerateOptions, create_generated
    from core.training import execute_run, start_run
    src = Source(tmp_path_factory.mktemp("shards-source"))
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("CONCORD_HOME", str(src.home))
        mp.setenv("CONCORD_CACHE", str(src.cache))
        with Store.open(src.db) as store:
            create_generated(store, "demo", GenerateOptions(images=30, noise=0.4, seed=3))
            run_id = start_run(store, "demo", "b1", epochs=1, settings={"batch_size": 16})
            execute_run(store, run_id, Progress())
            ds = store.dataset("demo")
            frame = store.pairs_frame(ds.id, run_id)
    src.run_id, src.frame, src.root = run_id, frame, Path(ds.root)
    src.shards.mkdir()
    parts = [frame.iloc[i::3] for i in range(3)]
    images = [list(parts[0]["image_path"]),                                        # relative to the shard
              [(src.root / p).read_bytes() for p in parts[1]["image_path"]],       # bytes
              [str(src.root / p) for p in parts[2]["image_path"]]]                 # absolute
    for i, (part, image) in enumerate(zip(parts, images)):
        folder = src.root if i == 0 else src.shards
        pq.write_table(pa.table({"image": image, "caption": list(part["caption"]), "key": list(part["key"])}),
                       folder / f"part{i}.parquet")
    src.inputs = [str(src.root / "part0.parquet"), str(src.shards / "part[12].parquet")]
    return src


@pytest.fixture
def env(source: Source, monkeypatch: pytest.MonkeyPatch) -> Source:
    monkeypatch.setenv("CONCORD_CACHE", str(source.cache))
    return source


def read_out(out: Path) -> pd.DataFrame:
    return pa.concat_tables([pq.read_table(p) for p in output_files(out)]).to_pandas()


def test_a_run_whose_weights_no_longer_fit_the_model_is_refused_with_a_message(env: Source) -> None:
    import dataclasses

    from core.shards.scorer import Embedder
    with Store.open(env.db) as store:
        spec = spec_from_run(store, env.run_id)
    narrower = {k: v[..., :1] if v.ndim else v for k, v in spec.encoder_state.items()}   # another architecture's
    with pytest.raises(ConcordError, match=r"run \d+ \(.*\): its trained weights do not fit this version's"):
        Embedder(dataclasses.replace(spec, encoder_state=narrower), "cpu")


def test_local_scores_are_the_runs_own_and_complete(env: Source, tmp_path: Path) -> None:
    with Store.open(env.db) as store:
        spec = spec_from_run(store, env.run_id)
    report = score_shards(env.inputs, tmp_path / "out", spec, ShardScoreConfig(batch_size=32))
    assert (report.shards, report.pairs, report.failed, report.skipped) == (3, 150, {}, [])
    out = read_out(tmp_path / "out")
    assert sorted(out["key"]) == sorted(env.frame["key"])
    merged = out.merge(env.frame[["key", "similarity", "split", "image_hash", "caption_hash"]], on="key",
                       suffixes=("", "_run"))
    # the run's trained encoder, rebuilt from its checkpoint, gives the run's own similarities
    np.testing.assert_allclose(merged["similarity"], merged["similarity_run"], atol=1e-5)
    assert (merged["image_hash"] == merged["image_hash_run"]).all()
    assert (merged["caption_hash"] == merged["caption_hash_run"]).all()
    # clean_prob: B0's rule, a GMM fitted on the run's training similarities
    train = env.frame.loc[env.frame["split"] == "train", "similarity"].to_numpy()
    fit = fit_gmm(train, max_iter=100, seed=0)
    np.testing.assert_allclose(out["clean_prob"], fit.posterior(out["similarity"].to_numpy())[:, 1], atol=1e-12)
    assert (out["weight"] == out["clean_prob"]).all()
    # rows keep their shard's order and the global ordinal follows the sorted shards
    first = out[out["shard"] == env.inputs[0]]
    assert list(first["row"]) == list(range(50)) and list(first["key"]) == list(env.frame["key"].iloc[0::3])
    assert sorted(out["ordinal"]) == list(range(150))
    # images: relative paths resolved against the shard's folder; bytes written once under OUT/images
    assert all(Path(p).is_file() for p in out["image_path"])
    from_bytes = out[out["image_path"].str.startswith(str(tmp_path / "out" / "images"))]
    assert len(from_bytes) == 50 and (from_bytes["image_path"].map(lambda p: Path(p).name)
                                      == from_bytes["image_hash"]).all()
    # the embeddings are stored per pair, and the consensus terms are those of each shard as its own pool
    shard = out[out["shard"] == env.inputs[0]]
    img, cap = np.stack(shard["image_emb"]), np.stack(shard["caption_emb"])
    assert img.shape == (50, 256) and np.allclose(np.einsum("nd,nd->n", img, cap), shard["similarity"], atol=1e-5)
    terms = consensus_terms(shard["image_hash"].to_numpy(), shard["caption_hash"].to_numpy(), img, cap, 10)
    assert set(terms) == {"caption_margin", "image_margin", "image_neighbours", "caption_neighbours",
                          "caption_images", "siblings", "sibling_rank", "sibling_margin", "similarity_margin"}
    for name, values in terms.items():
        np.testing.assert_allclose(shard[name].to_numpy(), values, equal_nan=True)


def test_rerun_skips_written_shards_and_cancel_keeps_them(env: Source, tmp_path: Path) -> None:
    with Store.open(env.db) as store:
        spec = spec_from_run(store, env.run_id)
    config = ShardScoreConfig(batch_size=25, consensus=False, embeddings=False)

    def cancel_after_first_shard(p: Progress) -> None:
        if p.metrics.get("shards_written", 0) >= 1:
            p.cancel()
    with pytest.raises(Cancelled):
        score_shards(env.inputs, tmp_path / "out", spec, config, Progress(listener=cancel_after_first_shard))
    written = output_files(tmp_path / "out")
    assert len(written) == 1
    stamp = written[0].stat().st_mtime_ns
    report = score_shards(env.inputs, tmp_path / "out", spec, config)
    assert report.skipped == [written[0].stem] and len(report.written) == 2 and report.pairs == 100
    assert written[0].stat().st_mtime_ns == stamp
    again = score_shards(env.inputs, tmp_path / "out", spec, config)
    assert (sorted(again.skipped), again.written, again.pairs) == (sorted(report.skipped + report.written), [], 0)
    assert len(read_out(tmp_path / "out")) == 150
    # another scorer into the same folder is refused, and nothing there changes
    before = (tmp_path / "out" / MANIFEST).read_text()
    with pytest.raises(ConcordError, match="other settings; write these"):
        score_shards(env.inputs, tmp_path / "out", spec, ShardScoreConfig(consensus=True, embeddings=False))
    assert (tmp_path / "out" / MANIFEST).read_text() == before and len(output_files(tmp_path / "out")) == 3


def test_a_shard_with_an_unreadable_image_is_reported_by_name(env: Source, tmp_path: Path) -> None:
    bad = tmp_path / "in"
    bad.mkdir()
    rows = env.frame.iloc[:4]
    pq.write_table(pa.table({"image": [str(env.root / p) for p in rows["image_path"]],
                             "caption": list(rows["caption"])}),
                   bad / "good.parquet")
    (bad / "broken.png").write_bytes(b"not a png")
    pq.write_table(pa.table({"image": [str(env.root / rows["image_path"].iloc[0]), "broken.png", "missing.png"],
                             "caption": ["a", "b", "c"]}), bad / "bad.parquet")
    with Store.open(env.db) as store:
        spec = spec_from_run(store, env.run_id)
    report = score_shards([str(bad)], tmp_path / "out", spec, ShardScoreConfig(consensus=False))
    assert list(report.failed) == [str(bad / "bad.parquet")]
    assert report.failed[str(bad / "bad.parquet")].startswith("2 of 3 rows unreadable, first: image broken.png")
    assert [p.name.split("-")[0] for p in output_files(tmp_path / "out")] == ["good"]
    assert list(read_out(tmp_path / "out")["key"]) == [f"{p.stem}:{i}" for p in output_files(tmp_path / "out")
                                                       for i in range(4)]


def test_bad_inputs_are_refused_with_the_reason(env: Source, tmp_path: Path) -> None:
    with pytest.raises(ConcordError, match="no Parquet shards match"):
        list_shards([str(tmp_path / "nothing-*.parquet")])
    pq.write_table(pa.table({"img": ["x"], "caption": ["y"]}), tmp_path / "a.parquet")
    with pytest.raises(ConcordError, match=r"missing column 'image' \(it has: 'img', 'caption'\)"):
        list_shards([str(tmp_path / "a.parquet")])
    assert list_shards([str(tmp_path / "a.parquet")], ShardColumns(image="img"))[0].rows == 1
    with pytest.raises(ConcordError, match="image tower is not pretrained"):
        zero_shot_spec("concord-tiny")
    with pytest.raises(ConcordError, match="unknown engine"):
        ShardScoreConfig(engine="spark")


def test_zero_shot_model_is_calibrated_on_the_first_pairs(env: Source, tmp_path: Path) -> None:
    from core.models.tiny import build
    model, _ = build(7)
    weights = tmp_path / "tiny.pt"
    torch.save(model.state_dict(), weights)
    spec = zero_shot_spec(f"file:concord-tiny:{weights}")
    config = ShardScoreConfig(batch_size=20, calibration_pairs=60, consensus=False)
    report = score_shards(env.inputs, tmp_path / "out", spec, config)
    assert report.pairs == 150 and report.scorer == f"zero-shot file:concord-tiny:{weights}"
    out = read_out(tmp_path / "out")
    manifest = json.loads((tmp_path / "out" / MANIFEST).read_text())
    first = out.sort_values("ordinal")["similarity"].to_numpy()[:60]
    assert manifest["mixture"] == {k: list(v) for k, v in Mixture.fit(first).__dict__.items()}
    np.testing.assert_allclose(out["clean_prob"], Mixture.fit(first).clean_prob(out["similarity"]), atol=1e-12)


def test_attach_reviews_decides_and_exports(env: Source, tmp_path: Path) -> None:
    from core.export import ExportOptions, export_dataset
    from core.review import QueueSpec, act, build_queue
    with Store.open(env.db) as store:
        spec = spec_from_run(store, env.run_id)
    score_shards(env.inputs, tmp_path / "out", spec, ShardScoreConfig(consensus=False))
    out = read_out(tmp_path / "out")
    with Store.open(tmp_path / "review.duckdb") as store:
        result = attach(store, tmp_path / "out", "web")
        assert (result["pairs"], result["images"], result["shards"]) == (150, 30, 3)
        run = store.run(result["run_id"])
        assert (run.method, run.state, run.model) == ("shards", "finished", "concord-tiny")
        # scored without consensus terms: the copied scores only, and no line for Review
        assert (run.config["terms"], run.metrics["signal_lows"]) == ([], {})
        assert list(store.scores_frame(run.id).columns) == ["pair_id", "similarity", "clean_prob", "weight", "flagged"]
        scores = store.pairs_frame(result["dataset_id"], run.id)
        both = scores.merge(out, on="key", suffixes=("", "_file"))
        assert len(both) == 150 and np.allclose(both["clean_prob"], both["clean_prob_file"])
        queue = build_queue(store, result["dataset_id"], run, QueueSpec(), reviewer="ann", limit=2)
        assert queue.head["clean_prob"].iloc[0] == pytest.approx(out["clean_prob"].min())
        act(store, result["dataset_id"], run.id, "ann", "reject", queue.head.iloc[:1])
        decided = store.current_decisions(result["dataset_id"])
        assert list(decided["action"]) == ["reject"] and list(decided["pair_id"]) == [queue.head["pair_id"].iloc[0]]
        manifest = export_dataset(store, "web", tmp_path / "export",
                                  ExportOptions(format="csv", drop_flagged_unreviewed=False))
        assert "pairs.csv" in manifest["files"]
        exported = pd.read_csv(tmp_path / "export" / "pairs.csv")
        assert len(exported) == 149 and queue.head["key"].iloc[0] not in set(exported["pair_id"].astype(str))
        # a taken name and a folder that holds no scored shards are refused, and nothing is added
        with pytest.raises(ConcordError, match="already exists"):
            attach(store, tmp_path / "out", "web")
        with pytest.raises(ConcordError, match="holds no scored shards"):
            attach(store, tmp_path, "other")
        assert store.dataset_names() == ["web"] and len(store.runs()) == 1


TERMS = ["caption_margin", "image_margin", "image_neighbours", "caption_neighbours", "caption_images", "siblings",
         "sibling_rank", "sibling_margin", "similarity_margin"]


def score_in_two_passes(env: Source, out: Path) -> pd.DataFrame:
    """Score the shards into `out` as two passes over different input lists (the last two shards, then all
    three): the first shard's ordinals then repeat the second's. The files' rows, each with its own
    `sibling_count` (the other captions of its image in its shard)."""
    with Store.open(env.db) as store:
        spec = spec_from_run(store, env.run_id)
    score_shards(env.inputs[1:], out, spec, ShardScoreConfig(batch_size=64))
    score_shards(env.inputs, out, spec, ShardScoreConfig(batch_size=64))
    rows = read_out(out)
    rows["sibling_count"] = rows.groupby(["shard", "image_hash"])["caption_hash"].transform("nunique") - 1
    return rows


def test_attach_reads_the_consensus_terms_in_place(env: Source, tmp_path: Path) -> None:
    from core.detect.method import LOW_QUANTILE
    from core.explore import extra_columns, run_frame
    rows = score_in_two_passes(env, tmp_path / "out")
    assert rows["ordinal"].duplicated().sum() == 50           # so pairs are joined on their file and row instead
    with Store.open(tmp_path / "review.duckdb") as store:
        result = attach(store, tmp_path / "out", "web")
        run = store.run(result["run_id"])
        pairs = store.pairs_frame(result["dataset_id"], run.id)[["pair_id", "key", "clean_prob"]]
        want = pairs.merge(rows, on="key", suffixes=("", "_file"))
        assert len(want) == 150 and run.config["terms"] == TERMS
        got = store.scores_frame(run.id)
        assert list(got.columns) == ["pair_id", "similarity", "clean_prob", "weight", "flagged", *TERMS,
                                     "sibling_count"]
        got = got.set_index("pair_id").loc[want["pair_id"]]
        for name in [*TERMS, "sibling_count", "similarity", "clean_prob"]:      # row by row, as in the files
            np.testing.assert_array_equal(got[name].to_numpy(float), want[name].to_numpy(float), err_msg=name)
        assert got["siblings"].isna().sum() == want["siblings"].isna().sum() > 0  # images with one caption
        # each pair's terms alone, as Review reads them
        for _, pair in want.iterrows():
            extras = store.pair_extras(run.id, int(pair["pair_id"]))
            assert list(extras) == [*TERMS, "sibling_count"]
            np.testing.assert_array_equal(list(extras.values()), pair[[*TERMS, "sibling_count"]].to_numpy(float))
        # the lowest fifth of each term over the attached pairs, as a fused run records its signals' (none for a
        # term without a value: the demo's captions each belong to one image)
        assert want["caption_images"].isna().all()
        assert run.metrics["signal_lows"] == pytest.approx({name: float(np.nanquantile(want[name], LOW_QUANTILE))
                                                            for name in TERMS if name != "caption_images"}, rel=1e-12)
        # read in place: nothing of them is copied into the database
        assert store.cursor().execute("SELECT count(*) FROM score_extras").fetchone()[0] == 0
        assert store.extras_unavailable(run.id) is None
        assert extra_columns(run_frame(store, result["dataset_id"], run.id)) == [*TERMS, "sibling_count"]
        # the folder moved away: the copied scores still, the terms said to be missing, nothing raised or lost
        (tmp_path / "out").rename(tmp_path / "moved")
        bare = store.scores_frame(run.id)
        assert list(bare.columns) == ["pair_id", "similarity", "clean_prob", "weight", "flagged"]
        np.testing.assert_array_equal(bare["clean_prob"], store.scores_frame(run.id, extras=False)["clean_prob"])
        assert len(bare) == 150 and store.pair_extras(run.id, int(want["pair_id"].iloc[0])) == {}
        assert extra_columns(run_frame(store, result["dataset_id"], run.id)) == []
        assert store.extras_unavailable(run.id) == (
            f"The consensus terms are unavailable: the shards folder {tmp_path / 'out'} is missing (moved or "
            "deleted?). The scores, decisions and export are unaffected; put the files back to see the terms.")
        (tmp_path / "out").mkdir()
        assert "is missing from the shards folder" in store.extras_unavailable(run.id)
        (tmp_path / "out").rmdir()
        (tmp_path / "moved").rename(tmp_path / "out")
        assert store.extras_unavailable(run.id) is None and len(store.scores_frame(run.id).columns) == 15
        # a shard rewritten since attach: its rows may no longer be the pairs', so no terms are read
        first = output_files(tmp_path / "out")[0]
        pq.write_table(pq.read_table(first).slice(0, 10), first)
        assert store.extras_unavailable(run.id) == (
            f"The consensus terms are unavailable: {first.name} in {tmp_path / 'out'} has changed since it was "
            "attached. The scores, decisions and export are unaffected; attach the folder anew to read its new terms.")
        assert len(store.scores_frame(run.id).columns) == 5


def test_explore_colours_by_and_review_explains_with_the_terms(env: Source, tmp_path: Path, monkeypatch) -> None:
    """The pages on an attached set (AppTest): Explore offers the terms as colours, Review's line names the terms
    that flag a pair; with the shards folder moved away both still work and say once why the terms are gone."""
    from streamlit.testing.v1 import AppTest
    from core.detect.explain import explain_pair
    from tests.page_resources import fresh_page_resources
    from tests.test_page_review import shown
    score_in_two_passes(env, tmp_path / "out")
    with Store.open() as store:
        result = attach(store, tmp_path / "out", "web")
        run = store.run(result["run_id"])
        scores = store.scores_frame(run.id)
        flagged = int(scores.loc[scores["caption_margin"].idxmin(), "pair_id"])  # in its term's lowest fifth
        line = explain_pair(store.pair_extras(run.id, flagged), run.metrics["signal_lows"])
        review_set = store.create_review_set(result["dataset_id"], "low margin", [flagged])
    assert line.startswith("Flagged by: ") and "the caption matches another image better" in line

    def page(name: str, **state) -> AppTest:
        at = AppTest.from_file(str(REPO_ROOT / "pages" / f"{name}.py"), default_timeout=60)
        for key, value in {"dataset": "web", "reviewer": "ann", **state}.items():
            at.session_state[key] = value
        at.run()
        assert not at.exception, at.exception
        return at
    monkeypatch.setenv("CONCORD_NO_FIRST_START", "1")
    with fresh_page_resources():
        explore = page("explore", explore_layout="PCA")
        assert {*TERMS, "sibling_count"} <= set(explore.selectbox(key="explore_colour").options) and not explore.info
        explore.selectbox(key="explore_colour").set_value("caption_margin").run()
        assert not explore.exception
        assert shown(page("review", review_set=review_set))["flag"] == line       # the card's line on the pair
        (tmp_path / "out").rename(tmp_path / "moved")
        explore = page("explore", explore_layout="PCA")
        assert [i.value for i in explore.info] == [get_store().extras_unavailable(run.id)]
        assert "caption_margin" not in explore.selectbox(key="explore_colour").options
        review = page("review", review_set=review_set)
        assert shown(review)["flag"].startswith("The consensus terms are unavailable: the shards folder")
        assert not any(t.value.startswith("The consensus terms are unavailable") for t in review.text)


def test_a_split_column_passes_through_scoring_into_the_attached_set(env: Source, tmp_path: Path) -> None:
    """Shards with a `split` column: each attached pair keeps its row's split (an empty one is train); shards of
    which only some have the column are refused naming one without it."""
    frame = env.frame.reset_index(drop=True)
    splits = frame["split"].astype(str).where(frame.index % 7 != 0, "")      # every 7th row: no split given
    for i in range(2):
        part = frame.iloc[i::2]
        pq.write_table(pa.table({"image": [str(env.root / p) for p in part["image_path"]],
                                 "caption": list(part["caption"]), "key": list(part["key"]),
                                 "split": list(splits.iloc[i::2])}), tmp_path / f"split{i}.parquet")
    with Store.open(env.db) as store:
        spec = spec_from_run(store, env.run_id)
    score_shards([str(tmp_path / "split*.parquet")], tmp_path / "out", spec, ShardScoreConfig(consensus=False))
    with Store.open(tmp_path / "attach.duckdb") as store:
        result = attach(store, tmp_path / "out", "web")
        got = store.pairs_frame(result["dataset_id"]).set_index("key")["split"]
    want = pd.Series(np.where(splits == "", "train", frame["split"].astype(str)), index=frame["key"].astype(str))
    assert got.to_dict() == want.to_dict() and {"val", "test"} <= set(got)
    pq.write_table(pa.table({"image": [str(env.root / frame["image_path"][0])], "caption": ["a cat"], "key": ["k"]}),
                   tmp_path / "split9.parquet")
    with pytest.raises(ConcordError, match=r"split9.parquet has no 'split' column while others have one"):
        list_shards([str(tmp_path / "split*.parquet")])
    # a later pass over a shard without the column, into the same folder: its pair is train, the others keep theirs
    score_shards([str(tmp_path / "split9.parquet")], tmp_path / "out", spec, ShardScoreConfig(consensus=False))
    with Store.open(tmp_path / "attach.duckdb") as store:
        got = store.pairs_frame(attach(store, tmp_path / "out", "web2")["dataset_id"]).set_index("key")["split"]
    assert got["k"] == "train" and got.drop("k").to_dict() == want.to_dict()


def test_the_datasets_page_attaches_scored_shards(env: Source, tmp_path: Path, monkeypatch) -> None:
    """The Datasets page's Attach tab (AppTest): a folder without scored shards is refused with the reason and
    nothing added; the scored folder becomes a dataset listed with its pairs, with the CLI's line."""
    from streamlit.testing.v1 import AppTest
    from tests.page_resources import fresh_page_resources
    score_in_two_passes(env, tmp_path / "out")
    monkeypatch.setenv("CONCORD_NO_FIRST_START", "1")
    with fresh_page_resources():
        at = AppTest.from_file(str(REPO_ROOT / "pages" / "datasets.py"), default_timeout=60)
        at.run()
        at.text_input(key="attach_path").set_value(str(tmp_path))
        at.text_input(key="attach_name").set_value("web").run()
        at.button(key="attach_run").click().run()
        assert not at.exception, at.exception
        assert "holds no scored shards" in at.error[0].value and get_store().dataset_names() == []
        at.text_input(key="attach_path").set_value(str(tmp_path / "out")).run()
        at.button(key="attach_run").click().run()
        assert not at.exception, at.exception
        assert at.success[0].value.startswith("Attached 150 pairs (30 images, 3 shards) as 'web', run ")
        assert at.dataframe[0].value.set_index("name").loc["web", "pairs"] == 150
        assert get_store().run(get_store().runs()[0].id).method == "shards"


def test_cli_scores_and_attaches(env: Source, tmp_path: Path) -> None:
    def cli(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "core", *args], capture_output=True, text=True, cwd=REPO_ROOT,
                              timeout=600, env=os.environ | {"CONCORD_CACHE": str(env.cache)})
    scored = cli("shards", "score", *env.inputs, "--out", str(tmp_path / "out"), "--run", str(env.run_id),
                 "--engine", "local", "--no-consensus", "--db", str(env.db), "--json")
    assert scored.returncode == 0, scored.stderr
    report = json.loads(scored.stdout.strip().splitlines()[-1])
    assert (report["pairs"], len(report["written"]), report["failed"]) == (150, 3, {})
    attached = cli("shards", "attach", str(tmp_path / "out"), "--name", "web", "--db", str(tmp_path / "r.duckdb"))
    assert attached.returncode == 0, attached.stderr
    assert attached.stdout.startswith("attached 150 pairs (30 images, 3 shards) as 'web', run 1")
    missing = cli("shards", "score", str(tmp_path / "none.parquet"), "--out", str(tmp_path / "o2"), "--run",
                  str(env.run_id), "--engine", "local", "--db", str(env.db))
    assert missing.returncode == 1 and "no Parquet shards match" in missing.stderr
    assert not (tmp_path / "o2").exists()


# ------------------------------------------------------------------------------------------- the ray engine
@pytest.fixture(scope="module")
def ray_cluster():
    """A local Ray cluster on this machine's 2 CPUs with a small object store, shut down after the module."""
    pytest.importorskip("ray", reason="the ray extra is not installed (pip install -r requirements-ray.txt; "
                                      "`make test` installs it)")
    from core.shards.pipeline import ray_session
    with ray_session(num_cpus=2, object_store_memory=500 * 1024 ** 2):
        yield


def kill_embedding_worker_when_busy(stop: "threading.Event", killed: list[int]) -> None:
    """Poll the process table; SIGKILL the first Ray worker seen embedding a batch (Ray titles an actor's
    process `ray::MapWorker(…Embedder)).submit` while it runs a task)."""
    import signal
    while not stop.is_set() and not killed:
        for proc in Path("/proc").iterdir():
            try:
                cmdline = (proc / "cmdline").read_bytes().decode(errors="replace")
            except OSError:
                continue
            if proc.name.isdigit() and cmdline.startswith("ray::") and "Embedder)).submit" in cmdline:
                os.kill(int(proc.name), signal.SIGKILL)
                killed.append(int(proc.name))
                return
        stop.wait(0.02)


def test_ray_equals_local_survives_a_killed_worker_and_resumes(env: Source, ray_cluster, tmp_path: Path) -> None:
    import threading
    with Store.open(env.db) as store:
        spec = spec_from_run(store, env.run_id)
    local = score_shards(env.inputs, tmp_path / "local", spec, ShardScoreConfig(batch_size=10))
    killed: list[int] = []
    stop = threading.Event()
    killer = threading.Thread(target=kill_embedding_worker_when_busy, args=(stop, killed), daemon=True)
    killer.start()
    config = ShardScoreConfig(engine="ray", batch_size=10)
    try:
        report = score_shards(env.inputs, tmp_path / "ray", spec, config)
    finally:
        stop.set()
        killer.join()
    assert killed, "no embedding worker was seen busy to kill"
    assert (report.pairs, report.failed, sorted(report.written)) == (150, {}, sorted(local.written))
    a, b = read_out(tmp_path / "local"), read_out(tmp_path / "ray")
    assert list(a["key"]) == list(b["key"]) and list(a["row"]) == list(b["row"])
    for column in ("similarity", "clean_prob", "weight", "image_emb", "caption_emb"):
        np.testing.assert_allclose(np.stack(b[column]), np.stack(a[column]), atol=1e-5, err_msg=column)
    # the consensus terms are those of each shard's own embeddings (a neighbour list can change order where two
    # neighbours tie within float error, so they are compared against their definition, not across engines)
    for name, shard in b.groupby("shard"):
        terms = consensus_terms(shard["image_hash"].to_numpy(), shard["caption_hash"].to_numpy(),
                                np.stack(shard["image_emb"]), np.stack(shard["caption_emb"]), 10)
        for column, values in terms.items():
            np.testing.assert_allclose(shard[column].to_numpy(), values, equal_nan=True, err_msg=f"{name} {column}")
    again = score_shards(env.inputs, tmp_path / "ray", spec, config)
    assert (sorted(again.skipped), again.written, again.pairs) == (sorted(report.written), [], 0)


def test_a_cancelled_score_and_attach_job_resumes_and_attaches(env: Source, tmp_path: Path, monkeypatch) -> None:
    """The app's job (`core.shards.job`): a taken name is refused before any scoring; cancelled after one shard it
    keeps that shard and attaches nothing; started again it scores only the other two, then attaches all three."""
    from core.shards.job import score_and_attach
    home = tmp_path / "home"
    home.mkdir()
    shutil.copy(env.db, home / "concord.duckdb")
    config = ShardScoreConfig(batch_size=25)

    def cancel_after_first_shard(p: Progress) -> None:
        if p.metrics.get("shards_written", 0) >= 1:
            p.cancel()
    with Store.open(home / "concord.duckdb") as store:
        with pytest.raises(ConcordError, match="a dataset named 'demo' exists already"):
            score_and_attach(store, env.inputs, tmp_path / "out", "demo", run_id=env.run_id, model=None,
                             config=config, progress=Progress())
        assert not (tmp_path / "out").exists()
        with pytest.raises(Cancelled):
            score_and_attach(store, env.inputs, tmp_path / "out", "web", run_id=env.run_id, model=None, config=config,
                             progress=Progress(listener=cancel_after_first_shard))
        assert len(output_files(tmp_path / "out")) == 1 and not store.has_dataset("web")
        result = score_and_attach(store, env.inputs, tmp_path / "out", "web", run_id=env.run_id, model=None,
                                  config=config, progress=Progress())
        assert (result["report"]["pairs"], len(result["report"]["skipped"]),
                len(result["report"]["written"])) == (100, 1, 2)
        assert result["summary"].startswith("scored 100 pairs in ") and result["summary"].endswith(
            f"2 shards written, 1 already done, 0 failed; attached 150 pairs (30 images, 3 shards) as 'web', run "
            f"{result['attach']['run_id']}")
        assert store.dataset_summary(store.dataset("web").id)["pairs"] == 150


def test_the_datasets_page_scores_shards_in_the_background_and_attaches_them(env: Source, tmp_path: Path,
                                                                           monkeypatch) -> None:
    """The Datasets page's Scored shards tab (AppTest): a taken name is refused at once, nothing queued; then the job
    runs in the background with the run's encoder, and the page reports both steps and lists the new dataset."""
    from streamlit.testing.v1 import AppTest
    from core.shards.job import job_key
    from pages.common import job_manager
    from tests.page_resources import fresh_page_resources
    home = tmp_path / "home"
    home.mkdir()
    shutil.copy(env.db, home / "concord.duckdb")
    monkeypatch.setenv("CONCORD_HOME", str(home))
    monkeypatch.setenv("CONCORD_NO_FIRST_START", "1")
    with fresh_page_resources():
        at = AppTest.from_file(str(REPO_ROOT / "pages" / "datasets.py"), default_timeout=60)
        at.run()
        at.text_area(key="score_inputs").set_value("\n".join(env.inputs))
        at.text_input(key="score_out").set_value(str(tmp_path / "out"))
        at.text_input(key="score_name").set_value("demo").run()
        assert at.selectbox(key="score_run_id").value == env.run_id
        at.button(key="score_start").click().run()
        assert not at.exception, at.exception
        assert "a dataset named 'demo' exists already" in at.error[0].value and job_manager().jobs() == []
        at.text_input(key="score_name").set_value("web").run()
        at.button(key="score_start").click().run()
        assert not at.exception, at.exception
        job = job_manager().latest(job_key(tmp_path / "out"))
        assert job is not None and job.kind == "shards"
        job_manager().wait(job.id, 180)
        at.run()
        assert not at.exception, at.exception
        assert job.state == "finished", job.error
        assert at.success[0].value.startswith("Scored 150 pairs in ")
        assert at.success[0].value.endswith("3 shards written, 0 already done, 0 failed; attached 150 pairs "
                                            f"(30 images, 3 shards) as 'web', run {job.result['attach']['run_id']}")
        assert at.dataframe[0].value.set_index("name").loc["web", "pairs"] == 150
