"""Projection (core/projection.py) and thresholds (core/thresholds.py): hand-computed PCA and fusion, UMAP
clusters and sampling, the per-run cache and its invalidation, precision/recall at a threshold.

`fabricate_run` builds a finished run the way the engine leaves one (dataset, scores, threshold, embeddings):
the page and browser tests use it too.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from core import artifacts
from core.errors import Cancelled, ConcordError, NotFound
from core.hashing import file_hash
from core.progress import Progress
from core.projection import (ProjectionSettings, cached_projection, fuse, pca_projection, pca_run, project_run,
                             save_projection, umap_projection)
from core.thresholds import detection_at_threshold, flagged_mask

TOPICS = ["dog", "beach", "kitchen", "bicycle"]


@dataclass(frozen=True)
class FabricatedRun:
    dataset_id: int
    run_id: int
    pairs: pd.DataFrame  # pair_id, key, topic, caption_topic, is_noisy, clean_prob, weight, similarity


def fabricate_run(store, root: Path, *, name: str = "ds", images_per_topic: int = 5, captions_per_image: int = 2,
                  dim: int = 16, threshold: float = 0.5, seed: int = 0) -> FabricatedRun:
    """A dataset of 4 topics (8×8 PNGs under `root`) whose every 4th train pair carries another topic's caption
    (`is_noisy`), and a finished run over it: scores (noisy pairs lower, overlapping the clean ones), the
    threshold, and clustered embeddings (each image and caption near its topic's direction)."""
    rng = np.random.default_rng(seed)
    centres = np.eye(len(TOPICS), dim, dtype=np.float32) * 4
    rows, topics, caption_topics = [], [], []
    img_vecs, cap_vecs = {}, {}
    n = 0
    for t, topic in enumerate(TOPICS):
        for i in range(images_per_topic):
            rel = f"img/{topic}{i}.png"
            (root / "img").mkdir(parents=True, exist_ok=True)
            Image.new("RGB", (8, 8), (40 * t, 20 * i, 100)).save(root / rel)
            img_vecs[rel] = centres[t] + rng.normal(0, 0.5, dim)
            for j in range(captions_per_image):
                split = "val" if i == images_per_topic - 1 else "train"
                noisy = split == "train" and n % 4 == 3
                ct = (t + 1 + n % 3) % len(TOPICS) if noisy else t
                clean_text = f"a photo of a {topic}, number {i}.{j}"
                caption = f"a photo of a {TOPICS[ct]} <b>&</b> {t}.{i}.{j}" if noisy else clean_text
                cap_vecs[caption] = centres[ct] + rng.normal(0, 0.5, dim)
                rows.append({"image_path": rel, "image_hash": file_hash(root / rel), "width": 8, "height": 8,
                             "nbytes": (root / rel).stat().st_size, "caption": caption, "split": split,
                             "key": f"k{n:03d}", "is_noisy": noisy,
                             "original_caption": clean_text if noisy else None})
                topics.append(topic)
                caption_topics.append(TOPICS[ct])
                n += 1
    store.write_dataset(name, root, "csv", pd.DataFrame(rows))
    ds_id = store.dataset(name).id
    frame = store.pairs_frame(ds_id)
    frame["topic"] = topics
    frame["caption_topic"] = caption_topics
    noisy = frame["is_noisy"].to_numpy(bool)
    frame["clean_prob"] = np.round(np.where(noisy, rng.uniform(0.05, 0.6, n), rng.uniform(0.3, 0.99, n)), 3)
    frame["weight"] = np.round(np.clip(frame["clean_prob"] + rng.normal(0, 0.05, n), 0, 1), 3)
    unit = lambda v: (v / np.linalg.norm(v)).astype(np.float32)  # noqa: E731
    img_ids = store.images_frame(ds_id).set_index("path")["image_id"]
    cap_ids = store.captions_frame(ds_id).set_index("text")["caption_id"]
    emb = artifacts.RunEmbeddings(
        np.array([img_ids[p] for p in img_vecs]), np.stack([unit(v) for v in img_vecs.values()]),
        np.array([cap_ids[c] for c in cap_vecs]), np.stack([unit(v) for v in cap_vecs.values()]))
    frame["similarity"] = np.round(np.einsum("ij,ij->i", emb.image_rows(frame["image_id"]),
                                             emb.caption_rows(frame["caption_id"])), 4)
    run_id = store.create_run(ds_id, "npc", "concord-tiny", seed=0, threshold=threshold)
    store.write_scores(run_id, frame["pair_id"].to_numpy(), frame["similarity"].to_numpy(),
                       frame["clean_prob"].to_numpy(), frame["weight"].to_numpy())
    store.update_run(run_id, state="finished", metrics={"auroc": 0.9})
    artifacts.save_embeddings(store.run(run_id), emb)
    return FabricatedRun(ds_id, run_id, frame[["pair_id", "key", "topic", "caption_topic", "is_noisy", "split",
                                               "clean_prob", "weight", "similarity"]])


@pytest.fixture(autouse=True)
def own_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CONCORD_CACHE", str(tmp_path / "cache"))


# ------------------------------------------------------------------------------------------ math
def test_fuse_is_the_normalised_sum_and_keeps_zero_sums_zero() -> None:
    img = np.array([[1, 0], [0, 1], [1, 0]], np.float32)
    cap = np.array([[0, 1], [0, 1], [-1, 0]], np.float32)
    assert np.allclose(fuse(img, cap), [[2 ** -0.5, 2 ** -0.5], [0, 1], [0, 0]])


def test_pca_projects_on_the_two_widest_directions_with_fixed_signs() -> None:
    # spread 2 along axis 0, 1 along axis 1, nothing along axis 2; mean (1, 1, 1)
    v = np.array([[-2, 0, 0], [2, 0, 0], [0, -1, 0], [0, 1, 0]], np.float64) + 1
    assert np.allclose(pca_projection(v), [[-2, 0], [2, 0], [0, -1], [0, 1]], atol=1e-6)
    assert np.allclose(pca_projection(-v), [[2, 0], [-2, 0], [0, 1], [0, -1]], atol=1e-6)  # same axes, same signs
    assert pca_projection(np.zeros((0, 3))).shape == (0, 2)
    assert np.allclose(pca_projection(np.ones((1, 3))), [[0, 0]])


def test_pca_on_a_sample_places_every_point() -> None:
    rng = np.random.default_rng(1)
    v = rng.normal(size=(500, 8)) * np.array([5, 3, 1, 1, 1, 1, 1, 1])
    full, sampled = pca_projection(v), pca_projection(v, fit_sample=200)
    assert sampled.shape == (500, 2)
    # the sample finds nearly the same axes: coordinates agree closely
    assert np.corrcoef(full[:, 0], sampled[:, 0])[0, 1] > 0.99


def test_settings_are_validated_and_hashed_stably() -> None:
    assert ProjectionSettings().key == ProjectionSettings().key
    assert ProjectionSettings(mode="two-sets").key != ProjectionSettings().key
    assert len(ProjectionSettings().key) == 12
    with pytest.raises(ConcordError, match="unknown projection mode 'lines'"):
        ProjectionSettings(mode="lines")
    with pytest.raises(ConcordError, match="n_neighbors"):
        ProjectionSettings(n_neighbors=1)


def clusters(n: int, k: int = 3, d: int = 24, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    labels = np.arange(n) % k
    centres = rng.normal(size=(k, d)) * 5
    return (centres[labels] + rng.normal(size=(n, d))).astype(np.float32), labels


def _separated(coords: np.ndarray, labels: np.ndarray) -> bool:
    """Every point is nearer its own cluster's centroid than any other's."""
    cents = np.stack([coords[labels == k].mean(0) for k in np.unique(labels)])
    return bool((np.linalg.norm(coords[:, None] - cents[None], axis=2).argmin(1) == labels).all())


def test_umap_separates_clusters_fits_a_sample_and_places_the_rest() -> None:
    vectors, labels = clusters(300)
    settings = ProjectionSettings(n_neighbors=10, max_fit_points=200)
    progress = Progress()
    coords = umap_projection(vectors, settings, progress)
    assert coords.shape == (300, 2) and np.isfinite(coords).all()
    assert _separated(coords, labels)
    # the last stage placed the 100 points outside the fitted sample
    assert (progress.stage, progress.step, progress.total) == ("umap-transform", 100, 100)
    assert np.array_equal(coords, umap_projection(vectors, settings, Progress()))  # seeded: reproducible
    tiny = vectors[:4]
    assert np.allclose(umap_projection(tiny, settings, Progress()), pca_projection(tiny))


def test_umap_cancelled_before_it_starts() -> None:
    progress = Progress()
    progress.cancel()
    with pytest.raises(Cancelled):
        umap_projection(clusters(50)[0], ProjectionSettings(), progress)


# ------------------------------------------------------------------------------------------ a run's map
def test_project_run_pairs_mode_clusters_topics_and_is_cached(store, tmp_path) -> None:
    fab = fabricate_run(store, tmp_path / "src", images_per_topic=8)
    settings = ProjectionSettings(n_neighbors=8)
    assert cached_projection(store, fab.run_id, settings) is None
    frame = project_run(store, fab.run_id, settings, Progress())
    assert list(frame.columns) == ["pair_id", "x", "y"]
    assert sorted(frame["pair_id"]) == sorted(fab.pairs["pair_id"])
    merged = frame.merge(fab.pairs, on="pair_id")
    clean = merged[~merged["is_noisy"]]
    assert _separated(clean[["x", "y"]].to_numpy(), clean["topic"].map(TOPICS.index).to_numpy())
    cached = cached_projection(store, fab.run_id, settings)
    pd.testing.assert_frame_equal(cached, frame)
    assert (artifacts.run_dir(store.run(fab.run_id)) / f"projection-umap-{settings.key}.npz").exists()
    # other settings are another map
    assert cached_projection(store, fab.run_id, ProjectionSettings(n_neighbors=9)) is None


def test_two_sets_mode_places_each_image_and_caption_once(store, tmp_path) -> None:
    fab = fabricate_run(store, tmp_path / "src", images_per_topic=3, captions_per_image=3)
    frame = pca_run(store, fab.run_id, "two-sets")
    assert list(frame.columns) == ["pair_id", "x", "y", "x2", "y2"]
    merged = frame.merge(store.pairs_frame(fab.dataset_id), on="pair_id")
    # the captions of one image start from one point; each caption is its own point
    assert (merged.groupby("image_id")[["x", "y"]].nunique() == 1).all().all()
    assert merged[["x2", "y2"]].drop_duplicates().shape[0] == merged["caption_id"].nunique()
    # same vectors as a direct PCA of images then captions
    emb = artifacts.load_embeddings(store.run(fab.run_id))
    images = np.unique(merged["image_id"])
    captions = np.unique(merged["caption_id"])
    direct = pca_projection(np.vstack([emb.image_rows(images), emb.caption_rows(captions)]))
    first = merged.sort_values("image_id").drop_duplicates("image_id")
    assert np.allclose(first[["x", "y"]].to_numpy(), direct[:len(images)], atol=1e-5)


def test_pca_run_is_the_pca_of_fused_vectors(store, tmp_path) -> None:
    fab = fabricate_run(store, tmp_path / "src")
    frame = pca_run(store, fab.run_id)
    pairs = store.run_pairs(fab.run_id)
    emb = artifacts.load_embeddings(store.run(fab.run_id))
    expected = pca_projection(fuse(emb.image_rows(pairs["image_id"]), emb.caption_rows(pairs["caption_id"])))
    assert np.array_equal(frame["pair_id"], pairs["pair_id"])
    assert np.allclose(frame[["x", "y"]].to_numpy(), expected, atol=1e-6)


def test_new_embeddings_make_the_cached_map_stale(store, tmp_path) -> None:
    fab = fabricate_run(store, tmp_path / "src")
    settings = ProjectionSettings()
    known = pd.DataFrame({"pair_id": fab.pairs["pair_id"], "x": np.arange(len(fab.pairs), dtype=float), "y": 0.0})
    save_projection(store, fab.run_id, settings, known)
    assert np.array_equal(cached_projection(store, fab.run_id, settings)["x"], known["x"])
    emb = artifacts.load_embeddings(store.run(fab.run_id))
    artifacts.save_embeddings(store.run(fab.run_id), artifacts.RunEmbeddings(emb.image_ids, emb.image_emb[::-1].copy(),
                                                                  emb.caption_ids, emb.caption_emb))
    assert cached_projection(store, fab.run_id, settings) is None


def test_a_run_without_embeddings_or_scores_says_so(store, tmp_path) -> None:
    fab = fabricate_run(store, tmp_path / "src")
    bare = store.create_run(fab.dataset_id, "b0", "concord-tiny")
    with pytest.raises(ConcordError, match=f"run {bare} has no scored pairs"):
        pca_run(store, bare)
    store.write_scores(bare, fab.pairs["pair_id"].to_numpy(), fab.pairs["similarity"].to_numpy(),
                       fab.pairs["clean_prob"].to_numpy(), fab.pairs["weight"].to_numpy())
    with pytest.raises(NotFound, match=f"run {bare} has no embeddings"):
        pca_run(store, bare)
    assert cached_projection(store, bare, ProjectionSettings()) is None


# ------------------------------------------------------------------------------------------ thresholds
def test_detection_at_threshold_by_hand() -> None:
    is_noisy = np.array([True, True, False, False, False, True])
    clean_prob = np.array([0.1, 0.6, 0.2, 0.9, 0.5, np.nan])
    # flagged below 0.5: pairs 0 and 2 (0.5 itself is not below; NaN never flagged)
    assert flagged_mask(clean_prob, 0.5).tolist() == [True, False, True, False, False, False]
    got = detection_at_threshold(is_noisy, clean_prob, 0.5)
    assert got == {"flagged": 2, "precision": 0.5, "recall": 1 / 3, "f1": pytest.approx(0.4)}
    assert detection_at_threshold(is_noisy, clean_prob, 0.0) == {"flagged": 0, "precision": None,
                                                                  "recall": 0.0, "f1": None}
    assert detection_at_threshold(np.zeros(2, bool), np.array([0.1, 0.2]), 0.5) == {
        "flagged": 2, "precision": 0.0, "recall": None, "f1": None}
    assert detection_at_threshold(np.array([False]), np.array([0.1]), 0.5)["precision"] == 0.0
    with pytest.raises(ValueError, match="is_noisy has 1 values but clean_prob 2"):
        detection_at_threshold(np.array([True]), np.array([0.1, 0.2]), 0.5)


def test_points_outside_the_fit_are_placed_at_their_neighbours_weighted_mean() -> None:
    from core.index import VectorIndex
    from core.projection import place_by_neighbours
    fitted = np.array([[1, 0], [0, 1]], np.float32)
    coords = np.array([[0, 0], [10, 0]], np.float32)
    index = VectorIndex.build(fitted, np.arange(2))
    assert np.allclose(place_by_neighbours(index, coords, np.array([[1, 0]], np.float32), 1), [[0, 0]])
    # equally similar to both: the middle
    assert np.allclose(place_by_neighbours(index, coords, np.array([[1, 1]], np.float32), 2), [[5, 0]])
    # cos 0.6 vs 0.8: weights exp(-0.2 / 0.05) : 1
    w = np.exp(-0.2 / 0.05)
    assert np.allclose(place_by_neighbours(index, coords, np.array([[0.6, 0.8]], np.float32), 2),
                       [[10 / (1 + w), 0]], atol=1e-5)


def test_uncentred_components_keep_the_inner_products_in_their_span() -> None:
    from core.projection import principal_components
    v = np.array([[3, 0, 0], [0, 1, 0], [-3, 0, 0], [0, -1, 0]], float) + [0, 0, 5]   # offset along z
    centred = principal_components(v, 2)
    assert np.allclose(centred, [[3, 0], [0, 1], [-3, 0], [0, -1]], atol=1e-6)
    raw = principal_components(v, 3, centre=False)
    assert np.allclose(raw @ raw.T, v @ v.T, atol=1e-5)         # all three components: nothing lost
