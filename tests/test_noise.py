"""Noise injection (methods.md §4): exact counts, the rules every wrong caption obeys, determinism,
near misses from hand-made features, impossible cases refused, noise copies of stored datasets."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from core.errors import ConcordError
from core.noise import (clean_records, decl_noise, default_encoder, hard_noise, inject_noise, inject_noise_copy,
                        ncr_noise)


def records(images: int, per_image: int = 5, splits: tuple[str, ...] = ("train",)) -> pd.DataFrame:
    """`images` images with `per_image` distinct captions each; splits assigned round-robin by image."""
    rows = [{"image_path": f"i{i}.png", "image_hash": f"h{i}", "width": 8, "height": 8, "nbytes": 1,
             "caption": f"caption {c} of image {i}", "split": splits[i % len(splits)], "key": f"{i}-{c}"}
            for i in range(images) for c in range(per_image)]
    return pd.DataFrame(rows)


def assert_rules(before: pd.DataFrame, after: pd.DataFrame) -> None:
    """Every noisy pair's caption is another image's, none of its own image's (checked against the
    recorded originals), no image receives a text twice, clean pairs are untouched, multiset kept."""
    own = before.groupby("image_hash")["caption"].apply(set)
    owner = before.groupby("caption")["image_hash"].apply(set)
    noisy = after[after["is_noisy"]]
    clean = after[~after["is_noisy"]]
    assert (clean["caption"] == before.loc[clean.index, "caption"]).all()
    assert clean["original_caption"].isna().all()
    assert (noisy["original_caption"] == before.loc[noisy.index, "caption"]).all()
    for row in noisy.itertuples():
        assert row.caption not in own[row.image_hash]
        assert owner[row.caption] - {row.image_hash}
    assert not after.duplicated(["image_hash", "caption"]).any()
    assert sorted(after["caption"]) == sorted(before["caption"])


def test_ncr_acceptance_10000_train_pairs():
    before = records(2000)
    after = inject_noise(before, 0.4, "ncr", seed=7)
    assert int(after["is_noisy"].sum()) == 4000
    assert_rules(before, after)
    again = inject_noise(before, 0.4, "ncr", seed=7)
    pd.testing.assert_frame_equal(after, again)
    other = inject_noise(before, 0.4, "ncr", seed=8)
    assert int(other["is_noisy"].sum()) == 4000
    assert not other["caption"].equals(after["caption"])


def test_only_train_is_touched():
    before = records(30, splits=("train", "val", "test"))
    after = inject_noise(before, 0.5, "ncr", seed=0)
    assert int(after["is_noisy"].sum()) == 25  # ⌊0.5 · 50 train pairs⌋
    assert not after.loc[after["split"] != "train", "is_noisy"].any()
    assert_rules(before, after)
    with pytest.raises(ConcordError, match="'train' split, and there is none"):
        inject_noise(records(4, splits=("val",)), 0.5, "ncr")


def test_decl_permutes_all_captions_of_chosen_images():
    before = records(20, per_image=3)
    after = inject_noise(before, 0.3, "decl", seed=1)
    per_image = after.groupby("image_hash")["is_noisy"].agg(["all", "any"])
    assert (per_image["all"] == per_image["any"]).all()  # an image is noisy in full or not at all
    assert int(per_image["all"].sum()) == 6
    assert int(after["is_noisy"].sum()) == 18
    assert_rules(before, after)


def test_a_skewed_dataset_still_gets_exactly_the_count():
    # image 0 holds 6 of 10 pairs: a choice with all of them cannot be deranged, so pairs are traded
    image = np.array([0, 0, 0, 0, 0, 0, 1, 2, 3, 4])
    text = np.arange(10)
    for seed in range(30):
        result = ncr_noise(image, text, 0.8, seed)
        assert result.count == 8
        assert sorted(result.source.tolist()) == list(range(10))
        noisy = np.flatnonzero(result.noisy)
        assert (image[result.source[noisy]] != image[noisy]).all()


def test_impossible_noise_is_refused_not_shrunk():
    with pytest.raises(ConcordError, match="cannot give 4 pairs"):
        ncr_noise(np.array([0, 0, 0, 1]), np.arange(4), 1.0, seed=0)
    with pytest.raises(ConcordError, match="cannot give all pairs of 1 images"):
        decl_noise(np.array([0, 0, 1]), np.arange(3), 0.5, seed=0)


def test_texts_shared_between_images_are_never_received_twice():
    # 12 images of 3 classes, every image holding the 4 captions of its class (like fashion-mnist)
    image = np.repeat(np.arange(12), 4)
    text = np.array([4 * (i % 3) + c for i in range(12) for c in range(4)])
    for seed in range(10):
        result = ncr_noise(image, text, 0.5, seed)
        assert result.count == 24
        noisy = np.flatnonzero(result.noisy)
        received = text[result.source[noisy]]
        assert all(r // 4 != i % 3 for r, i in zip(received, image[noisy]))  # another class's text
        assert len(set(zip(image[noisy].tolist(), received.tolist()))) == len(noisy)


def test_hard_noise_takes_the_nearest_caption_of_another_image():
    # four images, one caption each; captions 0/1 are near each other, and 2/3: k=1 forces two swaps
    angles = np.array([0.0, 0.1, 1.5, 1.6])
    features = np.stack([np.cos(angles), np.sin(angles)], axis=1)
    result = hard_noise(np.arange(4), np.arange(4), features, 1.0, seed=3, k=1)
    assert result.source.tolist() == [1, 0, 3, 2]
    assert result.noisy.all()


def test_hard_noise_exact_count_within_the_k_nearest():
    rng = np.random.default_rng(0)
    image = np.repeat(np.arange(400), 5)
    text = np.arange(2000)
    features = rng.normal(size=(2000, 16)).astype(np.float32)
    features /= np.linalg.norm(features, axis=1, keepdims=True)
    k = 10
    result = hard_noise(image, text, features, 0.4, seed=0, k=k)
    assert result.count == 800
    pool = np.flatnonzero(result.noisy)
    assert sorted(result.source[pool].tolist()) == pool.tolist()  # a permutation of the chosen slots
    for p in pool:
        others = pool[image[pool] != image[p]]
        sims = features[text[others]] @ features[text[p]]
        kth = np.sort(sims)[-k]
        assert features[text[result.source[p]]] @ features[text[p]] >= kth - 1e-6
        assert image[result.source[p]] != image[p]
    again = hard_noise(image, text, features, 0.4, seed=0, k=k)
    assert np.array_equal(again.source, result.source)


def test_hard_noise_through_records_with_an_encoder():
    before = records(40, per_image=2)
    def encoder(texts):  # captions of image i and i+1 are near misses of each other
        idx = np.array([int(t.rsplit(" ", 1)[1]) for t in texts], dtype=np.float64)
        f = np.stack([np.cos(idx / 7), np.sin(idx / 7)], axis=1)
        return f / np.linalg.norm(f, axis=1, keepdims=True)
    after = inject_noise(before, 0.5, "hard", seed=0, k=4, encoder=encoder)
    assert int(after["is_noisy"].sum()) == 40
    assert_rules(before, after)
    for row in after[after["is_noisy"]].itertuples():
        assert abs(int(row.caption.rsplit(" ", 1)[1]) - int(row.image_hash[1:])) <= 4


@pytest.mark.parametrize("kind", ["ncr", "decl", "hard"])
def test_ratio_zero_moves_nothing_and_a_bad_ratio_is_refused_for_every_kind(kind):
    """Ratio 0 needs no caption features (the encoder is never called); outside [0, 1] and NaN are refused
    with the same message for every kind, before anything is encoded."""
    before = records(10)
    def encoder(texts):
        raise AssertionError("no caption needs encoding")
    after = inject_noise(before, 0.0, kind, seed=0, encoder=encoder)
    assert not after["is_noisy"].any() and after["caption"].tolist() == before["caption"].tolist()
    for ratio in (-0.1, 1.5, float("nan")):
        with pytest.raises(ConcordError, match=r"noise ratio must be within \[0, 1\], got"):
            inject_noise(before, ratio, kind, seed=0, encoder=encoder)


def test_hard_noise_refuses_when_no_near_miss_can_be_matched():
    # three images, k=1: captions 0 and 2 both want caption 1, nobody wants caption 2: no permutation works
    features = np.array([[1.0, 0.0], [0.99, 0.14], [0.0, 1.0]])
    features /= np.linalg.norm(features, axis=1, keepdims=True)
    with pytest.raises(ConcordError, match="near-miss captions among the k=1"):
        hard_noise(np.arange(3), np.arange(3), features, 1.0, seed=0, k=1)


def test_clean_records_restores_the_originals():
    before = records(10)
    after = inject_noise(before, 0.4, "ncr", seed=0)
    restored = clean_records(after)
    assert restored["caption"].tolist() == before["caption"].tolist()
    assert not restored["is_noisy"].any()


def test_noise_copy_shares_images_and_restarts_from_the_clean_version(store):
    before = records(30, splits=("train", "train", "val"))
    store.write_dataset("base", "/data/root", "csv", before)
    result = inject_noise_copy(store, "base", "n1", 0.5, "ncr", seed=1)
    assert result["noisy"] == 50 and result["train_pairs"] == 100
    ds = store.dataset("n1")
    assert (ds.root, ds.parent, ds.source_format) == ("/data/root", "base", "csv")
    assert ds.info["noise"] == {"ratio": 0.5, "kind": "ncr", "seed": 1, "k": None, "source": "base", "pairs": 50}
    pairs = store.pairs_frame(ds.id)
    assert int(pairs["is_noisy"].sum()) == 50
    # a copy of the noisy copy undoes n1's noise first: its originals are the clean captions
    inject_noise_copy(store, "n1", "n2", 0.2, "decl", seed=2)
    n2 = store.pairs_frame(store.dataset("n2").id)
    assert int(n2["is_noisy"].sum()) == 20  # ⌊0.2 · 20 train images⌋ = 4 images, 5 pairs each
    clean = set(zip(before["image_hash"], before["caption"]))
    restored = n2.assign(c=np.where(n2["is_noisy"], n2["original_caption"], n2["caption"]))
    assert set(zip(restored["image_hash"], restored["c"])) == clean
    with pytest.raises(ConcordError, match="already exists"):
        inject_noise_copy(store, "base", "n1", 0.5)
    with pytest.raises(ConcordError, match="needs a new name"):
        inject_noise_copy(store, "base", "base", 0.5)


def test_default_encoder_uses_core_features():
    pytest.importorskip("core.features", reason="core.features.encode_texts (branch models) is not merged yet")
    features = default_encoder()(["a red circle", "a blue square"])
    assert features.shape[0] == 2
    assert np.allclose(np.linalg.norm(features, axis=1), 1.0, atol=1e-4)
