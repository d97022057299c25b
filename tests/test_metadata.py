"""Meta-data curation: seeding from a clean split, split and CSV imports, add/remove/flip, search, summary."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from core import metadata
from core.errors import ConcordError, NotFound
from core.hashing import file_hash
from core.metadata import MetaThresholds


def make_meta_dataset(store, root: Path, n: int = 40, name: str = "ds", noisy_val: bool = False,
                      splits: tuple[str, ...] = ("train", "val"), noisy: tuple[str, ...] = ()) -> int:
    """n pairs over n images, keys k0.., captions 'Caption K', splits cycling through `splits`; with
    `noisy_val` the first val pair carries injected noise, and so do the pairs whose keys are in `noisy`."""
    rows = []
    for k in range(n):
        path = root / f"img{k}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.new("RGB", (8, 8), (k * 5 % 256, 10, 100)).save(path)
        split = splits[k % len(splits)]
        rows.append({"image_path": path.name, "image_hash": file_hash(path), "width": 8, "height": 8,
                     "nbytes": path.stat().st_size, "caption": f"Caption {k}", "split": split, "key": f"k{k}",
                     "is_noisy": (noisy_val and k == 1) or f"k{k}" in noisy})
    store.write_dataset(name, root, "csv", pd.DataFrame(rows))
    return store.dataset(name).id


def keys_of(store, ds_id: int, frame: pd.DataFrame | None = None) -> dict[str, tuple[int, str]]:
    """Pair key → (label, source) of the active entries."""
    meta = store.meta_frame(ds_id) if frame is None else frame
    keys = store.pairs_frame(ds_id).set_index("pair_id")["key"]
    return {keys[int(p)]: (int(l), s) for p, l, s in zip(meta["pair_id"], meta["label"], meta["source"])}


@pytest.fixture
def ds(store, tmp_path) -> int:
    return make_meta_dataset(store, tmp_path / "src")


def test_seed_from_clean_split(store, ds, tmp_path):
    assert metadata.seed_from_split(store, ds, "val", fraction=0.25, seed=3) == 5  # 25% of 20 training pairs
    got = keys_of(store, ds)
    assert len(got) == 5 and set(got.values()) == {(1, "seed")}
    assert all(int(k[1:]) % 2 == 1 for k in got)  # all drawn from val (odd keys)
    other = make_meta_dataset(store, tmp_path / "src", name="other")
    metadata.seed_from_split(store, other, "val", fraction=0.25, seed=3)
    assert keys_of(store, other) == got  # same seed, same draw
    # a second seed adds only pairs not already in the meta-data; the split has 20 pairs
    assert metadata.seed_from_split(store, ds, "val", fraction=1.0, seed=0) == 15
    assert len(store.meta_frame(ds)) == 20


def test_seed_refuses_training_missing_and_noisy_splits(store, ds, tmp_path):
    with pytest.raises(ConcordError, match=r"'train' split is the noisy one.*\(splits: train, val\)"):
        metadata.seed_from_split(store, ds, "train")
    with pytest.raises(NotFound, match=r"no split 'dev' in this dataset \(splits: train, val\)"):
        metadata.seed_from_split(store, ds, "dev")
    with pytest.raises(ConcordError, match="within \\(0, 1\\]"):
        metadata.seed_from_split(store, ds, "val", fraction=0)
    noisy = make_meta_dataset(store, tmp_path / "src", name="noisy", noisy_val=True)
    with pytest.raises(ConcordError, match="split 'val' holds 1 pairs with injected noise"):
        metadata.seed_from_split(store, noisy, "val")
    assert store.meta_entry_count(ds) == 0 and store.meta_entry_count(noisy) == 0


def test_seed_never_overwrites_a_decision(store, ds):
    pairs = store.pairs_frame(ds).set_index("key")["pair_id"]
    store.decide(ds, [int(pairs["k1"])], "reject", "ann")
    assert metadata.seed_from_split(store, ds, "val", fraction=1.0) == 19
    assert keys_of(store, ds)["k1"] == (0, "decision")


def test_ensure_seed_once(store, ds, tmp_path):
    assert metadata.ensure_seed(store, ds, "val", fraction=0.1) == 2
    assert metadata.ensure_seed(store, ds, "val", fraction=0.1) == 0
    metadata.remove_entries(store, ds, store.meta_frame(ds)["entry_id"])
    assert metadata.ensure_seed(store, ds, "val", fraction=0.1) == 0  # removed seeds stay removed
    only_train = make_meta_dataset(store, tmp_path / "src", name="t", splits=("train",))
    with pytest.raises(NotFound, match=r"no split 'val' in this dataset \(splits: train\)"):
        metadata.ensure_seed(store, only_train, "val")
    pid = int(store.pairs_frame(only_train)["pair_id"].iloc[0])
    store.decide(only_train, [pid], "keep", "ann")
    assert metadata.ensure_seed(store, only_train, "val") == 0  # positives from elsewhere suffice


def test_import_split(store, ds):
    pairs = store.pairs_frame(ds).set_index("key")["pair_id"]
    store.decide(ds, [int(pairs["k3"])], "reject", "ann")
    assert metadata.import_split(store, ds, "val") == 19
    got = keys_of(store, ds)
    assert got["k3"] == (0, "decision") and got["k1"] == (1, "import") and len(got) == 20
    with pytest.raises(ConcordError, match="noisy one"):
        metadata.import_split(store, ds, "train")
    with pytest.raises(ConcordError, match="a label is 1"):
        metadata.import_split(store, ds, "val", label=2)


def test_import_csv_all_or_nothing(store, ds, tmp_path):
    good = tmp_path / "labels.csv"
    good.write_text("pair_id,label\nk0,1\nk2,0\nk4,1\n")
    assert metadata.import_csv(store, ds, good) == 3
    assert keys_of(store, ds) == {"k0": (1, "import"), "k2": (0, "import"), "k4": (1, "import")}
    bad = tmp_path / "bad.csv"
    for body, message in [
        ("pair_id,label\nk6,1\nk8,yes\n", f"{bad} line 3: a label is 1 (matched) or 0 (mismatched), got 'yes'"),
        ("pair_id,label\nk6,1\nk99,0\n", f"{bad} line 3: no pair 'k99' in this dataset"),
        ("pair_id,label\nk6,1\nk8,0\nk6,0\n", f"{bad} line 4: pair 'k6' is already listed on line 2"),
        ("pair,label\nk6,1\n", f"{bad} line 1: missing column(s) pair_id"),
        ("pair_id,label\n", f"{bad}: no labels in the file"),
        ("pair_id,label\nk6,1\nk8,0,extra\n", f"{bad} line 3: row has 3 fields, the header has 2 (quote a value"),
        ('pair_id,label\nk6,1\nk8,0,"two\nlines"\n', f"{bad} line 3: row has 3 fields, the header has 2"),
    ]:
        bad.write_text(body)
        with pytest.raises(ConcordError) as err:
            metadata.import_csv(store, ds, bad)
        assert str(err.value).startswith(message)
    assert len(store.meta_frame(ds)) == 3  # nothing of the bad files was stored
    pid = int(store.pairs_frame(ds).set_index("key").at["k6", "pair_id"])
    assert metadata.import_csv_text(store, ds, f"pair_id,label\n{pid},0\n", "upload.csv", store_ids=True) == 1
    assert keys_of(store, ds)["k6"] == (0, "import")
    with pytest.raises(ConcordError, match="upload.csv line 2: no pair 'k6'"):
        metadata.import_csv_text(store, ds, "pair_id,label\nk6,0\n", "upload.csv", store_ids=True)


def test_import_csv_rows_with_line_breaks_in_other_columns(store, ds):
    """A spreadsheet's labels file may carry a caption column: a quoted value over two lines or holding U+2028
    or a form feed is one value, and a refusal names the line its record starts on."""
    text = 'pair_id,label,caption\nk0,1,"two\nlines"\nk2,0,one\u2028line\fhere\nk4,1,x\n'
    assert metadata.import_csv_text(store, ds, text, "sheet.csv") == 3
    assert keys_of(store, ds) == {"k0": (1, "import"), "k2": (0, "import"), "k4": (1, "import")}
    with pytest.raises(ConcordError, match=r"^sheet.csv line 4: pair 'k0' is already listed on line 2; nothing"):
        metadata.import_csv_text(store, ds, 'pair_id,label,caption\nk0,1,"a\nb"\nk0,0,c\n', "sheet.csv")
    assert len(store.meta_frame(ds)) == 3


def test_add_flip_remove(store, ds):
    pids = metadata.resolve_pairs(store, ds, ["k0", "k1", "k2"])
    first = metadata.add_pairs(store, ds, pids[:2], 1)
    metadata.add_pairs(store, ds, pids[2:], 0)
    assert keys_of(store, ds) == {"k0": (1, "manual"), "k1": (1, "manual"), "k2": (0, "manual")}
    metadata.flip_entries(store, ds, [first[1]])
    assert keys_of(store, ds)["k1"] == (0, "manual")
    with pytest.raises(NotFound, match=f"no active meta-data entry {first[1]}"):
        metadata.flip_entries(store, ds, [first[1]])  # replaced by the flip
    assert metadata.remove_entries(store, ds, [first[0]]) == 1
    assert keys_of(store, ds) == {"k1": (0, "manual"), "k2": (0, "manual")}
    with pytest.raises(NotFound, match="no active meta-data entry"):
        metadata.remove_entries(store, ds, [first[0]])
    with pytest.raises(NotFound, match="no pair 9999"):
        metadata.add_pairs(store, ds, [9999], 1)
    with pytest.raises(ConcordError, match="no pair 'nope'"):
        metadata.resolve_pairs(store, ds, ["nope"])


def test_search_pairs(store, ds):
    found = metadata.search_pairs(store, ds, "caption 1")
    assert list(found["key"]) == ["k1"] + [f"k{k}" for k in range(10, 20)]
    assert list(metadata.search_pairs(store, ds, "CAPTION 1", split="val", limit=3)["key"]) == ["k1", "k11", "k13"]
    assert list(metadata.search_pairs(store, ds, "k7")["key"]) == ["k7"]  # a key matches exactly
    assert metadata.search_pairs(store, ds, "caption 1' OR 1=1 --").empty  # a parameter, not SQL
    assert metadata.search_pairs(store, ds, "%").empty  # no wildcards
    metadata.add_pairs(store, ds, metadata.resolve_pairs(store, ds, ["k1"]), 0)
    row = metadata.search_pairs(store, ds, "Caption 1", limit=1).iloc[0]
    assert row["meta_label"] == 0 and row["entry_id"] == store.meta_frame(ds)["entry_id"].iloc[0]


def test_summary_counts_and_warnings(store, ds):
    empty = metadata.meta_summary(store, ds)
    assert (empty["positives"], empty["negatives"], empty["balance"]) == (0, 0, None)
    assert [w.split(":")[0] for w in empty["warnings"]] == ["No positives"]
    metadata.seed_from_split(store, ds, "val", fraction=0.1)  # 2 positives
    metadata.add_pairs(store, ds, metadata.resolve_pairs(store, ds, ["k0"]), 1)
    metadata.add_pairs(store, ds, metadata.resolve_pairs(store, ds, [f"k{k}" for k in (2, 4, 6, 8)]), 0)
    pairs = store.pairs_frame(ds).set_index("key")["pair_id"]
    store.decide(ds, [int(pairs["k10"])], "reject", "ann")
    s = metadata.meta_summary(store, ds)
    assert (s["positives"], s["negatives"], s["balance"]) == (3, 5, 3 / 8)
    assert s["by_source"] == {"seed": {"positives": 2, "negatives": 0}, "decision": {"positives": 0, "negatives": 1},
                              "import": {"positives": 0, "negatives": 0},
                              "manual": {"positives": 1, "negatives": 4}}
    assert s["needed_positives"] == 50 and s["train_pairs"] == 20
    assert [w.split(":")[0] for w in s["warnings"]] == ["Too small"]
    assert "3 positives, fewer than 50 (at least 50, and 1% of the 20 training pairs)" in s["warnings"][0]
    strict = metadata.meta_summary(store, ds, MetaThresholds(min_positives=2, min_fraction=0.2, max_negative_ratio=1.5))
    assert strict["needed_positives"] == 4  # 20% of 20 training pairs beats the minimum of 2
    assert [w.split(":")[0] for w in strict["warnings"]] == ["Too small", "Unbalanced"]
    assert "5 negatives for 3 positives" in strict["warnings"][1]
    ok = metadata.meta_summary(store, ds, MetaThresholds(min_positives=3, min_fraction=0.0, max_negative_ratio=2.0))
    assert ok["warnings"] == []


def test_agreement_history(store, tmp_path):
    """Agreement with the current decisions and AUROC on the pairs outside the meta-data, newest run first."""
    ds = make_meta_dataset(store, tmp_path / "src", noisy=("k0", "k2", "k4", "k6"))
    assert metadata.agreement_history(store, ds) == []
    pairs = store.pairs_frame(ds)
    noisy = pairs["key"].isin(["k0", "k2", "k4", "k6"]).to_numpy()
    rough = np.where(noisy | pairs["key"].isin(["k8", "k10"]).to_numpy(), 0.2, 0.8)  # flags clean k8 and k10
    rough[pairs["key"].to_numpy() == "k8"] = 0.1
    for clean_prob in (rough, np.where(noisy, 0.2, 0.8)):
        run = store.create_run(ds, "b1", "concord-tiny")
        store.write_scores(run, pairs["pair_id"], clean_prob, clean_prob, clean_prob)
        store.update_run(run, state="finished")
    store.update_run(store.create_run(ds, "b1", "concord-tiny"), state="failed")
    key = pairs.set_index("key")["pair_id"]
    store.decide(ds, [int(key["k0"])], "reject", "ann")
    store.decide(ds, [int(key["k8"])], "keep", "ann")  # rough run flags it: a disagreement
    got = metadata.agreement_history(store, ds)
    assert [(g["run_id"], g["agree"], g["total"], g["rate"]) for g in got] == [(2, 2, 2, 1.0), (1, 1, 2, 0.5)]
    # other training pairs: noisy k2, k4, k6 against 15 clean ones, one of which (k10) ties with them
    assert got[0]["auroc"] == 1.0 and got[1]["auroc"] == pytest.approx((45 - 3 + 0.5 * 3) / 45)
    assert len(metadata.agreement_history(store, ds, runs=1)) == 1


def test_start_retrain_copies_the_latest_run(store, ds):
    from dataclasses import asdict

    from core.methods import make_config
    first = metadata.start_retrain(store, "ds", "b1")  # no run yet: the training defaults
    run = store.run(first)
    assert (run.method, run.model, run.seed, run.threshold) == ("b1", "concord-tiny", 0, 0.5)
    assert run.config == asdict(make_config("b1"))
    base = store.create_run(ds, "b0", "open_clip:ViT-B-32:openai", regime="features", device="cpu", seed=3,
                            config=asdict(make_config("b0")), threshold=0.3)
    store.update_run(base, state="finished")
    assert metadata.retrain_base(store, ds).id == base  # the finished run beats the newer queued one
    other = store.run(metadata.start_retrain(store, "ds", "b1"))  # another method: its own defaults
    assert (other.method, other.model, other.regime, other.device, other.seed, other.threshold) == \
        ("b1", "open_clip:ViT-B-32:openai", "features", "cpu", 3, 0.3)
    assert other.config == asdict(make_config("b1"))
    tuned = asdict(make_config("b1", {"epochs": 2, "lr": 0.05}))
    store.update_run(other.id, state="finished", config=tuned)
    same = store.run(metadata.start_retrain(store, "ds"))  # the same method keeps the run's settings
    assert (same.method, same.config, same.seed, same.state) == ("b1", tuned, 3, "queued")
