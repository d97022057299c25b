"""The pixel space (`core.detect.pixels`): block means and principal components by hand, the neighbour terms
of a space whose images and captions come from separate encoders, and a run's look-alike terms over its neighbours."""
from __future__ import annotations

import numpy as np
import pytest

from core.detect.consensus import LOOK_ALIKE_SIGNALS, NEIGHBOUR_SIGNALS, Pool, Space, look_alike_signals
from core.detect.pixels import block_means, pixel_features, principal_components
from core.detect.signals import SignalInputs, index_spaces, run_spaces, signal_matrix, space_groups, Query


def test_block_means_average_each_block_of_the_centred_crop() -> None:
    # one 5×5 grey image, values 0..24 row by row; a 2×2 grid crops the centred 4×4 (rows/cols 0..3) into 2×2 blocks
    img = np.arange(25, dtype=np.uint8).reshape(1, 5, 5, 1)
    assert (block_means(img, grid=2)[0] * 255).tolist() == pytest.approx([3.0, 5.0, 13.0, 15.0])
    # colour is kept per channel: a red left half and a blue right half
    rgb = np.zeros((1, 2, 2, 3), np.uint8)
    rgb[0, :, 0, 0], rgb[0, :, 1, 2] = 255, 255
    assert block_means(rgb, grid=2)[0].tolist() == [1, 0, 0, 0, 0, 1, 1, 0, 0, 0, 0, 1]
    with pytest.raises(ValueError, match="smaller than a 16×16 grid"):
        block_means(np.zeros((1, 8, 8, 3), np.uint8), grid=16)


def test_principal_components_by_hand() -> None:
    # three points on the diagonal: centred (-1, -1), (0, 0), (1, 1); the first component is the diagonal, the
    # projections -√2, 0, √2 (standard deviation √2), whitened -1, 0, 1; the second component carries nothing
    x = np.array([[0.0, 0.0], [1.0, 1.0], [2.0, 2.0]])
    z = principal_components(x, dims=1, whiten=False)
    assert z.shape == (3, 1) and np.abs(z[:, 0]) == pytest.approx([np.sqrt(2), 0.0, np.sqrt(2)], abs=1e-6)
    assert z[0, 0] == pytest.approx(-z[2, 0])
    assert np.abs(principal_components(x, dims=64)[:, 0]) == pytest.approx([1.0, 0.0, 1.0], abs=1e-6)
    assert principal_components(x, dims=64).shape == (3, 1)
    # two components of unequal spread: whitened, both count alike (8 rows: whitening keeps one component per 4)
    y = np.repeat([[-3.0, 0.0], [3.0, 0.0], [0.0, -1.0], [0.0, 1.0]], 2, axis=0)
    assert np.abs(principal_components(y, whiten=False)).max(axis=0) == pytest.approx([3.0, 1.0], abs=1e-6)
    w = principal_components(y)
    assert w.std(axis=0, ddof=1) == pytest.approx([1.0, 1.0], abs=1e-6)
    assert principal_components(y[::2]).shape == (4, 1) and principal_components(y[::2], whiten=False).shape == (4, 2)
    # unit rows once normalised (a zero row stays zero)
    f = pixel_features(x, dims=64)
    assert np.linalg.norm(f, axis=1) == pytest.approx([1.0, 0.0, 1.0], abs=1e-6)
    # fitted on some rows only (a run's: the images outside the held-out split): a row left out does not shape the
    # components, it is only projected on them
    out = np.vstack([x, [[-4.0, 6.0]]])      # centred on the fitted rows' mean (1, 1): (-5, 5), across the line
    z = principal_components(out, dims=1, whiten=False, fit_rows=np.array([0, 1, 2]))
    assert np.abs(z[:, 0]) == pytest.approx([np.sqrt(2), 0.0, np.sqrt(2), 0.0], abs=1e-6)
    # fitted on a sample of the rows: the same line (the sample's mean may shift the origin, not the distances)
    big = np.repeat(x, 10, axis=0)
    z = principal_components(big, dims=1, sample=6, seed=1, whiten=False)[::10, 0]
    assert np.abs(np.diff(z)) == pytest.approx([np.sqrt(2), np.sqrt(2)], abs=1e-5)


def test_a_small_set_s_whitened_pixels_keep_their_neighbours() -> None:
    """n images whitened on all their n − 1 components sit at the corners of a regular simplex: every two at cosine
    −1/(n − 1), whatever their pixels (four corners of a tetrahedron here: −1/3). With one component per four
    images, the look-alikes stay the nearest."""
    x = np.array([[0.0, 0.0, 0.0], [1.0, 0.0, 0.0], [0.0, 2.0, 0.0], [0.0, 0.0, 3.0]])
    centred = x - x.mean(axis=0)
    _, s, vt = np.linalg.svd(centred, full_matrices=False)
    full = centred @ (vt.T / (s / np.sqrt(3)))        # whitened on all three components: the collapse, by hand
    full /= np.linalg.norm(full, axis=1, keepdims=True)
    assert (full @ full.T)[~np.eye(4, dtype=bool)] == pytest.approx(np.full(12, -1 / 3), abs=1e-9)
    assert pixel_features(x, dims=3).shape == (4, 1)  # four images: one component
    # 48 images in 8 looks (each a random pattern plus its own noise, and a shared brightness): with the whitening
    # capped, each image's nearest other image has its look
    rng = np.random.default_rng(0)
    look = rng.integers(0, 8, 48)
    images = rng.normal(size=(8, 768))[look] + 2.0 * rng.normal(size=(48, 768)) + 5.0 * rng.normal(size=(48, 1))
    f = pixel_features(images)
    assert f.shape == (48, 12)
    cos = f @ f.T
    np.fill_diagonal(cos, -np.inf)
    assert (look[cos.argmax(axis=1)] == look).mean() >= 0.95


def test_a_space_of_two_encoders_gives_the_neighbour_terms_only() -> None:
    # pixels (2-d): images 0 and 1 look alike, image 2 does not. Captions (3-d, another encoder): image 1's caption
    # is x; image 0 carries x' (cos 0.8 to x) and y (⊥ x); image 2 carries z
    pixels = np.array([[1.0, 0.0], [0.96, 0.28], [0.0, 1.0]])
    captions = np.array([[1.0, 0.0, 0.0], [0.8, 0.6, 0.0], [0.0, 0.0, 1.0], [0.0, 1.0, 0.0]])
    pool = Pool.from_pairs(np.array([1, 0, 0, 2]), np.array([0, 1, 2, 3]), 3, 4)
    space = Space.build(pixels, captions, pool, joint=False)
    s = space.signals(np.array([0, 0]), np.array([1, 2]), k=1, tau=0.0)
    assert tuple(s) == NEIGHBOUR_SIGNALS == space.names
    # image 0's look-alike is image 1, whose caption is x: cos(x', x) = 0.8, cos(y, x) = 0: y's pair scores lower
    assert s["image_neighbours"] == pytest.approx([0.8, 0.0])
    # x''s nearest other caption (not image 0's) is x, of image 1: cos(pixels 0, pixels 1) = 0.96
    assert s["caption_neighbours"][0] == pytest.approx(0.96)
    assert np.isnan(s["caption_images"]).all()                # no caption has another image


def test_a_run_s_look_alike_terms_score_the_pair_s_neighbours_not_the_pair() -> None:
    # pixels: images 0 and 1 look alike (cos 0.96), image 2 does not. Text features: image 1's caption is x, image
    # 0 carries x' (cos 0.8 to x) and y (⊥ x), image 2 carries z (cos 0.6 to y). The run (2-d) scores both of
    # image 0's pairs matched, y included (a memorised mismatch): cos(img0, x') = 1.0, cos(img0, y) = 0.96
    pixels = np.array([[1.0, 0.0], [0.96, 0.28], [0.0, 1.0]])
    text = np.array([[1.0, 0.0, 0.0], [0.8, 0.6, 0.0], [0.0, 1.0, 0.0], [0.0, 0.6, 0.8]])
    run_img = np.array([[0.6, 0.8], [0.0, 1.0], [1.0, 0.0]])
    run_cap = np.array([[0.0, 1.0], [0.6, 0.8], [0.8, 0.6], [1.0, 0.0]])
    pool = Pool.from_pairs(np.array([1, 0, 0, 2]), np.array([0, 1, 2, 3]), 3, 4)
    same, run = Space.build(pixels, text, pool, joint=False), Space.build(run_img, run_cap, pool)
    q_img, q_cap = np.array([0, 0]), np.array([1, 2])
    assert run.signals(q_img, q_cap)["similarity"] == pytest.approx([1.0, 0.96])
    s = look_alike_signals(run, same.neighbours(q_img, q_cap, k=1), q_img, q_cap, tau=0.0)
    assert tuple(s) == LOOK_ALIKE_SIGNALS
    # image 0's look-alike is image 1: the run's cos(x', img1) = 0.8, cos(y, img1) = 0.6
    assert s["look_alikes"] == pytest.approx([0.8, 0.6])
    # the captions that read most like each (image 0's own left out): x for x' (0.8 > 0.36), z for y (0.6 > 0);
    # the run's cos(img0, x) = 0.8, cos(img0, z) = 0.6
    assert s["read_alikes"] == pytest.approx([0.8, 0.6])
    # k = 2: both other images, weighted by exp(-tau (1 - cos)) in the pixel space: 0.96 -> e^-0.2, 0 -> e^-5
    two = look_alike_signals(run, same.neighbours(q_img, q_cap, k=2), q_img, q_cap, tau=5.0)["look_alikes"]
    w = np.exp([-0.2, -5.0])
    assert two == pytest.approx([(0.8 * w[0] + 0.6 * w[1]) / w.sum(), (0.6 * w[0] + 0.8 * w[1]) / w.sum()])
    # the pixel space's own terms read the same searches, given or not
    given = same.signals(q_img, q_cap, k=1, neighbours=same.neighbours(q_img, q_cap, k=1))
    for name, values in same.signals(q_img, q_cap, k=1).items():
        np.testing.assert_array_equal(given[name], values)


def test_the_pixel_space_is_shared_by_every_network_s_classifier() -> None:
    rng = np.random.default_rng(0)
    n_img, n_cap = 12, 24
    img_ids, cap_ids = np.arange(n_img), np.arange(n_cap)
    run = (rng.normal(size=(n_img, 4)), rng.normal(size=(n_cap, 4)))
    inputs = SignalInputs(img_ids, cap_ids, {"b1#1": run, "mscn#2": run}, rng.normal(size=(n_cap, 6)),
                          rng.normal(size=(n_img, 3)))
    pool = Pool.from_pairs(cap_ids // 2, cap_ids, n_img, n_cap)
    assert list(index_spaces(inputs, pool)) == ["b1#1", "mscn#2", "pixels"]
    names, (x,) = signal_matrix(inputs, pool, [Query(cap_ids // 2, cap_ids)], k=2, tau=5.0)
    assert [n for n in names if n.startswith("pixels.")] == [f"pixels.{s}" for s in NEIGHBOUR_SIGNALS]
    assert run_spaces(names) == ["b1#1", "mscn#2"]
    shared = [j for j, n in enumerate(names) if n.split(".")[0] in ("pixels", "text")]
    assert len(shared) == 6 and all(set(shared) <= set(g) for g in space_groups(names))   # 3 pixel + 3 text terms
    # each network's look-alike terms are its own (in its group only)
    for space, group in zip(run_spaces(names), space_groups(names)):
        look = [names.index(f"{space}.{s}") for s in LOOK_ALIKE_SIGNALS]
        assert set(look) <= set(group) and not any(set(look) & set(g) for g in space_groups(names) if g != group)
    without, (x_without,) = signal_matrix(inputs, pool, [Query(cap_ids // 2, cap_ids)], k=2, tau=5.0,
                                          look_alikes=False)
    assert without == [n for n in names if n.split(".")[1] not in LOOK_ALIKE_SIGNALS]
    assert np.array_equal(x_without, x[:, [names.index(n) for n in without]], equal_nan=True)
    # without the text tower's features there are no captions for the pixel space
    no_text = SignalInputs(img_ids, cap_ids, {"b1#1": run}, None, rng.normal(size=(n_img, 3)))
    assert list(index_spaces(no_text, pool)) == ["b1#1"]
    # images that are all alike have no principal component: no pixel space either
    alike = principal_components(np.ones((n_img, 5)))
    assert alike.shape == (n_img, 0)
    assert list(index_spaces(SignalInputs(img_ids, cap_ids, {"b1#1": run}, inputs.text, alike), pool)) == ["b1#1"]
