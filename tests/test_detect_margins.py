"""The margins over a pair's siblings: how much more a caption agrees with its own image's other captions than with
any other image's (`core.detect.consensus.CaptionSets`, `sibling_margin`), and how much better the image matches it
than its other captions (`similarity_margin`), by hand, in a space, and in a matched context."""
from __future__ import annotations

import numpy as np
import pytest

from core.detect.consensus import (MARGIN_SIGNALS, CaptionSets, Pool, Space, sibling_terms, similarity_margin,
                                   text_signals)
from core.detect.context import Context
from core.detect.signals import in_context

# captions: 0, 1 of image 0; 2, 3, 4 of image 1; 6 of image 3 (all train); 5, 7 of image 2 (val)
CAPTIONS = np.array([(1, 0, 0), (1, 0, 0), (0, 1, 0), (0, 1, 0), (0.6, 0.8, 0), (0, 0, 1), (0, 0, 1), (0, 0, 1)],
                    np.float32)
IMAGE_OF = np.array([0, 0, 1, 1, 1, 2, 3, 2])
POOL = Pool.from_pairs(IMAGE_OF, np.arange(8), 4, 8)
TRAIN = Pool.from_pairs(IMAGE_OF[IMAGE_OF != 2], np.flatnonzero(IMAGE_OF != 2), 4, 8)
# queries (image, caption): pool pairs, two captions moved to image 2, and image 3's only caption
Q_IMAGE = np.array([0, 1, 2, 2, 3, 2])
Q_CAPTION = np.array([0, 4, 1, 5, 6, 6])


def test_other_agreement_and_the_margin_by_hand() -> None:
    other = CaptionSets.build(CAPTIONS, TRAIN).other_agreement(Q_IMAGE, Q_CAPTION)
    # c0 against image 1's captions (0 + 0 + 0.6) / 3 and image 3's (0): 0.2. c4 against image 0's: (0.6 + 0.6) / 2.
    # c1 moved to image 2: image 0's captions without c1 itself, {c0}: 1. c5 (val image 2): image 3's c6, cos 1
    # (image 2 is not searched). c6 on its own image 3: images 0 and 1, 0. c6 moved to image 2: image 3 without c6
    # has no caption left, so it is no candidate: 0
    assert other == pytest.approx([0.2, 0.6, 1.0, 1.0, 0.0, 0.0], abs=1e-6)
    s = text_signals(CAPTIONS, POOL, Q_IMAGE, Q_CAPTION, CaptionSets.build(CAPTIONS, TRAIN))
    # siblings: c0 with c1 1; c4 with c2, c3 0.8; c1 among image 2's {c5, c7} 0; c5 with c7 1; image 3 none; c6
    # among {c5, c7} 1. The margin is the difference; NaN where the image has no other caption
    assert s["siblings"] == pytest.approx([1.0, 0.8, 0.0, 1.0, np.nan, 1.0], abs=1e-6, nan_ok=True)
    assert s["sibling_margin"] == pytest.approx([0.8, 0.2, -1.0, 0.0, np.nan, 1.0], abs=1e-6, nan_ok=True)
    # over the whole pool, val image 2 (c5, c7) is one of c6's other images
    assert CaptionSets.build(CAPTIONS, POOL).other_agreement(Q_IMAGE[4:5], Q_CAPTION[4:5]) == pytest.approx([1.0])
    assert set(text_signals(CAPTIONS, POOL, Q_IMAGE, Q_CAPTION)) == {"siblings", "sibling_rank"}
    # no image to compare with: −inf, and so no margin
    nothing = CaptionSets.build(CAPTIONS, Pool.from_pairs(np.zeros(0, int), np.zeros(0, int), 4, 8))
    assert np.isneginf(nothing.other_agreement(Q_IMAGE, Q_CAPTION)).all()
    assert np.isnan(text_signals(CAPTIONS, POOL, Q_IMAGE, Q_CAPTION, nothing)["sibling_margin"]).all()


def test_a_joint_space_gives_the_margin_over_the_images_it_searches() -> None:
    images = np.eye(4, 3, dtype=np.float32) + 0.1
    space = Space.build(images, CAPTIONS, POOL, searched=TRAIN)
    s = space.signals(Q_IMAGE, Q_CAPTION, k=1)
    assert "sibling_margin" in space.names
    other = CaptionSets.build(CAPTIONS, TRAIN).other_agreement(Q_IMAGE, Q_CAPTION)
    np.testing.assert_allclose(s["sibling_margin"], s["siblings"] - other, atol=1e-6)
    np.testing.assert_allclose(s["similarity_margin"], similarity_margin(space.img, space.cap, POOL, Q_IMAGE,
                                                                         Q_CAPTION), atol=1e-6)
    plain = Space.build(images, CAPTIONS, POOL, searched=TRAIN, margins=False)
    assert not set(MARGIN_SIGNALS) & set(plain.names)
    assert set(plain.signals(Q_IMAGE, Q_CAPTION, k=1)) == set(plain.names)
    assert not set(MARGIN_SIGNALS) & set(Space.build(images, CAPTIONS, POOL, joint=False).names)


def test_similarity_margin_by_hand() -> None:
    images = np.array([(1, 0, 0), (0, 1, 0), (0, 0, 1), (0, 0, 1)], np.float32)
    q_image, q_caption = np.array([1, 1, 0, 3]), np.array([4, 2, 4, 6])
    # image 1 with c4: cos 0.8 against its other captions c2, c3 (1, 1): -0.2; with c2: 1 against c3, c4 (1, 0.8):
    # +0.1; c4 moved to image 0: 0.6 against c0, c1 (1, 1): -0.4; image 3's only caption: none to compare with
    out = similarity_margin(images, CAPTIONS, POOL, q_image, q_caption)
    assert out == pytest.approx([-0.2, 0.1, -0.4, np.nan], abs=1e-6, nan_ok=True)


def test_in_a_swapped_context_the_margin_moves_with_the_siblings() -> None:
    # image 2's c7 swapped for c4: c5's only sibling is now c4 (cos 0); its other images are the train split's,
    # which no context swaps, so its margin falls by as much as its siblings (1 - 1 = 0 to 0 - 1 = -1)
    swapped = Pool.from_pairs(np.r_[IMAGE_OF[:7], 2], np.r_[np.arange(7), 4], 4, 8)
    context = Context(swapped, 0.5, 0.0, False, np.array([2 * 8 + 7]), np.array([4]))
    names = ["text.siblings", "text.sibling_rank", "text.sibling_margin"]
    q_image, q_caption = np.array([2]), np.array([5])
    s = text_signals(CAPTIONS, POOL, q_image, q_caption, CaptionSets.build(CAPTIONS, TRAIN))
    x = np.column_stack([s[n.partition(".")[2]] for n in names])
    out = in_context(names, x, {"text": (CAPTIONS, context, None)}, q_image, q_caption)
    assert x[0] == pytest.approx([1.0, 0.5, 0.0], abs=1e-6)
    assert out[0, [0, 2]] == pytest.approx([0.0, -1.0], abs=1e-6)
    assert out[0, 0] == pytest.approx(sibling_terms(CAPTIONS, swapped, q_image, q_caption)[0][0], abs=1e-6)
    # image 2 = (0, 0, 1) matches c5 and c7 alike (margin 0); in the context its other caption is c4 (cos 0): 1
    image = np.array([(0, 0, 0), (0, 0, 0), (0, 0, 1), (0, 0, 0)], np.float32)
    names = ["b1#1.siblings", "b1#1.sibling_rank", "b1#1.similarity_margin"]
    x = np.array([[1.0, 0.5, float(similarity_margin(image, CAPTIONS, POOL, q_image, q_caption)[0])]])
    out = in_context(names, x, {"b1#1": (CAPTIONS, context, image)}, q_image, q_caption)
    assert x[0, 2] == pytest.approx(0.0) and out[0, 2] == pytest.approx(1.0)
