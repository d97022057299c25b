"""Export: round trips through every format, atomicity (SIGKILL midway, stale temp folders), counts."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from core.errors import ConcordError
from core.export import ExportOptions, clean_stale_exports, export_dataset, plan_export, write_export
from core.hashing import file_hash
from core.importers import import_dataset
from core.store import Store

REPO = Path(__file__).resolve().parent.parent


def make_dataset(store, root: Path, name: str = "ds", fmt: str = "csv", n: int = 6) -> int:
    """n pairs over n images (`sub/imgK.png`), keys 101.., splits train/val alternating."""
    rows = []
    for k in range(n):
        path = root / "sub" / f"img{k}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.new("RGB", (8, 8), (k * 30, 10, 200 - k * 20)).save(path)
        rows.append({"image_path": f"sub/img{k}.png", "image_hash": file_hash(path), "width": 8, "height": 8,
                     "nbytes": path.stat().st_size, "caption": f"caption number {k}",
                     "split": "train" if k % 2 == 0 else "val", "key": str(101 + k)})
    store.write_dataset(name, root, fmt, pd.DataFrame(rows))
    return store.dataset(name).id


def decide_three(store, ds_id: int) -> dict[str, int]:
    pairs = store.pairs_frame(ds_id).set_index("key")["pair_id"]
    store.decide(ds_id, [int(pairs["101"])], "keep", "ann")
    store.decide(ds_id, [int(pairs["102"])], "reject", "ann")
    store.decide(ds_id, [int(pairs["103"])], "fix", "ann", new_caption="a fixed caption")
    return {k: int(v) for k, v in pairs.items()}


EXPECTED = {("sub/img0.png", "caption number 0"), ("sub/img2.png", "a fixed caption"),
            ("sub/img3.png", "caption number 3"), ("sub/img4.png", "caption number 4"),
            ("sub/img5.png", "caption number 5")}


SPLITS = {"sub/img0.png": "train", "sub/img2.png": "train", "sub/img3.png": "val", "sub/img4.png": "train",
          "sub/img5.png": "val"}


def kept_pairs(store, name: str) -> set[tuple[str, str, str, str, str]]:
    """(key, image path, image hash, caption, split) of every pair of dataset `name`."""
    pairs = store.pairs_frame(store.dataset(name).id)
    hashes = store.images_frame(store.dataset(name).id).set_index("path")["hash"]
    return {(r.key, r.image_path, hashes[r.image_path], r.caption, r.split) for r in pairs.itertuples()}


@pytest.mark.parametrize("fmt", ["csv", "jsonl", "parquet", "coco", "karpathy"])
def test_round_trip(store, tmp_path, fmt):
    """Export, then import the export folder into a fresh database with no flags at all: the same pairs
    (keys, image paths and contents, captions with the fix applied, splits) come back."""
    ds_id = make_dataset(store, tmp_path / "src", fmt=fmt)
    decide_three(store, ds_id)
    out = tmp_path / "out"
    manifest = export_dataset(store, "ds", out)
    assert manifest["format"] == fmt and manifest["images_root"] == "."
    assert manifest["counts"] == {"in": 6, "dropped": 1, "dropped_rejected": 1, "dropped_flagged_unreviewed": 0,
                                  "fixed": 1, "out": 5}
    originals = {(k, p, h, c, s) for k, p, h, c, s in kept_pairs(store, "ds") if k != "102"}
    originals = {(k, p, h, "a fixed caption" if k == "103" else c, s) for k, p, h, c, s in originals}
    assert {(p, c) for _, p, _, c, _ in originals} == EXPECTED
    assert {p: s for _, p, _, _, s in originals} == SPLITS
    with Store.open(tmp_path / "other.duckdb") as fresh:
        report = import_dataset(fresh, out)
        assert (report.name, report.format, report.pairs, report.root) == ("ds", fmt, 5, str(out))
        assert kept_pairs(fresh, "ds") == originals
        if fmt != "coco":  # one data file: importing it alone is the same
            import_dataset(fresh, out / manifest["files"][0], "from-file")
            assert kept_pairs(fresh, "from-file") == originals
    if fmt == "coco":
        assert sorted(manifest["files"]) == ["captions_train.json", "captions_val.json"]
    assert sorted(p.name for p in (out / "sub").iterdir()) == [f"img{k}.png" for k in (0, 2, 3, 4, 5)]
    log = pd.read_csv(out / "decisions.csv")
    assert list(log["action"]) == ["keep", "reject", "fix"]
    assert not [p for p in tmp_path.iterdir() if "concord-tmp" in p.name]


@pytest.mark.parametrize("fmt", ["coco", "karpathy"])
def test_round_trip_keeps_keys_that_are_not_numbers(store, tmp_path, fmt):
    """COCO and Karpathy ids are integers: text keys travel in a `pair_id` field and come back."""
    rows = []
    for k in range(3):
        Image.new("RGB", (8, 8), (k * 80, 0, 0)).save(tmp_path / f"i{k}.png")
        rows.append({"image_path": f"i{k}.png", "image_hash": file_hash(tmp_path / f"i{k}.png"), "width": 8,
                     "height": 8, "nbytes": 1, "caption": f"c{k}", "split": ["train", "val", "test"][k],
                     "key": ["00001-0", "7", "x"][k]})
    store.write_dataset("ds", tmp_path, fmt, pd.DataFrame(rows))
    export_dataset(store, "ds", tmp_path / "out")
    with Store.open(tmp_path / "other.duckdb") as fresh:
        import_dataset(fresh, tmp_path / "out")
        back = fresh.pairs_frame(fresh.dataset("ds").id)
        assert sorted(zip(back["key"], back["image_path"], back["split"])) == [
            ("00001-0", "i0.png", "train"), ("7", "i1.png", "val"), ("x", "i2.png", "test")]


def test_demo_export_imports_back_with_the_cli(store, tmp_path, capsys):
    """The issue's case: the demo exported as CSV, then `import OUT/pairs.csv` (and `import OUT`) into
    another database with no other flag; the images sit where pairs.csv names them."""
    from core.cli import main
    from core.generated import GenerateOptions, create_generated
    create_generated(store, "demo", GenerateOptions(images=10, image_size=32, noise=0.0))
    first = store.pairs_frame(store.dataset("demo").id)
    rejected = int(first["pair_id"].iloc[0])
    store.decide(store.dataset("demo").id, [rejected], "reject", "ann")
    out = tmp_path / "out"
    export_dataset(store, "demo", out)
    table = pd.read_csv(out / "pairs.csv")
    assert all((out / p).is_file() for p in table["image"]) and table["image"].iloc[0].startswith("images/")
    store.close()
    for i, target in enumerate([out / "pairs.csv", out]):
        db = tmp_path / f"db{i}.duckdb"
        assert main(["import", str(target), "--db", str(db)]) == 0
        assert "imported 'demo' (csv): 10 images, 49 captions, 49 pairs" in capsys.readouterr().out
        with Store.open(db) as back:
            pairs = back.pairs_frame(back.dataset("demo").id)
            want = first[first["pair_id"] != rejected]
            assert sorted(zip(pairs["key"], pairs["image_path"], pairs["caption"], pairs["split"])) == sorted(
                zip(want["key"], want["image_path"], want["caption"], want["split"]))


def test_paths_export_imports_from_the_original_root(store, tmp_path):
    """`--images paths`: nothing copied; the manifest's images_root leads the re-import to the originals."""
    make_dataset(store, tmp_path / "src")
    export_dataset(store, "ds", tmp_path / "out", ExportOptions(images="paths"))
    assert not (tmp_path / "out" / "sub").exists()
    with Store.open(tmp_path / "other.duckdb") as fresh:
        report = import_dataset(fresh, tmp_path / "out" / "pairs.csv")
        assert report.root == str(tmp_path / "src") and report.pairs == 6


def test_images_clashing_with_export_files_go_under_images(store, tmp_path):
    """An image whose first path part is an export file's name (`manifest.json/…`) moves all images
    under `images/`, and the data file names them there."""
    folder = tmp_path / "src" / "manifest.json"
    folder.mkdir(parents=True)
    Image.new("RGB", (8, 8), "red").save(folder / "a.png")
    store.write_dataset("ds", tmp_path / "src", "csv", pd.DataFrame([{
        "image_path": "manifest.json/a.png", "image_hash": file_hash(folder / "a.png"), "width": 8, "height": 8,
        "nbytes": 1, "caption": "red", "split": "train", "key": "1"}]))
    export_dataset(store, "ds", tmp_path / "out")
    assert pd.read_csv(tmp_path / "out" / "pairs.csv")["image"].tolist() == ["images/manifest.json/a.png"]
    with Store.open(tmp_path / "other.duckdb") as fresh:
        assert import_dataset(fresh, tmp_path / "out").pairs == 1


def test_tabular_columns_scores_and_flagged_drop(store, tmp_path):
    ds_id = make_dataset(store, tmp_path / "src")
    ids = decide_three(store, ds_id)
    run_id = store.create_run(ds_id, "npc", "concord-tiny")
    order = [ids[str(101 + k)] for k in range(6)]
    store.write_scores(run_id, np.array(order), np.zeros(6), np.array([0.9, 0.1, 0.2, 0.3, 0.8, 0.4]),
                       np.array([1.0, 0.5, 0.5, 0.25, 1.0, 0.75]))
    store.update_run(run_id, state="finished", threshold=0.5)
    plan = plan_export(store, "ds", ExportOptions(drop_flagged_unreviewed=True))
    # flagged: 102 (rejected anyway), 103 (fixed: decided), 104 and 106 (undecided → dropped)
    assert plan.counts == {"in": 6, "dropped": 3, "dropped_rejected": 1, "dropped_flagged_unreviewed": 2,
                           "fixed": 1, "out": 3}
    out = tmp_path / "out"
    manifest = export_dataset(store, "ds", out, ExportOptions(drop_flagged_unreviewed=True, images="paths"))
    table = pd.read_csv(out / "pairs.csv", keep_default_na=False)
    assert list(table.columns) == ["image", "caption", "split", "pair_id", "clean_prob", "weight", "decision"]
    assert table.to_dict("records") == [
        {"image": "sub/img0.png", "caption": "caption number 0", "split": "train", "pair_id": 101,
         "clean_prob": 0.9, "weight": 1.0, "decision": "keep"},
        {"image": "sub/img2.png", "caption": "a fixed caption", "split": "train", "pair_id": 103,
         "clean_prob": 0.2, "weight": 0.5, "decision": "fix"},
        {"image": "sub/img4.png", "caption": "caption number 4", "split": "train", "pair_id": 105,
         "clean_prob": 0.8, "weight": 1.0, "decision": ""}]
    assert manifest["counts"]["out"] == len(table)
    assert manifest["run"]["id"] == run_id and manifest["threshold"] == 0.5 and manifest["model"] == "concord-tiny"
    assert manifest["images_root"] == str(tmp_path / "src") and not (out / "images").exists()
    on_disk = json.loads((out / "manifest.json").read_text())
    assert on_disk["counts"] == manifest["counts"] and on_disk["concord_version"]


def test_refuses_non_empty_dir_and_overwrites(store, tmp_path):
    make_dataset(store, tmp_path / "src")
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    with pytest.raises(ConcordError, match="not empty; choose another folder or pass --overwrite"):
        export_dataset(store, "ds", out)
    with pytest.raises(ConcordError, match=r"out is not empty and holds no Concord export \(manifest.json\); "
                                           "--overwrite replaces only an earlier export"):
        export_dataset(store, "ds", out, ExportOptions(overwrite=True))     # a folder of the user's: never deleted
    assert (out / "keep.txt").read_text() == "mine"
    (out / "keep.txt").unlink()
    export_dataset(store, "ds", out)
    (out / "extra.txt").write_text("left over")
    export_dataset(store, "ds", out, ExportOptions(overwrite=True, format="jsonl"))     # an earlier export: replaced
    assert not (out / "extra.txt").exists() and not (out / "pairs.csv").exists() and (out / "pairs.jsonl").is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["home", "out", "src"]


@pytest.mark.parametrize("where", ["root", "above", "inside"])
def test_overwrite_never_deletes_the_datasets_own_images(store, tmp_path, where):
    """--overwrite replaces a folder: never one that is a dataset's image folder, holds it, or holds some of its
    images; the message says why and every image is still there."""
    make_dataset(store, tmp_path / "data" / "src")
    out = {"root": tmp_path / "data" / "src", "above": tmp_path / "data",
           "inside": tmp_path / "data" / "src" / "sub"}[where]
    before = sorted(p.name for p in (tmp_path / "data" / "src" / "sub").iterdir())
    with pytest.raises(ConcordError, match=r"--overwrite would delete .*, which holds (the )?images of dataset "
                                           r"'ds'.*; choose another folder"):
        export_dataset(store, "ds", out, ExportOptions(overwrite=True))
    assert sorted(p.name for p in (tmp_path / "data" / "src" / "sub").iterdir()) == before == [
        f"img{k}.png" for k in range(6)]
    assert not [p for p in out.parent.iterdir() if "concord-" in p.name]


def test_overwrite_never_deletes_an_export_that_became_a_dataset(store, tmp_path):
    """An export imported back is a dataset whose images are the export's: replacing it would delete them."""
    make_dataset(store, tmp_path / "src")
    export_dataset(store, "ds", tmp_path / "out")
    import_dataset(store, tmp_path / "out", "again")
    with pytest.raises(ConcordError, match=r"which holds the images of dataset 'again'"):
        export_dataset(store, "ds", tmp_path / "out", ExportOptions(overwrite=True))
    assert (tmp_path / "out" / "sub" / "img0.png").is_file()


def test_overwrite_never_deletes_the_database(store, tmp_path):
    make_dataset(store, tmp_path / "src")
    with pytest.raises(ConcordError, match=r"which holds the database .*concord.duckdb"):
        export_dataset(store, "ds", Path(store.path).parent, ExportOptions(overwrite=True))
    assert Path(store.path).is_file()


def test_overwrite_of_an_earlier_export_inside_the_image_folder(store, tmp_path):
    """A folder inside the dataset's own that holds none of its images (an earlier export there, paths only)
    may be replaced."""
    make_dataset(store, tmp_path / "src")
    out = tmp_path / "src" / "cleaned"
    export_dataset(store, "ds", out, ExportOptions(images="paths"))
    manifest = export_dataset(store, "ds", out, ExportOptions(images="paths", overwrite=True))
    assert manifest["counts"]["out"] == 6 and (out / "pairs.csv").is_file()


def test_export_into_a_link_writes_where_it_points(store, tmp_path):
    make_dataset(store, tmp_path / "src")
    (tmp_path / "target").mkdir()
    (tmp_path / "link").symlink_to(tmp_path / "target", target_is_directory=True)
    export_dataset(store, "ds", tmp_path / "link")
    assert (tmp_path / "link").is_symlink() and (tmp_path / "target" / "pairs.csv").is_file()
    assert not [p for p in tmp_path.iterdir() if "concord-" in p.name]


def test_an_export_folder_that_cannot_be_made_is_named_in_a_plain_message(store, tmp_path):
    make_dataset(store, tmp_path / "src")
    (tmp_path / "a-file").write_text("x")
    with pytest.raises(ConcordError, match=r"cannot create the export folder .*a-file/out: .*a-file is a file, not a "
                                           r"folder$"):
        export_dataset(store, "ds", tmp_path / "a-file" / "out")
    assert (tmp_path / "a-file").read_text() == "x"


@pytest.mark.parametrize("fmt", ["coco", "karpathy"])
def test_split_names_and_keys_that_are_no_file_name_or_number_round_trip(store, tmp_path, fmt):
    """A split `train/2014` names no folder in a COCO file name, `..` no parent, and the key '²' is a digit to
    `str.isdigit` but no number to `int`: each round trips as it was."""
    rows = []
    for k, (split, key) in enumerate([("train/2014", "²"), ("..", "5"), ("train_2014", "x")]):
        Image.new("RGB", (8, 8), (k * 80, 0, 0)).save(tmp_path / f"i{k}.png")
        rows.append({"image_path": f"i{k}.png", "image_hash": file_hash(tmp_path / f"i{k}.png"), "width": 8,
                     "height": 8, "nbytes": 1, "caption": f"c{k}", "split": split, "key": key})
    store.write_dataset("ds", tmp_path, fmt, pd.DataFrame(rows))
    manifest = export_dataset(store, "ds", tmp_path / "out")
    if fmt == "coco":
        assert sorted(manifest["files"]) == ["captions_split.json", "captions_train_2014-2.json",
                                             "captions_train_2014.json"]
    with Store.open(tmp_path / "other.duckdb") as fresh:
        import_dataset(fresh, tmp_path / "out")
        back = fresh.pairs_frame(fresh.dataset("ds").id)
        assert sorted(zip(back["key"], back["image_path"], back["split"])) == [
            ("5", "i1.png", ".."), ("x", "i2.png", "train_2014"), ("²", "i0.png", "train/2014")]


def test_scores_only_from_a_finished_run(store, tmp_path):
    ds = make_dataset(store, tmp_path / "src")
    run_id = store.create_run(ds, "b1", "concord-tiny")
    store.update_run(run_id, state="failed")
    with pytest.raises(ConcordError, match=f"run {run_id} is failed, so it scored no pair; export with a finished"):
        export_dataset(store, "ds", tmp_path / "out", ExportOptions(run_id=run_id))
    assert not (tmp_path / "out").exists()


def test_coco_images_that_shared_an_id_in_two_files_get_one_each(store, tmp_path):
    """Two COCO files of one import may each use id 7 for another image; in one exported file they would be a
    duplicate id (refused on import): the second image gets a fresh id and the export imports back."""
    make_dataset(store, tmp_path / "src", fmt="coco", n=4)
    ds = store.dataset("ds")
    info = dict(ds.info, coco={"image_ids": {"sub/img0.png": 7, "sub/img2.png": 7}})
    store._q("UPDATE datasets SET info = ? WHERE id = ?", [json.dumps(info), ds.id])
    export_dataset(store, "ds", tmp_path / "out", ExportOptions(format="coco"))
    doc = json.loads((tmp_path / "out" / "captions_train.json").read_text())
    assert {i["file_name"]: i["id"] for i in doc["images"]} == {"sub/img0.png": 7, "sub/img2.png": 8}
    with Store.open(tmp_path / "other.duckdb") as fresh:
        assert import_dataset(fresh, tmp_path / "out").pairs == 4


def test_drop_flagged_needs_a_run(store, tmp_path):
    make_dataset(store, tmp_path / "src")
    with pytest.raises(ConcordError, match="no finished run"):
        plan_export(store, "ds", ExportOptions(drop_flagged_unreviewed=True))


def test_killed_export_leaves_nothing_and_next_export_cleans(store, tmp_path):
    make_dataset(store, tmp_path / "src", n=6)
    store.close()
    out = tmp_path / "out"
    script = textwrap.dedent(f"""
        import os, signal
        from core.store import Store
        from core.progress import Progress
        from core.export import export_dataset
        def die(p):
            if p.stage == "copying images" and p.step == 3:
                os.kill(os.getpid(), signal.SIGKILL)
        export_dataset(Store.open(), "ds", {str(out)!r}, progress=Progress(listener=die))
    """)
    proc = subprocess.run([sys.executable, "-c", script], cwd=REPO, env=os.environ.copy(), timeout=120)
    assert proc.returncode == -signal.SIGKILL
    assert not out.exists()
    stale = [p for p in tmp_path.iterdir() if ".concord-tmp-" in p.name]
    assert len(stale) == 1 and (stale[0] / "sub" / "img2.png").is_file()
    with Store.open() as s:
        export_dataset(s, "ds", out)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["home", "out", "src"]


def test_clean_stale_exports_keeps_live_owners(tmp_path):
    live = tmp_path / f".x.concord-tmp-{os.getpid()}"
    dead_pid = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                              text=True).stdout.strip()
    dead = tmp_path / f".x.concord-tmp-{dead_pid}"
    other = tmp_path / ".x.concord-tmp-notapid"
    for d in (live, dead, other):
        d.mkdir()
    assert clean_stale_exports(tmp_path) == [dead]
    assert live.is_dir() and other.is_dir()


def test_failure_midway_removes_temp_folder(store, tmp_path):
    make_dataset(store, tmp_path / "src")
    os.remove(tmp_path / "src" / "sub" / "img4.png")
    with pytest.raises(ConcordError, match="image 'sub/img4.png' of dataset 'ds' is missing"):
        export_dataset(store, "ds", tmp_path / "out")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["home", "src"]


def test_missing_image_refuses_the_export_and_leaves_nothing(store, tmp_path):
    """An image gone from the dataset's root: the copy stops naming it, and no export or temporary folder is left."""
    make_dataset(store, tmp_path / "src", n=6)
    (tmp_path / "src" / "sub" / "img4.png").unlink()
    with pytest.raises(ConcordError, match=r"image 'sub/img4.png' of dataset 'ds' is missing from .*src; restore it "
                                           r"or export with --images paths"):
        export_dataset(store, "ds", tmp_path / "out")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["home", "src"]
    manifest = export_dataset(store, "ds", tmp_path / "out", ExportOptions(images="paths"))
    assert manifest["counts"]["out"] == 6


@pytest.mark.parametrize("fmt", ["csv", "jsonl", "parquet"])
def test_database_written_data_file_keeps_every_caption_exactly(store, tmp_path, fmt):
    """The data file is written by DuckDB's COPY, not pandas: quotes, commas, a newline and emoji come back as
    they were, scores as the same doubles, and an undecided pair's decision empty."""
    ds_id = make_dataset(store, tmp_path / "src", n=4)
    pairs = store.pairs_frame(ds_id).set_index("key")["pair_id"]
    tricky = 'a "quoted", comma\nsecond line · café 🐱'
    store.decide(ds_id, [int(pairs["102"])], "fix", "ann", new_caption=tricky)
    run_id = store.create_run(ds_id, "npc", "concord-tiny")
    store.write_scores(run_id, pairs.to_numpy(), np.zeros(4), np.array([0.1, 0.30000000000000004, 1e-7, 0.9]),
                       np.ones(4))
    store.update_run(run_id, state="finished", threshold=0.5)
    # a quote in COPY's path
    export_dataset(store, "ds", tmp_path / "it's out", ExportOptions(format=fmt, images="paths"))
    path = tmp_path / "it's out" / f"pairs.{fmt}"
    table = {"csv": lambda: pd.read_csv(path, keep_default_na=False, dtype={"pair_id": str}),
             "jsonl": lambda: pd.read_json(path, lines=True, dtype={"pair_id": str}),
             "parquet": lambda: pd.read_parquet(path)}[fmt]()
    assert table["caption"].tolist() == ["caption number 0", tricky, "caption number 2", "caption number 3"]
    assert table["clean_prob"].tolist() == [0.1, 0.30000000000000004, 1e-7, 0.9]
    assert table["pair_id"].tolist() == ["101", "102", "103", "104"]
    assert [d if isinstance(d, str) else "" for d in table["decision"]] == ["", "fix", "", ""]


def test_images_are_handed_out_in_batches_each_once_in_first_appearance_order(store, tmp_path):
    """Two pairs share an image: it is copied once; batches smaller than the images give them all, in order."""
    make_dataset(store, tmp_path / "src", n=5)
    rows = store.dataset_records(store.dataset("ds").id)
    shared = rows.iloc[[4]].assign(caption="another caption of image 4", key="200")
    store.write_dataset("two", tmp_path / "src", "csv", pd.concat([rows.iloc[[4]], rows.iloc[:4], shared]))
    plan = plan_export(store, "two")
    assert plan.images == 5 and plan.counts["out"] == 6
    with store.export_snapshot(*plan.source()) as snap:
        batches = list(snap.images(plan.image_prefix, 2))
    assert [len(b) for b in batches] == [2, 2, 1]
    assert [a for b in batches for a, _ in b] == ["sub/img4.png", "sub/img0.png", "sub/img1.png", "sub/img2.png",
                                                  "sub/img3.png"]
    export_dataset(store, "two", tmp_path / "out")
    assert sorted(p.name for p in (tmp_path / "out" / "sub").iterdir()) == [f"img{k}.png" for k in range(5)]
    assert len(pd.read_csv(tmp_path / "out" / "pairs.csv")) == 6


def test_what_is_decided_between_plan_and_write_is_written_consistently(store, tmp_path):
    """The write freezes the pairs once (a temporary table): a pair rejected after the plan is neither in the data
    file nor copied, the manifest counts what was written, and no snapshot table is left behind."""
    ds_id = make_dataset(store, tmp_path / "src")
    plan = plan_export(store, "ds")
    assert plan.counts["out"] == 6 and plan.images == 6
    pairs = store.pairs_frame(ds_id).set_index("key")["pair_id"]
    store.decide(ds_id, [int(pairs["104"])], "reject", "ann")
    manifest = write_export(store, plan, tmp_path / "out")
    table = pd.read_csv(tmp_path / "out" / "pairs.csv")
    assert (manifest["counts"] == {"in": 6, "dropped": 1, "dropped_rejected": 1, "dropped_flagged_unreviewed": 0,
                                   "fixed": 0, "out": 5}
            == json.loads((tmp_path / "out" / "manifest.json").read_text())["counts"])
    assert sorted(table["pair_id"]) == [101, 102, 103, 105, 106]
    assert sorted(p.name for p in (tmp_path / "out" / "sub").iterdir()) == [f"img{k}.png" for k in (0, 1, 2, 4, 5)]
    left = store.cursor().execute("SELECT count(*) FROM duckdb_tables() WHERE table_name LIKE 'export_snapshot%'")
    assert left.fetchone()[0] == 0
