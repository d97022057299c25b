"""The consensus signals, the fused classifier and the `concord` method: hand-computed cases, then a run on a tiny
demo (refit from decisions, and no ground truth or test pair ever reaching the scorer)."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import roc_auc_score

from core.detect.consensus import Pool, sibling_terms, space_signals
from core.detect.fusion import Weighing, fit_fused
from core.detect.labels import construct_negatives


def unit(*rows: tuple[float, ...]) -> np.ndarray:
    x = np.array(rows, np.float64)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def test_siblings_agreement_and_rank_by_hand() -> None:
    # image 0 has captions 0, 1, 2: c0 = c1 = (1, 0), c2 = (0, 1); caption 3 = (0, 1) belongs to image 1
    caps = unit((1, 0), (1, 0), (0, 1), (0, 1))
    pool = Pool.from_pairs(np.array([0, 0, 0, 1]), np.array([0, 1, 2, 3]), 2, 4)
    agree, rank = sibling_terms(caps, pool, np.array([0, 0, 0, 0, 1]), np.array([0, 1, 2, 3, 3]))
    # c0: mean(cos(c0,c1)=1, cos(c0,c2)=0) = 0.5; c2: 0. Rank of c0: c2 below, c1 tied -> (1 + 0.5) / 2
    assert agree[:3] == pytest.approx([0.5, 0.5, 0.0])
    assert rank[:3] == pytest.approx([0.75, 0.75, 0.0])
    # (image 0, caption 3) is not a pool pair: its set is {c0, c1, c2, c3}; c3 agrees (0 + 0 + 1) / 3, and so
    # does every sibling (c0: (1 + 0 + 0) / 3, c2: (0 + 0 + 1) / 3): all ties, rank 1.5 / 3
    assert agree[3] == pytest.approx(1 / 3) and rank[3] == pytest.approx(0.5)
    # image 1 has no other caption: no siblings
    assert np.isnan(agree[4]) and np.isnan(rank[4])


def test_a_pair_whose_image_neighbours_captions_disagree_scores_lower() -> None:
    # images 0 and 1 look alike, image 2 does not; image 1's caption is x; image 0 carries x' ~ x and y ⊥ x
    images = unit((1, 0, 0), (0.96, 0.28, 0), (0, 0, 1))
    captions = unit((1, 0, 0), (0.8, 0.6, 0), (0, 0, 1), (0, 0, 1))   # 0: x (image 1), 1: x', 2: y, 3: of image 2
    pool = Pool.from_pairs(np.array([1, 0, 0, 2]), np.array([0, 1, 2, 3]), 3, 4)
    s = space_signals(images, captions, pool, np.array([0, 0]), np.array([1, 2]), k=1, tau=0.0)
    # k=1: image 0's nearest other image is image 1, whose captions' centroid is x: cos(x', x) = 0.8, cos(y, x) = 0
    assert s["image_neighbours"] == pytest.approx([0.8, 0.0])
    # caption y's nearest other caption (not of image 0) is caption 3 (identical), of image 2: cos(image 0, image 2)
    assert s["caption_neighbours"][1] == pytest.approx(0.0)
    # similarity and margins: cos(image 0, x') = 0.8; x''s best other image is image 1 (0.96*0.8 + 0.28*0.6)
    assert s["similarity"] == pytest.approx([0.8, 0.0])
    assert s["caption_margin"][0] == pytest.approx(0.8 - (0.96 * 0.8 + 0.28 * 0.6))
    # image 0's best caption that is not its own is x (cos 1): margins 0.8 - 1 and 0 - 1
    assert s["image_margin"] == pytest.approx([-0.2, -1.0])
    # siblings: x' and y are each other's only sibling, cos 0
    assert s["siblings"] == pytest.approx([0.0, 0.0], abs=1e-6)      # float32 embeddings


def test_neighbours_are_searched_among_the_noisy_split_s_pairs() -> None:
    from core.detect.consensus import Space
    from core.detect.signals import SignalInputs, pool_of, searched_pool
    # images 10 and 13 (val) carry the same caption x; image 11 (train) looks a little less like 10 and carries y
    pairs = pd.DataFrame({"pair_id": [1, 2, 3, 4], "image_id": [10, 11, 12, 13], "caption_id": [20, 21, 22, 23],
                          "split": ["val", "train", "train", "val"]})
    inputs = SignalInputs(np.array([10, 11, 12, 13]), np.array([20, 21, 22, 23]), {}, None)
    images = unit((1, 0, 0), (0.96, 0.28, 0), (0, 0, 1), (0.99, 0.141, 0))
    captions = unit((1, 0, 0), (0, 1, 0), (0, 0, 1), (1, 0, 0))
    pool = pool_of(pairs, inputs)
    q = np.array([0]), np.array([0])                                   # image 10 with its caption x
    # among every pool pair, image 10's nearest other image is 13, whose caption is x: agreement 1
    everywhere = Space.build(images, captions, pool)
    assert everywhere.signals(*q, k=1, tau=0.0)["image_neighbours"] == pytest.approx([1.0])
    # among the train pairs only, it is image 11, whose caption y is ⊥ x: agreement 0, as a train pair would meet
    noisy = Space.build(images, captions, pool, searched=searched_pool(pairs, inputs))
    assert noisy.signals(*q, k=1, tau=0.0)["image_neighbours"] == pytest.approx([0.0], abs=1e-6)
    assert len(noisy.image_index) == 2 and len(everywhere.image_index) == 4
    # what the pool pairs (each image's captions) is unchanged; a dataset without a train split searches it all
    assert np.array_equal(noisy.caption_centroid, everywhere.caption_centroid)
    no_train = pairs.assign(split="val")
    assert (searched_pool(no_train, inputs).members != pool_of(no_train, inputs).members).nnz == 0


def test_an_image_unlike_the_other_images_of_its_caption_scores_lower() -> None:
    # caption 0 is paired with images 0, 1 = (1, 0) and image 2 = (0, 1); caption 1 only with image 1
    images = unit((1, 0), (1, 0), (0, 1), (1, 0))
    captions = unit((1, 0), (0, 1))
    pool = Pool.from_pairs(np.array([0, 1, 2, 1]), np.array([0, 0, 0, 1]), 4, 2)
    s = space_signals(images, captions, pool, np.array([0, 2, 1, 3]), np.array([0, 0, 1, 0]), k=1, tau=0.0)
    # (0, 0): the others are images 1 + 2 = (1, 1): cos 1/sqrt(2); (2, 0): images 0 + 1 = (2, 0): cos 0;
    # (1, 1): caption 1 has no other image; (3, 0), not a pool pair: all three, (2, 1): cos 2/sqrt(5)
    got = s["caption_images"]
    assert got[[0, 1, 3]] == pytest.approx([1 / np.sqrt(2), 0.0, 2 / np.sqrt(5)], abs=1e-6)
    assert np.isnan(got[2])
    # constructed mismatches stand for captions moved to image 3: caption 0 moved from image 2 leaves images 0 + 1
    # = (2, 0): cos 1; caption 1 moved from image 1, its only one, has no other image left (a swap of a caption no
    # other image shares); a `moved_from` of −1 or of an image that does not hold the caption leaves all of them
    moved = space_signals(images, captions, pool, np.array([3, 3, 3, 3]), np.array([0, 1, 0, 0]), k=1, tau=0.0,
                          moved_from=np.array([2, 1, -1, 3]))["caption_images"]
    assert moved[[0, 2, 3]] == pytest.approx([1.0, 2 / np.sqrt(5), 2 / np.sqrt(5)], abs=1e-6)
    assert np.isnan(moved[1])


def test_neighbour_weights_fall_with_distance() -> None:
    images = unit((1, 0), (1, 0.2), (1, -1))
    captions = unit((1, 0), (1, 0), (0, 1))          # caption 0 of image 0 (query), 1 of image 1, 2 of image 2
    pool = Pool.from_pairs(np.array([0, 1, 2]), np.array([0, 1, 2]), 3, 3)
    even = space_signals(images, captions, pool, np.array([0]), np.array([0]), k=2, tau=0.0)["image_neighbours"]
    near = space_signals(images, captions, pool, np.array([0]), np.array([0]), k=2, tau=10.0)["image_neighbours"]
    assert even[0] == pytest.approx(0.5)              # mean of cos(c0, c1) = 1 and cos(c0, c2) = 0
    # weights exp(-10 (1 - cos)): image 1 at cos 1/sqrt(1.04), image 2 at cos 1/sqrt(2); caption agreements 1 and 0
    w1, w2 = np.exp(-10 * (1 - 1 / np.sqrt(1.04))), np.exp(-10 * (1 - 1 / np.sqrt(2)))
    assert near[0] == pytest.approx(w1 / (w1 + w2), rel=1e-5)      # 0.939: the far neighbour barely counts


def test_fused_classifier_on_a_separable_case() -> None:
    rng = np.random.default_rng(0)
    y = np.repeat([1, 0], 20)
    x = np.column_stack([np.where(y == 1, 1.0, -1.0) + 0.1 * rng.normal(size=40), rng.normal(size=40)])
    x[3, 1] = np.nan                                   # a missing signal is filled, not fatal
    model = fit_fused(x, y, ["useful", "noise"], c=1.0)
    p = model.clean_prob(x)
    assert (p[y == 1] > 0.5).all() and (p[y == 0] < 0.5).all()
    assert model.cv_auroc == pytest.approx(1.0)
    assert model.weights()[0]["signal"] == "useful" and model.weights()[0]["coef"] > 0
    assert model.contributions(x).shape == x.shape
    with pytest.raises(ValueError, match="matched and mismatched"):
        fit_fused(x, np.ones(40), ["useful", "noise"])


def test_a_signal_constant_on_the_labelled_pairs_is_not_scaled_up() -> None:
    # column 1 is 0.3 on every labelled pair but for float noise (spread 1e-9); where it varies on the scored pairs,
    # standardising by that spread would make logits of millions
    rng = np.random.default_rng(0)
    y = np.repeat([1, 0], 50)
    x = np.column_stack([y + rng.normal(0, 0.5, 100), 0.3 + rng.normal(0, 1e-9, 100)])
    model = fit_fused(x, y, ["s", "flat"], cv=False)
    assert model.scale[1] == 1.0
    scored = np.column_stack([np.linspace(-1, 2, 20), np.linspace(-1, 1, 20)])
    assert np.abs(model.logit(scored)).max() < 20
    assert np.all(np.diff(model.clean_prob(scored)) > 0)       # still ranked by the signal that says something


def test_a_signal_no_scored_pair_has_takes_no_weight() -> None:
    # one caption per image: no scored pair has siblings, but a constructed mismatch does (the positive's caption),
    # so on the labelled pairs the sibling column tells the mismatches apart; it must not take the weight
    rng = np.random.default_rng(1)
    y = np.repeat([1, 0], 30)
    useful = np.where(y == 1, 0.5, -0.5) + rng.normal(size=60)
    siblings = np.where(y == 1, np.nan, rng.normal(-1.0, 0.3, 60))
    scored = np.column_stack([rng.normal(size=200), np.full(200, np.nan)])
    model = fit_fused(np.column_stack([useful, siblings]), y, ["useful", "siblings"], c=0.5, scored=scored)
    alone = fit_fused(useful[:, None], y, ["useful"], c=0.5, scored=scored[:, :1])
    assert model.coef[1] == 0.0
    assert model.logit(scored) == pytest.approx(alone.logit(scored[:, :1]))
    assert model.cv_auroc == pytest.approx(alone.cv_auroc)
    kept = fit_fused(np.column_stack([useful, siblings]), y, ["useful", "siblings"], c=0.5)   # nothing scored
    assert kept.coef[1] != 0.0
    one = fit_fused(np.column_stack([useful, siblings]), y, ["useful", "siblings"], c=0.5, scored=scored[:1])
    assert one.coef[1] != 0.0          # a single scored pair varies in nothing: no signal is taken for absent


def test_fused_classifier_per_space_averages_the_spaces_logits() -> None:
    from core.detect.signals import run_spaces, space_groups
    names = ["b1#1.similarity", "b1#1.siblings", "npc#2.similarity", "text.siblings"]
    assert space_groups(names) == [[0, 1, 3], [2, 3]]          # each run space with the text tower's columns
    assert space_groups(["b1#1.similarity", "text.siblings"]) is None     # one space: one classifier anyway
    assert run_spaces(["text.siblings", "npc#2.similarity", "b1#1.similarity", "npc#2.siblings"]) == ["npc#2", "b1#1"]
    rng = np.random.default_rng(1)
    y = np.repeat([1, 0], 30)
    x = np.where(y == 1, 0.5, -0.5)[:, None] + rng.normal(size=(60, 4))
    groups = space_groups(names)
    model = fit_fused(x, y, names, c=0.5, groups=groups)
    members = [fit_fused(x[:, g], y, [names[j] for j in g], c=0.5, cv=False) for g in groups]
    # one linear model: the members' logits averaged, each coefficient the mean over the groups (0 where absent)
    assert model.logit(x) == pytest.approx(np.mean([m.logit(x[:, g]) for m, g in zip(members, groups)], axis=0))
    assert model.coef == pytest.approx([members[0].coef[0] / 2, members[0].coef[1] / 2, members[1].coef[0] / 2,
                                        (members[0].coef[2] + members[1].coef[1]) / 2])
    assert 0.5 < model.cv_auroc <= 1.0
    joint = fit_fused(x, y, names, c=0.5)
    assert not np.allclose(joint.coef, model.coef)              # not the joint fit


def test_group_weights_by_hand() -> None:
    from core.detect.fusion import group_multipliers, group_weights
    two_modes = np.repeat([-1.0, 1.0], 50)
    # the same split at three times the spread: equal Ashman's D, so equal weights; the mean spread is 2, so the
    # multipliers 0.5·2/1 and 0.5·2/3 bring both logits to the same scale (1·A + 1/3·3A = 2A)
    logits = np.array([two_modes, 3 * two_modes])
    weights = group_weights(logits)
    assert weights == pytest.approx([0.5, 0.5]) and group_multipliers(weights, logits) == pytest.approx([1.0, 1 / 3])
    # two clean modes (standardised: ±1, the mixture's floor variance 5e-4 each: D = 2·√2/√1e-3 = √8000) against
    # two modes of unequal mass and spread
    from core.mixtures import ashman_d, fit_gmm
    assert ashman_d(fit_gmm(two_modes, max_iter=100)) == pytest.approx(np.sqrt(8000))
    other = np.r_[np.full(80, -1.0), np.linspace(2.0, 4.0, 20)]
    weights = group_weights(np.array([two_modes, other]))
    d_other = ashman_d(fit_gmm(other / other.std(), max_iter=100))
    assert weights == pytest.approx([np.sqrt(8000), d_other] / (np.sqrt(8000) + d_other)) and d_other < np.sqrt(8000)
    assert group_weights(np.ones((2, 10))) == pytest.approx([0.5, 0.5])     # nothing splits: equal weights


def test_fused_classifier_weighs_the_spaces_by_how_well_they_split_the_scored_pairs() -> None:
    from core.detect.fusion import cross_validated_auroc, group_multipliers, group_weights
    from core.detect.signals import space_groups
    names = ["b1#1.similarity", "b1#1.siblings", "npc#2.similarity", "text.siblings"]
    groups = space_groups(names)
    rng = np.random.default_rng(2)
    y = np.repeat([1, 0], 30)
    x = np.where(y == 1, 0.5, -0.5)[:, None] + rng.normal(size=(60, 4))
    # the scored pairs (no labels): b1's signals fall into two modes, NPC's and the text tower's into one
    modes = np.repeat([2.0, -2.0], 100)
    scored = np.column_stack([modes + rng.normal(0, 0.3, 200), modes + rng.normal(0, 0.3, 200),
                              rng.normal(size=200), rng.normal(size=200)])
    model = fit_fused(x, y, names, c=0.5, groups=groups, scored=scored, nonnegative=False)
    members = [fit_fused(x[:, g], y, [names[j] for j in g], c=0.5, cv=False) for g in groups]
    logits = np.array([m.logit(scored[:, g]) for m, g in zip(members, groups)])
    weights = group_weights(logits)
    assert model.group_weights == pytest.approx(weights) and sum(model.group_weights) == pytest.approx(1.0)
    assert weights[0] > 2 * weights[1]                          # the space that splits the pairs carries the score
    assert model.fit_weights is None                            # one fit: nothing to weigh it against
    # still one linear model: the members' logits times their multipliers
    assert model.logit(scored) == pytest.approx(group_multipliers(weights, logits) @ logits)
    # the cross-validation's folds keep the whole fit's weights
    kept = Weighing(np.array([weights]), np.ones(1))
    assert model.cv_auroc == cross_validated_auroc(x, y, 0.5, groups=groups, scored=scored, nonnegative=False,
                                                   weighing=kept)
    assert fit_fused(x, y, names, c=0.5, groups=groups).group_weights == pytest.approx([0.5, 0.5])
    averaged = fit_fused(x, y, names, c=0.5, groups=groups, scored=scored, weigh_groups=False, nonnegative=False)
    assert averaged.group_weights == pytest.approx([0.5, 0.5])
    assert averaged.logit(scored) == pytest.approx(logits.mean(axis=0))
    assert fit_fused(x, y, names, c=0.5, scored=scored).group_weights is None       # no groups: nothing to weigh


def test_the_unconstrained_fit_counts_as_far_as_it_ranks_the_pairs_like_the_non_negative_one() -> None:
    from core.detect.fusion import fit_weights
    constrained = np.repeat([-1.0, 1.0], 100)     # two clean modes: D = √8000 (see the test above)
    assert fit_weights(np.array([constrained, constrained])) == pytest.approx([0.5, 0.5])
    assert fit_weights(np.array([2 * constrained, constrained])) == pytest.approx([0.5, 0.5])   # scale-free
    assert fit_weights(np.array([-constrained, constrained])) == pytest.approx([0.0, 1.0])      # reversed: none
    # the same two modes, a quarter of each flipped: they agree on 150 of 200 pairs, correlation (150 − 50) / 200
    reordered = constrained.copy()
    reordered[:25], reordered[100:125] = 1.0, -1.0
    assert np.corrcoef(reordered, constrained)[0, 1] == pytest.approx(0.5)
    assert fit_weights(np.array([reordered, constrained])) == pytest.approx([1 / 3, 2 / 3])   # 0.5·D : D
    assert fit_weights(np.array([np.ones(200), constrained])) == pytest.approx([0.0, 1.0])    # constant: none
    # modes of unequal spread: the unconstrained fit's D (a mixture fitted to it) times the correlation, against √8000
    from core.mixtures import ashman_d, fit_gmm
    spread_out = np.r_[np.full(100, -1.0), np.linspace(2.0, 4.0, 100)]
    d, rho = ashman_d(fit_gmm(spread_out / spread_out.std(), max_iter=100)), np.corrcoef(spread_out, constrained)[0, 1]
    assert 0.8 < rho < 1 and d < np.sqrt(8000)
    assert fit_weights(np.array([spread_out, constrained])) == pytest.approx(
        [d * rho / (d * rho + np.sqrt(8000)), np.sqrt(8000) / (d * rho + np.sqrt(8000))])
    assert fit_weights(np.array([constrained])) == pytest.approx([1.0])


def test_the_non_negative_fit_is_scikit_learn_s_with_the_wrong_signed_signal_held_at_zero() -> None:
    from sklearn.linear_model import LogisticRegression
    from core.detect.fusion import nonnegative_logistic
    rng = np.random.default_rng(3)
    y = np.repeat([1, 0], [70, 30])                             # unbalanced: the classes are weighted to balance
    signal = np.where(y == 1, 0.6, -0.6)
    z = np.column_stack([signal + rng.normal(size=100), signal + rng.normal(size=100)])
    reference = LogisticRegression(C=0.3, class_weight="balanced", tol=1e-10, max_iter=10_000).fit(z, y)
    assert (reference.coef_ > 0).all()                          # all positive: the bound is never reached
    coef, intercept = nonnegative_logistic(z, y, 0.3)
    assert coef == pytest.approx(reference.coef_.ravel(), abs=1e-4)
    assert intercept == pytest.approx(reference.intercept_[0], abs=1e-4)
    wrong = np.column_stack([z, -signal + rng.normal(size=100)])   # a third signal lower on matched pairs
    coef, intercept = nonnegative_logistic(wrong, y, 0.3)
    assert coef[2] == 0.0 and (coef >= 0).all()
    assert coef[:2] == pytest.approx(reference.coef_.ravel(), abs=1e-4)     # held at 0: the fit without it
    assert intercept == pytest.approx(reference.intercept_[0], abs=1e-4)


def test_the_fit_runs_blas_on_one_thread_and_concurrent_fits_restore_the_count(monkeypatch) -> None:
    import threading
    from threadpoolctl import threadpool_info, threadpool_limits
    from core.detect import fusion
    def blas_threads() -> list[int]:
        return [i["num_threads"] for i in threadpool_info() if i["user_api"] == "blas"]
    seen: list[list[int]] = []
    prepare = fusion._prepare
    monkeypatch.setattr(fusion, "_prepare", lambda x: (seen.append(blas_threads()), prepare(x))[1])
    rng = np.random.default_rng(5)
    y = np.repeat([1, 0], 30)
    x = np.where(y == 1, 0.5, -0.5)[:, None] + rng.normal(size=(60, 3))
    with threadpool_limits(limits=2, user_api="blas"):
        before = blas_threads()
        fit_fused(x, y, None, scored=x)
        assert len(seen) == 6 and all(n == [1] * len(before) for n in seen)   # the fit and its 5 folds: one thread
    # Threads, outside the main thread's limit: while a thread is inside one, threadpoolctl keeps that thread in
    # control of OpenBLAS's process-wide pool and skips every other thread's limit.
    before, failed = blas_threads(), []
    seen.clear()

    def fit() -> None:
        try:
            fit_fused(x, y, None, scored=x)
        except BaseException as error:          # a thread's exception would otherwise only warn
            failed.append(error)
    fits = [threading.Thread(target=fit) for _ in range(4)]
    for t in fits:
        t.start()
    for t in fits:
        t.join()
    assert not failed and len(seen) == 4 * 6 and all(n == [1] * len(before) for n in seen)   # one at a time
    assert blas_threads() == before                              # fits that overlapped leave the count as found

def test_the_non_negative_fit_counts_more_where_the_labelled_pairs_teach_a_sign_the_scored_pairs_do_not_follow(
        ) -> None:
    from core.detect.fusion import _prepare, fit_weights, group_multipliers, nonnegative_logistic
    rng = np.random.default_rng(4)
    y = np.repeat([1, 0], 40)
    a = np.where(y == 1, 0.5, -0.5) + rng.normal(size=80)
    x = np.column_stack([a, -a + rng.normal(0, 0.3, 80)])        # labelled: b runs against the label
    modes = np.repeat([2.0, -2.0], 150)                         # scored: both signals higher on the matched mode
    scored = modes[:, None] + rng.normal(0, 0.5, (300, 2))
    model = fit_fused(x, y, ["a", "b"], c=0.5, scored=scored)
    unconstrained = fit_fused(x, y, ["a", "b"], c=0.5, cv=False)
    assert unconstrained.coef[1] < 0 < unconstrained.coef[0]
    _, _, mean, scale = _prepare(x)
    coef, intercept = nonnegative_logistic((x - mean) / scale, y, 0.5)
    assert coef[1] == 0.0 < coef[0]
    logits = np.array([unconstrained.logit(scored), ((scored - mean) / scale) @ coef + intercept])
    weights = fit_weights(logits)
    # the unconstrained fit ranks the scored pairs against the constrained one: it counts for nothing
    assert np.corrcoef(logits)[0, 1] < 0 and weights == pytest.approx([0.0, 1.0])
    assert model.fit_weights == pytest.approx(weights)
    assert model.logit(scored) == pytest.approx(group_multipliers(weights, logits) @ logits)   # one linear model
    matched = modes > 0
    assert roc_auc_score(~matched, -model.logit(scored)) > roc_auc_score(~matched, -unconstrained.logit(scored)) + 0.1
    assert model.group_weights is None                          # one group: no spaces to weigh


def test_constructed_negatives_never_pair_an_image_with_its_own_caption() -> None:
    rng = np.random.default_rng(1)
    n_img, per = 30, 3
    img = np.repeat(np.arange(n_img), per)
    cap = np.arange(n_img * per)
    text = rng.normal(size=(len(cap), 8))
    text /= np.linalg.norm(text, axis=1, keepdims=True)
    pool = Pool.from_pairs(img, cap, n_img, len(cap))
    made = construct_negatives(img[:30], cap[:30], pool, text, per_positive=2.0, near_miss_share=0.5, near_k=3)
    assert len(made) == 60 and 10 < made.near_miss.sum() < 50
    assert not pool.contains(made.image_row, made.caption_row).any()
    assert (made.moved_from == made.caption_row // per).all()     # each caption's one image, which a swap leaves


# ------------------------------------------------------------------------------------------- on a tiny demo
@pytest.fixture
def fused_run(store):
    from core.generated import GenerateOptions, create_generated
    from core.progress import Progress
    from core.training import execute_run, start_run
    create_generated(store, "demo", GenerateOptions(images=40, noise=0.4, noise_kind="hard", seed=3))
    b1 = start_run(store, "demo", "b1", epochs=1, settings={"batch_size": 32})
    execute_run(store, b1, Progress())
    run_id = start_run(store, "demo", "concord", settings={"refit_every": 5, "fast_b1_lr": 0},   # over b1 alone
                       meta_fraction=0.125)  # 20 val pairs
    execute_run(store, run_id, Progress())
    return store, b1, run_id


def test_concord_fuses_the_finished_runs_and_refits_from_decisions(fused_run) -> None:
    from core.detect.method import refit, refit_due
    from core.evaluate import evaluate_run
    store, b1, run_id = fused_run
    run = store.run(run_id)
    assert run.state == "finished" and run.metrics["base_runs"] == [b1]
    fused = run.metrics["fused"]
    assert fused["labelled"]["positives"] > 0 and fused["labelled"]["constructed"] == fused["labelled"]["positives"]
    assert {w["signal"] for w in fused["weights"]} >= {f"b1#{b1}.similarity", f"b1#{b1}.siblings", "text.siblings",
                                                       f"b1#{b1}.sibling_margin", "text.sibling_margin",
                                                       f"b1#{b1}.similarity_margin",
                                                       "pixels.image_neighbours", "pixels.caption_neighbours"}
    assert set(fused["fit_weights"]) == {"unconstrained", "nonnegative"}          # the two fits, weighed
    assert sum(fused["fit_weights"].values()) == pytest.approx(1.0) and fused["space_weights"] is None   # one space
    scores = store.scores_frame(run_id)
    assert len(scores) == len(store.pairs_frame(run.dataset_id))
    assert scores["clean_prob"].between(0, 1).all() and np.allclose(scores["weight"], scores["clean_prob"])
    assert {"caption_margin", "image_neighbours", "siblings", "text_siblings", "pixels_image_neighbours",
            "pixels_caption_neighbours", "pixels_caption_images", "look_alikes", "read_alikes", "sibling_margin",
            "text_sibling_margin", "similarity_margin", "sibling_count"} <= set(scores.columns)
    assert evaluate_run(store, run_id)["auroc"] is not None

    # decide 5 training pairs by the truth: the refit is due, learns from them, and rewrites clean_prob
    pairs = store.pairs_frame(run.dataset_id, run_id, split="train").sort_values("clean_prob")
    noisy = pairs[pairs["is_noisy"].astype(bool)].tail(3)["pair_id"].tolist()     # missed mismatches
    clean = pairs[~pairs["is_noisy"].astype(bool)].head(2)["pair_id"].tolist()    # false alarms
    assert not refit_due(store, run_id)
    store.decide(run.dataset_id, noisy, "reject", "tester")
    store.decide(run.dataset_id, clean, "keep", "tester")
    assert refit_due(store, run_id)
    before = store.scores_frame(run_id).set_index("pair_id")["clean_prob"]
    out = refit(store, run_id)
    after = store.scores_frame(run_id).set_index("pair_id")["clean_prob"]
    assert out["labelled"]["negatives"] == 3 and out["refits"] == 1
    assert not np.allclose(before.to_numpy(), after.to_numpy())
    assert after[noisy].mean() < before[noisy].mean()         # the missed mismatches fall
    assert after[clean].mean() > before[clean].mean()         # the false alarms rise
    assert not refit_due(store, run_id)
    extras = store.scores_frame(run_id).set_index("pair_id")      # the signals are untouched by a refit
    assert extras.loc[noisy[0], "siblings"] == pytest.approx(scores.set_index("pair_id").loc[noisy[0], "siblings"])


def test_no_ground_truth_or_test_pair_reaches_the_scorer(fused_run, monkeypatch) -> None:
    """Poison the ground-truth columns and the test split's pairs (their captions, and their images' pixels): the
    training pairs' scores do not move."""
    import core.features
    from core.methods import make_config
    from core.detect.method import Concord
    from core.progress import Progress
    from core.store import Store
    store, _, run_id = fused_run
    run = store.run(run_id)
    truth = store.scores_frame(run_id).set_index("pair_id")
    real = Store.pairs_frame
    rng = np.random.default_rng(7)
    test_images = real(store, run.dataset_id).query("split == 'test'")["image_id"].unique()
    real_pixels = core.features.image_pixel_batches

    def noisy_pixels(*args, **kwargs):
        for batch in real_pixels(*args, **kwargs):
            pixels, test = batch.values.copy(), np.isin(batch.ids, test_images)
            pixels[test] = rng.integers(0, 256, pixels[test].shape)
            yield core.features.Features(batch.ids, pixels)
    monkeypatch.setattr(core.features, "image_pixel_batches", noisy_pixels)

    def poisoned(self, dataset_id, *args, **kwargs) -> pd.DataFrame:
        frame = real(self, dataset_id, *args, **kwargs).copy()
        frame["is_noisy"] = rng.random(len(frame)) < 0.5
        frame["original_caption"] = "poison"
        test = frame["split"] == "test"
        frame.loc[test, "caption_id"] = rng.permutation(frame.loc[test, "caption_id"].to_numpy())
        return frame
    monkeypatch.setattr(Store, "pairs_frame", poisoned)
    result = Concord(make_config("concord", run.config), store, run, Progress()).run()
    pair_ids = real(store, run.dataset_id)["pair_id"].to_numpy()
    train = (real(store, run.dataset_id)["split"] == "train").to_numpy()
    assert np.allclose(result.clean_prob[train], truth.loc[pair_ids[train], "clean_prob"].to_numpy())


def test_a_refit_weighs_on_the_pairs_outside_the_test_split_whatever_its_cache_holds(fused_run) -> None:
    from core import artifacts
    from core.detect.method import CACHE_FILE, refit
    store, _, run_id = fused_run
    path = artifacts.run_dir(store.run(run_id)) / CACHE_FILE
    with np.load(path) as z:
        cached = {k: z[k] for k in z.files}
    split = store.pairs_frame(store.run(run_id).dataset_id).set_index("pair_id")["split"]
    assert (cached["weighed"] == (split.reindex(cached["pair_ids"]) != "test").to_numpy()).all()
    assert not cached["weighed"].all()                                   # the test split's pairs are left out
    refit(store, run_id)
    with_mask = store.scores_frame(run_id).set_index("pair_id")["clean_prob"]
    np.savez(path, **{k: v for k, v in cached.items() if k != "weighed"})   # a run cached before the mask
    refit(store, run_id)
    without = store.scores_frame(run_id).set_index("pair_id")["clean_prob"]
    assert np.allclose(with_mask.to_numpy(), without.reindex(with_mask.index).to_numpy())
    test = ~cached["weighed"]
    shuffled = cached["x"].copy()
    rng = np.random.default_rng(3)
    shuffled[test] = -rng.permuted(shuffled[test], axis=0) + rng.normal(size=shuffled[test].shape)  # other values
    np.savez(path, **{**cached, "x": shuffled})
    refit(store, run_id)
    moved = store.scores_frame(run_id).set_index("pair_id")["clean_prob"].reindex(with_mask.index)
    outside = ~with_mask.index.isin(cached["pair_ids"][test])
    assert np.allclose(moved[outside].to_numpy(), with_mask[outside].to_numpy())   # they weigh nothing
    assert not np.allclose(moved[~outside].to_numpy(), with_mask[~outside].to_numpy())


def test_concord_fuses_the_latest_run_of_each_method_and_learning_rate(fused_run) -> None:
    from core.progress import Progress
    from core.training import execute_run, start_run
    store, b1, _ = fused_run
    faster = start_run(store, "demo", "b1", epochs=1, settings={"batch_size": 32, "lr": 0.01})
    again = start_run(store, "demo", "b1", epochs=1, settings={"batch_size": 32})     # a retrain at b1's rate
    for run_id in (faster, again):
        execute_run(store, run_id, Progress())
    run_id = start_run(store, "demo", "concord", settings={"refit_every": 5})
    execute_run(store, run_id, Progress())
    run = store.run(run_id)
    assert run.metrics["base_runs"] == [faster, again]           # the retrain replaces b1; the faster rate joins
    assert ({f"b1#{faster}.similarity", f"b1#{again}.similarity"}
            <= {w["signal"] for w in run.metrics["fused"]["weights"]})
    assert not any(w["signal"].startswith(f"b1#{b1}.") for w in run.metrics["fused"]["weights"])
    assert store.run(faster).config["lr"] == 0.01 and len(store.runs(run.dataset_id)) == 5   # none trained: it had one


def test_concord_trains_the_faster_b1_it_fuses_when_the_dataset_has_none(fused_run) -> None:
    from core.progress import Progress
    from core.runs import unfused_runs
    from core.training import execute_run, start_run
    store, b1, _ = fused_run
    ds = store.run(b1).dataset_id
    from core.methods import make_config
    assert make_config("concord").fast_b1_lr == 0                               # off unless asked for
    run_id = start_run(store, "demo", "concord", seed=2, settings={"refit_every": 5, "fast_b1_lr": 0.01})
    execute_run(store, run_id, Progress())
    run = store.run(run_id)
    faster = run.metrics["base_runs"][1]
    assert run.metrics["base_runs"] == [b1, faster] and faster > run_id            # trained by the fused run
    made = store.run(faster)
    assert (made.method, made.state, made.seed) == ("b1", "finished", 2)
    assert made.config["lr"] == 0.01 and made.config["epochs"] == store.run(b1).config["epochs"] == 1   # b1's epochs
    assert run.metrics["fused"]["space_weights"] is not None                     # two networks' spaces, weighed
    assert unfused_runs(store.runs(ds)) == []                                    # it fused the run it trained
    again = start_run(store, "demo", "concord", settings={"refit_every": 5, "fast_b1_lr": 0.01})
    execute_run(store, again, Progress())
    assert store.run(again).metrics["base_runs"] == [b1, faster]                 # the second fusion trains none
    count = len(store.runs(ds))
    off = start_run(store, "demo", "concord")                                    # the default: none trained
    execute_run(store, off, Progress())
    assert store.run(off).metrics["base_runs"] == [b1, faster] and len(store.runs(ds)) == count + 1


def test_concord_trains_no_faster_b1_for_a_pretrained_image_tower(fused_run, monkeypatch) -> None:
    import dataclasses

    import core.models
    from core.progress import Progress
    from core.training import execute_run, start_run
    store, b1, _ = fused_run
    real = core.models.model_info
    monkeypatch.setattr(core.models, "model_info",
                        lambda *a, **k: dataclasses.replace(real(*a, **k), image_pretrained=True))
    run_id = start_run(store, "demo", "concord", settings={"refit_every": 5, "fast_b1_lr": 0.01})
    execute_run(store, run_id, Progress())
    assert store.run(run_id).metrics["base_runs"] == [b1]        # a pretrained tower is not retrained faster


def test_concord_refuses_without_trusted_pairs(store) -> None:
    from core.errors import ConcordError
    from core.generated import GenerateOptions, create_generated
    from core.progress import Progress
    from core.training import execute_run, start_run
    create_generated(store, "demo", GenerateOptions(images=40, noise=0.4, seed=3))
    b1 = start_run(store, "demo", "b1", epochs=1, settings={"batch_size": 32})
    execute_run(store, b1, Progress())
    run_id = start_run(store, "demo", "concord", meta_split="", settings={"trusted_split": ""})
    with pytest.raises(ConcordError, match="needs trusted matched pairs"):
        execute_run(store, run_id, Progress())
    assert store.run(run_id).state == "failed"
    assert store.scores_frame(b1)["clean_prob"].notna().all()        # the base run is untouched


def test_bench_consensus_measures_every_step(tmp_path) -> None:
    from core.benchmarks.consensus import markdown, measure
    figures = measure(1500, 5, 16, 20, tmp_path)
    assert set(figures) == {"signals_one_space_s", "text_siblings_s", "pixels_decoded_s", "pixel_features_s",
                            "pixel_signals_s", "look_alikes_one_space_s", "context_one_space_s", "concord_run_s",
                            "context_spaces", "refit_s", "labelled"}
    assert all(v > 0 for v in figures.values())
    assert figures["context_spaces"] == 1              # the run fitted the trusted pairs' context in its one space
    # the `val` pairs (30 images), the decisions, one made per positive
    assert figures["labelled"] == 150 + 20 + 150
    text = markdown(figures, "cmd", 1500)
    assert "| refit after the decisions (320 labelled rows" in text and "matched context in 1 space(s)" in text


def test_review_line_names_the_signals_that_flag_the_pair() -> None:
    from core.detect.explain import explain_pair, fused_summary
    lows = {"siblings": 0.3, "text_siblings": 0.5, "caption_margin": -0.1, "image_margin": -0.2,
            "image_neighbours": 0.2, "caption_neighbours": 0.2, "caption_images": 0.4}
    pair = {"siblings": 0.1, "text_siblings": 0.9, "sibling_rank": 0.0, "sibling_count": 4.0,
            "caption_margin": -0.3, "image_margin": 0.0, "image_neighbours": float("nan"), "caption_neighbours": 0.5,
            "caption_images": 0.4}
    assert explain_pair(pair, lows) == ("Flagged by: caption disagrees with its 4 sibling captions (the least of 5); "
                                        "the caption matches another image better; the caption's other images "
                                        "look different.")
    calm = pair | {"siblings": 0.4, "caption_margin": 0.0, "caption_images": 0.9}
    assert explain_pair(calm, lows) == "No single signal flags this pair; only their combination in the fused score."
    # the pixel space's terms have lines of their own
    pixel_lows = lows | {"pixels_image_neighbours": 0.1, "pixels_caption_images": 0.2}
    assert explain_pair(calm | {"pixels_image_neighbours": 0.05, "pixels_caption_images": 0.3}, pixel_lows) == (
        "Flagged by: the captions of the images that look most like it, pixel for pixel, say otherwise.")
    # and so have a run's look-alike terms (the mean over the networks, as the map shows it)
    look_lows = lows | {"look_alikes": 0.3, "read_alikes": 0.3}
    assert explain_pair(calm | {"look_alikes": 0.1, "read_alikes": 0.35}, look_lows) == (
        "Flagged by: the caption fits poorly the images that look most like this one.")
    # a caption that agrees more with another image's captions: one line, whichever space's margin flags it
    margin_lows = lows | {"sibling_margin": 0.0, "text_sibling_margin": 0.0}
    assert explain_pair(calm | {"sibling_margin": 0.1, "text_sibling_margin": -0.2}, margin_lows) == (
        "Flagged by: the caption agrees more with another image's captions than with its own image's.")
    assert explain_pair(calm | {"similarity_margin": -0.3}, lows | {"similarity_margin": -0.1}) == (
        "Flagged by: the image matches its other captions better than this one.")
    fused = {"cv_auroc": 0.912, "labelled": {"positives": 80, "negatives": 3, "constructed": 80}, "refits": 2,
             "weights": [{"signal": "b1#1.caption_margin", "coef": 1.2}, {"signal": "text.siblings", "coef": 0.4}]}
    assert fused_summary(fused) == ("Fused classifier: cross-validated AUROC 0.912 on 80 trusted matched and 3 "
                                    "mismatched pairs plus 80 constructed mismatches; carried by b1#1.caption_margin "
                                    "(+1.20), text.siblings (+0.40); refitted 2×.")
    spaced = fused | {"space_weights": {"b1#1": 0.25, "mscn#3": 0.75}, "refits": 0}
    assert fused_summary(spaced).endswith("text.siblings (+0.40); networks weighed b1#1 0.25, mscn#3 0.75.")
    signed = spaced | {"fit_weights": {"unconstrained": 0.4, "nonnegative": 0.6}}
    assert fused_summary(signed).endswith("networks weighed b1#1 0.25, mscn#3 0.75; the fit with every weight ≥ 0 "
                                          "counts 0.60.")


def test_the_context_line_says_how_far_the_trusted_captions_were_swapped() -> None:
    from core.detect.explain import context_summary
    context = {"b1#1": {"rate": 0.4, "near_miss_share": 0.0}, "mscn#3": {"rate": 0.55, "near_miss_share": 0.25},
               "text": {"rate": 0.45, "near_miss_share": 0.75}}
    assert context_summary(context) == (
        "Fitted in the training split's sibling context: the trusted images' captions swapped at 45% in the text "
        "tower's space (75% of them near misses) and 40%–55% in the runs' spaces: a rough estimate of the split's "
        "noise.")
    assert context_summary({"b1#1": {"rate": 0.2, "near_miss_share": 0.5}}) == (
        "Fitted in the training split's sibling context: the trusted images' captions swapped at 20% in the runs' "
        "spaces: a rough estimate of the split's noise.")
    assert context_summary({"text": {"rate": 0.4, "near_miss_share": 0.0, "whole_images": True}}) == (
        "Fitted in the training split's sibling context: the trusted images' captions swapped at 40% in the text "
        "tower's space (whole images at a time): a rough estimate of the split's noise.")
    assert context_summary({}) == ""          # match_context off


@pytest.mark.parametrize("split, message", [
    ("train", "the 'train' split is the noisy one being cleaned"),
    ("test", "the 'test' split is held out to measure the methods, so it is never trusted"),
    ("vall", r"no split 'vall' in this dataset \(splits: test, train, val\)")])
def test_the_noisy_held_out_or_a_missing_split_cannot_be_the_trusted_one(fused_run, split, message) -> None:
    """A split name the dataset lacks is a typo, refused (only the default `val` may be missing: no trusted split),
    when the run is asked for: before a b1 it may need trains."""
    from core.errors import ConcordError
    from core.training import start_run
    store, _, _ = fused_run
    runs = len(store.runs())
    with pytest.raises(ConcordError, match=message):
        start_run(store, "demo", "concord", settings={"trusted_split": split})
    assert len(store.runs()) == runs


# ------------------------------------------------------------------------------------------- matched context
def test_siblings_with_a_swapped_in_caption_standing_in_the_query_s_slot() -> None:
    # image 0's pool captions are 0, 1, 2; c0 = c1 = (1, 0), c2 = (0, 1), c3 = (1, 1)/√2
    caps = unit((1, 0), (1, 0), (0, 1), (1, 1))
    pool = Pool.from_pairs(np.array([0, 0, 0]), np.array([0, 1, 2]), 1, 4)
    agree, rank = sibling_terms(caps, pool, np.array([0, 0]), np.array([3, 2]), stand_in=np.array([2, 2]))
    # caption 3 in caption 2's slot: its siblings are c0 and c1 only, each at cos 1/√2; c0 and c1 agree
    # (1 + 1/√2) / 2 with theirs, more than c3 does: rank 0
    assert agree[0] == pytest.approx(1 / np.sqrt(2)) and rank[0] == pytest.approx(0.0)
    # a caption standing in its own slot is the plain case
    plain = sibling_terms(caps, pool, np.array([0]), np.array([2]))
    assert agree[1] == pytest.approx(plain[0][0]) and rank[1] == pytest.approx(plain[1][0])


def test_each_context_is_cut_from_one_draw_of_swaps() -> None:
    from core.detect.context import SwapDraw
    pool = Pool.from_pairs(np.array([0, 0, 1, 1]), np.array([0, 1, 2, 3]), 2, 12)
    draw = SwapDraw(pool, np.array([0, 0, 1, 1]), np.array([0, 1, 2, 3]), near=np.array([4, 5, 6, -1]),
                    random=np.array([8, 9, 10, 11]), draw=np.array([0.1, 0.6, 0.3, 0.2]),
                    image_draw=np.array([0.4, 0.4, 0.9, 0.9]), kind=np.array([0.2, 0.8, 0.6, 0.1]))
    # rate 0.5: slots 0, 2 and 3 are drawn below it; share 0.5: slot 0 takes its near miss (kind 0.2), slot 2
    # its random caption (kind 0.6), and slot 3 would take its near miss, but none was drawn: it stays
    context = draw.at(0.5, 0.5)
    assert context.pool.members.toarray()[0].nonzero()[0].tolist() == [1, 4]
    assert context.pool.members.toarray()[1].nonzero()[0].tolist() == [3, 10]
    assert context.stand_in(np.array([0, 0, 1, 1, 1]), np.array([0, 1, 2, 3, 7])).tolist() == [4, 1, 10, 3, 7]
    assert draw.at(0.0, 0.5).pool.members.toarray().tolist() == pool.members.toarray().tolist()
    # a higher rate swaps a superset of the slots
    assert draw.at(0.7, 0.0).pool.members.toarray()[0].nonzero()[0].tolist() == [8, 9]
    # whole images: image 0 (drawn 0.4) has every caption swapped (slot 1 for its random one, kind 0.8), image 1
    # (0.9) none
    whole = draw.at(0.5, 0.5, whole=True)
    assert whole.whole and [row.nonzero()[0].tolist() for row in whole.pool.members.toarray()] == [[4, 9], [2, 3]]


def _captioned_world(noise: float, seed: int = 0, whole: bool = False
                     ) -> tuple[np.ndarray, Pool, np.ndarray, np.ndarray, np.ndarray]:
    """200 images of 5 captions each near the image's own direction; images 0-159 are the noisy split, whose
    captions are swapped at random among themselves at rate `noise` (`whole`: every caption of that share of
    the images, as the `decl` kind); 160-199 are the clean trusted split."""
    rng = np.random.default_rng(seed)
    directions = rng.normal(size=(200, 32))
    text = directions.repeat(5, axis=0) + 0.6 * rng.normal(size=(1000, 32))
    text /= np.linalg.norm(text, axis=1, keepdims=True)
    image, caption = np.arange(1000) // 5, np.arange(1000)
    if whole:
        chosen = rng.permutation(160)[:int(noise * 160)]
        swapped = rng.permutation((chosen[:, None] * 5 + np.arange(5)).ravel())
    else:
        swapped = rng.permutation(800)[:int(noise * 800)]
    caption[swapped] = caption[np.roll(swapped, 1)]         # each moves to the next chosen pair's image
    return text, Pool.from_pairs(image, caption, 200, 1000), np.arange(160, 200), image[:800], caption[:800]


def test_the_matched_context_finds_the_noisy_split_s_swap_rate() -> None:
    from core.detect.context import draw_swaps, matched_context
    text, pool, trusted, noisy_image, noisy_caption = _captioned_world(0.4)
    context = matched_context(draw_swaps(pool, trusted, text, seed=1), text, noisy_image, noisy_caption)
    assert 0.3 <= context.rate <= 0.5 and not context.whole
    # the trusted pairs' sibling agreement in that context is the noisy split's, near enough
    slots = pool.captions_of[trusted].tocoo()
    image, caption = trusted[slots.row], slots.col
    swapped_in = context.stand_in(image, caption)
    ours = sibling_terms(text, context.pool, image, swapped_in)[0].mean()
    theirs = sibling_terms(text, pool, noisy_image, noisy_caption)[0].mean()
    assert ours == pytest.approx(theirs, abs=0.02)
    # a clean noisy split: nothing is swapped
    text, pool, trusted, noisy_image, noisy_caption = _captioned_world(0.0)
    assert matched_context(draw_swaps(pool, trusted, text), text, noisy_image, noisy_caption).rate == 0.0


def test_mismatches_an_image_at_a_time_are_told_apart_and_mirrored_in_the_labelled_contexts() -> None:
    from core.detect.context import draw_swaps, labelled_contexts, matched_context
    text, pool, trusted, noisy_image, noisy_caption = _captioned_world(0.4, whole=True)
    draw = draw_swaps(pool, trusted, text, seed=1)
    context = matched_context(draw, text, noisy_image, noisy_caption)
    assert context.whole and 0.3 <= context.rate <= 0.5 and context.share == 0.0
    # a clean caption keeps its clean siblings; a constructed mismatch sits among foreign ones only
    for_trusted, for_made = labelled_contexts(draw, context)
    assert len(for_trusted.swapped_keys) == 0
    assert for_made.whole and len(for_made.swapped_keys) == len(draw.image)
    now, before = for_made.pool.members[trusted].toarray(), pool.members[trusted].toarray()
    assert not (now.astype(bool) & before.astype(bool)).any()        # no trusted image keeps a caption of its own
    # captions swapped one by one: both take the matched context itself
    text, pool, trusted, noisy_image, noisy_caption = _captioned_world(0.4)
    draw = draw_swaps(pool, trusted, text, seed=1)
    one_by_one = matched_context(draw, text, noisy_image, noisy_caption)
    assert not one_by_one.whole
    assert labelled_contexts(draw, one_by_one) == (one_by_one, one_by_one)


def test_the_kind_of_swap_is_decided_once_over_every_space() -> None:
    from core.detect.context import QUANTILES, context_at, context_fits, draw_swaps, image_means, swapped_whole
    # (grid point, distance) per kind: three spaces find captions swapped one by one nearer, by 0.02 each; one
    # (a text tower that barely tells them apart) finds whole images nearer by 0.01: the split's kind wins
    one = {False: ((0.6, 0.25, False), 0.03), True: ((0.85, 0.0, True), 0.05)}
    text = {False: ((0.7, 0.0, False), 0.04), True: ((0.85, 0.0, True), 0.03)}
    assert swapped_whole([one, one, one, text]) is False        # 0.03 × 3 + 0.04 = 0.13 < 0.05 × 3 + 0.03
    assert swapped_whole([text]) is True                        # alone, a space takes its own nearer kind
    assert swapped_whole([one, text, text, text]) is True       # 0.05 + 0.03 × 3 = 0.14 < 0.15: summed
    assert swapped_whole([{}, text]) is True and swapped_whole([{}]) is False   # spaces with no siblings abstain
    tie = {False: ((0.5, 0.0, False), 0.02), True: ((0.5, 0.0, True), 0.02)}
    assert swapped_whole([tie]) is False                        # a tie: one by one, as a single space decides
    # on a real draw: the kind forced either way cuts that kind's grid point
    world, pool, trusted, noisy_image, noisy_caption = _captioned_world(0.4)
    draw = draw_swaps(pool, trusted, world, seed=1)
    fits = context_fits(draw, world, noisy_image, noisy_caption)
    assert fits[False][1] < fits[True][1] and not swapped_whole([fits])
    # a kind's distance: its captions' agreement against the noisy split's, plus its images' mean agreement against
    # the noisy images' (what tells the kinds apart: whole images leave an image's captions all clean or all foreign)
    now = sibling_terms(world, pool, noisy_image, noisy_caption)[0]
    for kind in (False, True):
        context = draw.at(*fits[kind][0])
        theirs = sibling_terms(world, context.pool, draw.image, context.stand_in(draw.image, draw.caption))[0]
        gaps = [np.abs(np.quantile(a[np.isfinite(a)], QUANTILES) - np.quantile(b[np.isfinite(b)], QUANTILES)).mean()
                for a, b in [(theirs, now), (image_means(theirs, draw.image), image_means(now, noisy_image))]]
        assert fits[kind][1] == pytest.approx(sum(gaps), abs=1e-12)
    forced = context_at(draw, fits, True)
    assert forced.whole and (forced.rate, forced.share) == fits[True][0][:2]
    assert context_at(draw, {}, True).rate == 0.0                # nothing fitted: nothing swapped


def test_an_image_s_mean_agreement_is_over_its_captions_with_siblings() -> None:
    from core.detect.context import image_means
    agreement = np.array([0.2, np.nan, 0.4, 0.9, 0.7, np.nan])
    image = np.array([3, 3, 3, 1, 1, 5])                      # image 5's one caption has no siblings: left out
    assert image_means(agreement, image).tolist() == pytest.approx([0.8, 0.3])   # images 1 and 3, in row order
    assert image_means(np.array([np.nan]), np.array([0])).tolist() == []


def test_no_context_is_fitted_without_siblings_or_trusted_images() -> None:
    from core.detect.context import draw_swaps, matched_context
    text = unit((1, 0), (0, 1), (1, 1), (1, -1))
    single = Pool.from_pairs(np.arange(4), np.arange(4), 4, 4)        # one caption an image: no siblings
    context = matched_context(draw_swaps(single, np.array([3]), text), text, np.arange(3), np.arange(3))
    assert context.rate == 0.0 and context.pool.members.toarray().tolist() == single.members.toarray().tolist()
    pool = Pool.from_pairs(np.array([0, 0, 1, 1]), np.arange(4), 2, 4)
    nobody = matched_context(draw_swaps(pool, np.array([], np.int64), text), text, np.array([0, 0]), np.array([0, 1]))
    assert nobody.rate == 0.0 and len(nobody.swapped_keys) == 0     # no trusted image: nothing to swap


def test_one_caption_an_image_fits_no_context_and_review_says_none(store) -> None:
    """Where no image has a second caption there is no sibling agreement to match: no space records a context,
    so Review shows no line about one (it said "swapped at 0 %")."""
    from core.detect.explain import context_summary
    from core.generated import GenerateOptions, create_generated
    from core.progress import Progress
    from core.training import execute_run, start_run
    create_generated(store, "one", GenerateOptions(images=40, noise=0.4, captions=1, seed=3))
    execute_run(store, start_run(store, "one", "b1", epochs=1, settings={"batch_size": 32}), Progress())
    run_id = start_run(store, "one", "concord", settings={"fast_b1_lr": 0}, meta_fraction=0.125)
    execute_run(store, run_id, Progress())
    run = store.run(run_id)
    assert run.state == "finished" and run.metrics["context"] == {} and context_summary(run.metrics["context"]) == ""
    assert run.metrics["fused"]["labelled"]["positives"] > 0


def test_the_run_fits_on_the_matched_context_and_a_refit_uses_the_same(fused_run) -> None:
    from core import artifacts
    from core.detect.method import CACHE_FILE, refit
    store, b1, run_id = fused_run
    run = store.run(run_id)
    assert set(run.metrics["context"]) == {f"b1#{b1}", "text"}
    assert all(0.0 <= c["rate"] <= 1.0 and 0.0 <= c["near_miss_share"] <= 1.0 for c in run.metrics["context"].values())
    assert len({c["whole_images"] for c in run.metrics["context"].values()}) == 1    # one kind for every space
    pairs = store.pairs_frame(run.dataset_id)
    with np.load(artifacts.run_dir(run) / CACHE_FILE) as z:
        names, x, x_fit, pair_ids = list(z["names"]), z["x"], z["x_fit"], z["pair_ids"]
    split = pairs.set_index("pair_id").loc[pair_ids, "split"].to_numpy()
    # only the trusted (val) images' sibling terms and similarity margins are in the swapped context; the noisy split's
    # are as scored
    assert np.array_equal(x_fit[split == "train"], x[split == "train"], equal_nan=True)
    other = [j for j, n in enumerate(names) if "sibling" not in n and not n.endswith(".similarity_margin")]
    assert np.array_equal(x_fit[:, other], x[:, other], equal_nan=True)
    assert max(c["rate"] for c in run.metrics["context"].values()) > 0      # 40 % near misses: something swapped
    assert not np.array_equal(x_fit[split == "val"], x[split == "val"], equal_nan=True)
    # with no new decision, a refit learns from the same rows and so gives the run's own scores back
    before = store.scores_frame(run_id).set_index("pair_id")["clean_prob"]
    refit(store, run_id)
    after = store.scores_frame(run_id).set_index("pair_id")["clean_prob"]
    assert np.allclose(before.loc[pair_ids].to_numpy(), after.loc[pair_ids].to_numpy())
    # a run cached before the matched context (no `x_fit`) still refits, on its signals as scored
    with np.load(artifacts.run_dir(run) / CACHE_FILE) as z:
        old = {k: z[k] for k in z.files if k != "x_fit"}
    artifacts.atomic_save_npz(artifacts.run_dir(run) / CACHE_FILE, **old)
    assert refit(store, run_id)["labelled"]["positives"] > 0
    moved = store.scores_frame(run_id).set_index("pair_id")["clean_prob"]
    assert moved.between(0, 1).all() and not np.allclose(moved.loc[pair_ids].to_numpy(), after.loc[pair_ids].to_numpy())


def test_a_fused_run_resumes_an_interrupted_b1_instead_of_training_another(store) -> None:
    """The first start killed while its b1 trained: resuming the fused run finishes that b1 from its checkpoint
    (no second b1 is trained) and fuses it."""
    from core.generated import GenerateOptions, create_generated
    from core.progress import Progress
    from core.training import execute_run, start_run
    create_generated(store, "demo", GenerateOptions(images=40, noise=0.4, noise_kind="hard", seed=3))
    b1 = start_run(store, "demo", "b1", epochs=1, settings={"batch_size": 32})
    store.update_run(b1, state="interrupted")
    fused = start_run(store, "demo", "concord", settings={"fast_b1_lr": 0}, meta_fraction=0.125)
    execute_run(store, fused, Progress())
    assert [(r.id, r.method, r.state) for r in store.runs()] == [(fused, "concord", "finished"),
                                                                 (b1, "b1", "finished")]
