"""Run artifacts (embeddings) and thumbnails: round trips through the cache, refusals."""
from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from core import artifacts, thumbnails
from core.errors import ConcordError, NotFound


@pytest.fixture(autouse=True)
def own_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CONCORD_CACHE", str(tmp_path / "cache"))


def test_embeddings_round_trip_and_lookup_by_id(store) -> None:
    run = store.run(store.create_run(1, "b1", "concord-tiny"))
    emb = artifacts.RunEmbeddings(np.array([7, 3, 5]), np.eye(3, dtype=np.float32),
                                  np.array([10, 11]), np.array([[1, 0], [0, 1]], np.float32))
    artifacts.save_embeddings(run, emb)
    back = artifacts.load_embeddings(run)
    assert np.array_equal(back.image_ids, [7, 3, 5]) and np.array_equal(back.caption_emb, emb.caption_emb)
    assert np.array_equal(back.image_rows([5, 7]), [[0, 0, 1], [1, 0, 0]])
    with pytest.raises(KeyError, match="image id 4"):
        back.image_rows([3, 4])
    assert list(artifacts.run_dir(run).iterdir()) == [artifacts.run_dir(run) / "embeddings.npz"]


def test_missing_embeddings_say_what_to_do(store) -> None:
    run = store.run(store.create_run(1, "b1", "concord-tiny"))
    with pytest.raises(NotFound, match=f"run {run.id} has no embeddings.*run it again"):
        artifacts.load_embeddings(run)


def test_runs_of_two_databases_sharing_one_cache_keep_their_own_artifacts(tmp_path: Path) -> None:
    """Run ids restart in every database; the cache folder must still tell the runs apart."""
    from core.store import Store
    runs = []
    for name in ("a", "b"):
        with Store.open(tmp_path / f"{name}.duckdb") as s:
            runs.append(s.run(s.create_run(1, "b1", "concord-tiny")))
    assert runs[0].id == runs[1].id == 1
    assert artifacts.run_dir(runs[0]) != artifacts.run_dir(runs[1])
    artifacts.save_embeddings(runs[0], artifacts.RunEmbeddings(np.array([1]), np.ones((1, 2), np.float32),
                                                               np.array([2]), np.ones((1, 2), np.float32)))
    assert (not artifacts.has_embeddings(runs[1])
            and artifacts.checkpoint_path(runs[0]) != artifacts.checkpoint_path(runs[1]))


def test_thumbnail_is_cached_fitted_and_upscaled_sharply(tmp_path: Path) -> None:
    root = tmp_path / "ds"
    root.mkdir()
    Image.new("RGB", (40, 20), (200, 10, 10)).save(root / "a.png")
    small = Image.open(io.BytesIO(thumbnails.thumbnail(root, "a.png", "h1", size=16)))
    assert small.size == (16, 8)
    big = Image.open(io.BytesIO(thumbnails.thumbnail(root, "a.png", "h1", size=128, upscale=True)))
    assert big.size == (120, 60) and big.getpixel((0, 0)) == (200, 10, 10)
    uri = thumbnails.image_uri(str(root), "a.png", "h1", 128, upscale=True)      # the same bytes as a data: URI
    assert uri == thumbnails.png_data_uri(thumbnails.thumbnail(root, "a.png", "h1", size=128, upscale=True))
    (root / "a.png").unlink()  # served from the cache from now on
    assert Image.open(io.BytesIO(thumbnails.thumbnail(root, "a.png", "h1", size=16))).size == (16, 8)


def test_thumbnail_refuses_paths_outside_the_root(tmp_path: Path) -> None:
    (tmp_path / "ds").mkdir()
    Image.new("RGB", (4, 4)).save(tmp_path / "secret.png")
    with pytest.raises(ConcordError, match="escapes the dataset root"):
        thumbnails.thumbnail(tmp_path / "ds", "../secret.png", "h2")
