"""MSCN (methods.md §3): the math by hand, the bi-level gradient, meta-data, purification, runs and resume."""
from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from core.errors import ConcordError
from core.methods import make_config, method_class
from core.methods.data import MetaData
from core.methods.encoder import DualEncoder, ResidualHead
from core.methods.mscn import (MSCN, MSCNHead, hinge_hardest, purification_posterior, random_negatives, sharpen,
                               virtual_parameters, weighted_infonce)
from tests.engine_fixtures import cancelled_then_resumed, context, synthetic_problem

FAST = {"epochs": 3, "batch_size": 32, "lr": 3e-3, "warmup_steps": 3, "meta_lr": 3e-3, "meta_batch_size": 16,
        "warmup_epochs": 1, "co_training": False}


def _mscn(data, inputs, checkpoint=None, progress=None, **values) -> MSCN:
    cfg = make_config("mscn", FAST | values)
    return method_class("mscn")(cfg, context(data, inputs, checkpoint=checkpoint, progress=progress))


def _small(**kw):
    return synthetic_problem(n_images=60, **kw)


# ------------------------------------------------------------------------------------------------ the math
def test_sharpen_exact_values() -> None:
    p = torch.tensor([0.5, 0.8, 0.1, 1.0, 0.0], dtype=torch.float64)
    expected = [0.5, 0.64 / 0.68, 0.01 / 0.82, 1.0, 0.0]
    assert sharpen(p).tolist() == pytest.approx(expected, abs=1e-12)


S3 = torch.tensor([[0.9, 0.5, 0.2],
                   [0.6, 0.4, 0.3],
                   [0.1, 0.8, 0.7]], dtype=torch.float64)
M3 = torch.tensor([0.2, 0.1, 0.0], dtype=torch.float64)


def test_hinge_margin_is_indexed_by_the_anchor_in_both_directions() -> None:
    # image→text (row k, margin m_k): row 0: 0; row 1: 0.1+0.6-0.4 = 0.3; row 2: 0+0.8-0.7 = 0.1
    # text→image (column k, margin m_k): column 0: 0; column 1: 0.1+0.8-0.4 = 0.5; column 2: 0
    assert hinge_hardest(S3, M3).tolist() == pytest.approx([0.0, 0.8, 0.1], abs=1e-12)
    # the released code's image→text term broadcasts the margin along the captions (m_j instead of m_k)
    off = ~torch.eye(3, dtype=torch.bool)
    d = S3.diagonal()
    i2t_bug = ((M3[None, :] + S3 - d[:, None]).clamp(min=0) * off).max(dim=1).values
    t2i = ((M3[None, :] + S3 - d[None, :]).clamp(min=0) * off).max(dim=0).values
    assert float((i2t_bug + t2i).sum()) == pytest.approx(1.1, abs=1e-12)   # rows: 0, 0.4, 0.2
    assert float(hinge_hardest(S3, M3).sum()) == pytest.approx(0.9, abs=1e-12)


def test_only_the_low_scoring_anchor_changes_its_terms() -> None:
    scores = torch.rand(6, 6, generator=torch.Generator().manual_seed(0), dtype=torch.float64) * 0.5
    scores.diagonal().copy_(torch.full((6,), 0.4, dtype=torch.float64))
    full = hinge_hardest(scores, torch.full((6,), 0.2, dtype=torch.float64))
    low = torch.full((6,), 0.2, dtype=torch.float64)
    low[3] = 0.2 * sharpen(torch.tensor(0.05, dtype=torch.float64))
    changed = hinge_hardest(scores, low)
    assert (full > 0).all()
    assert torch.equal(torch.cat([changed[:3], changed[4:]]), torch.cat([full[:3], full[4:]]))
    assert changed[3] < full[3]


def test_shared_cells_are_not_negatives() -> None:
    shared = torch.zeros(3, 3, dtype=torch.bool)
    shared[1, 0] = shared[0, 1] = True          # pairs 0 and 1 share an image
    # row 1 loses its 0.3 from column 0 (now 0.1+0.3-0.4 = 0); column 1 keeps image 2 (0.5)
    assert hinge_hardest(S3, M3, shared).tolist() == pytest.approx([0.0, 0.5, 0.1], abs=1e-12)


def test_weighted_infonce_weights_each_pair_loss() -> None:
    scores = torch.tensor([[1.0, 0.0], [0.0, 1.0]], dtype=torch.float64)
    scale = torch.tensor(0.0, dtype=torch.float64)             # logits = scores
    one = np.log(1 + np.exp(-1.0))                              # CE of [1, 0] at the target 0
    got = weighted_infonce(scores, torch.tensor([1.0, 0.5], dtype=torch.float64), scale)
    assert got.tolist() == pytest.approx([one, 0.5 * one], abs=1e-12)


@pytest.mark.parametrize("square_diff", [False, True])
def test_head_matrix_equals_the_head_on_every_combination(square_diff: bool) -> None:
    torch.manual_seed(0)
    head = MSCNHead(8, 16, square_diff).double()
    f = torch.nn.functional.normalize(torch.randn(4, 8, dtype=torch.float64), dim=-1)
    g = torch.nn.functional.normalize(torch.randn(5, 8, dtype=torch.float64), dim=-1)
    each = head(f[:, None, :].expand(4, 5, 8).reshape(-1, 8), g[None].expand(4, 5, 8).reshape(-1, 8))
    assert torch.allclose(head.matrix(f, g), each.reshape(4, 5), atol=1e-12)
    assert ((head.matrix(f, g) > 0) & (head.matrix(f, g) < 1)).all()


def test_a_fresh_head_ranks_by_the_cosine() -> None:
    torch.manual_seed(0)
    head = MSCNHead(32, 64).double()
    f = torch.nn.functional.normalize(torch.randn(200, 32, dtype=torch.float64), dim=-1)
    g = torch.nn.functional.normalize(torch.randn(200, 32, dtype=torch.float64), dim=-1)
    with torch.no_grad():
        by_cos = head(f, g)[torch.argsort((f * g).sum(-1))]
        assert (torch.diff(by_cos) > -1e-3).all() and by_cos[-1] - by_cos[0] > 0.9
        assert float(head(f[:1], torch.zeros(1, 32, dtype=torch.float64))) == pytest.approx(0.5, abs=1e-6)
        assert float(head(f[:1], f[:1])) > 0.99


# ------------------------------------------------------------------------------------------------ meta-data
def test_random_negatives_are_never_true_pairs() -> None:
    images = np.array([0, 1, 2])
    captions = np.array([0, 1, 2, 3, 4, 5])
    own = np.array([0 * 6 + 0, 0 * 6 + 1, 1 * 6 + 2, 1 * 6 + 3, 2 * 6 + 4, 2 * 6 + 5])   # image i owns 2i, 2i+1
    img, cap = random_negatives(images, captions, own, 6, 500, np.random.default_rng(0))
    assert len(img) == len(cap) == 500
    assert not np.isin(img * 6 + cap, own).any()
    assert set(img) == {0, 1, 2} and set(cap) == set(range(6))
    with pytest.raises(ConcordError, match="every caption of the meta-data positives belongs to their images"):
        random_negatives(np.array([0]), np.array([0, 1]), own, 6, 3, np.random.default_rng(0))


def test_meta_set_is_balanced_with_hard_negatives_kept() -> None:
    data, inputs = _small()
    meta = data.meta
    hard = MetaData(meta.image_row[:3], (meta.caption_row[:3] + 7) % len(data.caption_ids), np.zeros(3, np.int64),
                    np.full(3, -1))
    data = replace(data, meta=MetaData(*(np.concatenate([a, b]) for a, b in
                                         zip((meta.image_row, meta.caption_row, meta.label, meta.pair_index),
                                             (hard.image_row, hard.caption_row, hard.label, hard.pair_index)))))
    method = _mscn(data, inputs)
    method.setup()
    method.begin_epoch(0)
    images, captions, labels = method.meta_set()
    assert (labels == 1).sum() == (labels == 0).sum() == len(meta)
    negatives = labels == 0
    assert not np.isin(images[negatives] * len(data.caption_ids) + captions[negatives], method.own).any()
    assert set(zip(hard.image_row, hard.caption_row)) <= set(zip(images[negatives], captions[negatives]))
    first = method.negatives
    method.begin_epoch(1)
    assert not np.array_equal(first[1], method.negatives[1])       # redrawn every epoch
    _, _, batch_labels = method.meta_batch(np.random.default_rng(0))
    assert (batch_labels == 1).sum() == (batch_labels == 0).sum() == 8


def test_refuses_without_meta_data_and_says_how_to_add_it() -> None:
    data, inputs = _small()
    with pytest.raises(ConcordError, match=r"has none: add trusted pairs: `python -m core meta NAME seed"):
        _mscn(replace(data, meta=MetaData.empty()), inputs).run()
    only_negatives = replace(data.meta, label=np.zeros(len(data.meta), np.int64))
    with pytest.raises(ConcordError, match=f"only {len(data.meta)} mismatched ones"):
        _mscn(replace(data, meta=only_negatives), inputs).run()
    with pytest.raises(ConcordError, match="at least one epoch after its 3 warm-up"):
        make_config("mscn", {"epochs": "3", "warmup_epochs": "3"})


# ------------------------------------------------------------------------------------------------ bi-level step
def test_virtual_parameters_are_each_towers_last_layer_or_all() -> None:
    enc = DualEncoder(ResidualHead(6, 4, 8), torch.nn.Linear(5, 4, bias=False))
    assert [n for n, _ in virtual_parameters(enc, "last")] == ["image_tower.mlp.2.weight", "image_tower.mlp.2.bias",
                                                               "text_tower.weight"]
    enc.text_tower.weight.requires_grad_(False)
    assert [n for n, _ in virtual_parameters(enc, "last")] == ["image_tower.mlp.2.weight", "image_tower.mlp.2.bias"]
    assert len(virtual_parameters(enc, "all")) == 1 + 5     # logit_scale, the projection and the MLP's two linears


def _meta_grads(method: MSCN, eta: float, detach: bool) -> torch.Tensor:
    net = method.nets[0]
    meta = method.meta_batch(np.random.default_rng(1))
    loss, _, _ = method.virtual_meta_loss(net, method.data.train[:16], meta, eta, detach_virtual=detach)
    return torch.cat([g.flatten() for g in torch.autograd.grad(loss, list(net.head.parameters()))])


@pytest.mark.parametrize("which", ["last", "all"])
def test_meta_gradient_reaches_the_head_through_the_virtual_step(which: str) -> None:
    data, inputs = _small()
    torch.manual_seed(0)
    method = _mscn(data, inputs, virtual_params=which)
    method.setup()
    method.begin_epoch(1)
    full = _meta_grads(method, 0.5, detach=False)
    direct = _meta_grads(method, 0.5, detach=True)
    through = full - direct
    assert direct.norm() > 0 and through.norm() > 1e-3 * full.norm()
    # the direct part is the plain gradient of the meta loss at fixed weights θ' (no path from φ to θ')
    net = method.nets[0]
    pairs = data.train[:16]
    f, g = method._encode(net, pairs)
    loss = method.main_loss(net, f, g, pairs, method._weights(net, f, g))
    params = [p for _, p in virtual_parameters(net.encoder, which)]
    grads = torch.autograd.grad(loss, params, allow_unused=True)
    with torch.no_grad():
        for p, d in zip(params, grads):
            if d is not None:
                p -= 0.5 * d
    images, captions, labels = method.meta_batch(np.random.default_rng(1))
    scores = net.head(net.encoder.encode_image(inputs.image_batch(images)),
                      net.encoder.encode_text(inputs.text_batch(captions)))
    bce = torch.nn.functional.binary_cross_entropy(scores, torch.as_tensor(labels, dtype=torch.float32))
    by_hand = torch.cat([g.flatten() for g in torch.autograd.grad(bce, list(net.head.parameters()))])
    assert torch.allclose(direct, by_hand, atol=1e-6)
    # with no virtual step (η = 0) there is no second path at all
    with torch.no_grad():
        for p, d in zip(params, grads):
            if d is not None:
                p += 0.5 * d
    assert torch.allclose(_meta_grads(method, 0.0, False), _meta_grads(method, 0.0, True), atol=1e-7)


# ------------------------------------------------------------------------------------------------ purification
def test_purification_recovers_hand_made_components() -> None:
    train = np.array([0.05, 0.1, 0.15, 0.2, 0.75, 0.8, 0.85, 0.9, 0.95])
    posterior = purification_posterior(train, train, meta_pos=np.array([0.8, 0.9, 0.85]),
                                       meta_neg=np.array([0.1, 0.15, 0.2]))
    assert (posterior[:4] < 0.5).all() and (posterior[4:] > 0.5).all()
    assert np.all(np.diff(posterior) >= 0)


def test_purification_splits_synthetic_beta_scores() -> None:
    rng = np.random.default_rng(0)
    noisy, clean = rng.beta(2, 8, 400), rng.beta(8, 2, 600)
    scores = np.concatenate([noisy, clean])
    posterior = purification_posterior(scores, scores, rng.beta(8, 2, 50), rng.beta(2, 8, 50))
    truth = np.r_[np.zeros(400), np.ones(600)]
    assert ((posterior > 0.5) == truth).mean() > 0.97
    # degenerate input (every score equal, meta scores at the clamp) stays finite
    flat = purification_posterior(np.full(5, 0.5), np.full(5, 0.5), np.ones(3), np.zeros(3))
    assert np.isfinite(flat).all()


# ------------------------------------------------------------------------------------------------ runs
@pytest.mark.parametrize("main_loss", ["infonce", "hinge"])
def test_run_separates_noisy_pairs_and_purified_pairs_sit_out_one_epoch(main_loss: str) -> None:
    data, inputs = synthetic_problem()
    method = _mscn(data, inputs, epochs=4, main_loss=main_loss)
    result = method.run()
    train = data.train
    noisy = data.is_noisy[train] == 1
    assert result.clean_prob[train][noisy].mean() < 0.5 < result.clean_prob[train][~noisy].mean()
    assert np.array_equal(result.weight, result.extras["mscn"])
    assert ((result.weight > 0) & (result.weight < 1)).all()
    log = result.metrics["epochs"]
    # no purification by the warm-up head: the first meta epoch trains on every pair
    assert "purified" not in log[0] and log[1]["pairs"] == len(train)
    assert [e["pairs"] for e in log[2:]] == [len(train) - e["purified"] for e in log[1:-1]]
    assert "purified" not in log[-1] and "meta_loss" not in log[0] and "meta_loss" in log[1]
    assert result.metrics["retrieval"]["rsum"] > 250
    # retrieval ranks by the MSCN score, not the cosine
    rows = np.arange(5)
    img, cap = method.embed_rows(method.encoder, rows, rows)
    assert not np.allclose(method.retrieval_similarity(rows, rows), img @ cap.T)


def test_a_degenerate_split_purifies_nothing() -> None:
    data, inputs = _small()
    method = _mscn(data, inputs)
    method.setup()
    method.begin_epoch(0)
    method.score_net = lambda net: (np.full(len(data), 0.5), np.full(len(data), 0.5))
    assert "purified" not in method.end_epoch(0)       # the warm-up epoch does not purify
    assert method.end_epoch(1)["purified"] == 0
    assert np.array_equal(method.epoch_pairs(2), data.train)


def test_co_training_each_network_trains_on_what_its_partner_kept() -> None:
    data, inputs = _small()
    method = _mscn(data, inputs, co_training=True)
    method.setup()
    a, b = method.nets
    a.keep = np.zeros(len(data), bool)
    a.keep[data.train[:10]] = True             # a's purification kept only ten pairs
    seen = {}

    def record(net, pairs):
        seen[id(net)] = pairs
        return {"loss": 0.0}
    method.warmup_step = record
    method.train_batch(0, data.train[:32])
    assert np.array_equal(seen[id(a)], data.train[:32]) and np.array_equal(seen[id(b)], data.train[:10])
    method = _mscn(data, inputs, co_training=True)
    result = method.run()
    assert np.isfinite(result.clean_prob).all() and "meta_loss" in result.metrics["epochs"][-1]
    # the run's scores are the two networks' averaged
    (p_a, clean_a), (p_b, clean_b) = (method.score_net(net) for net in method.nets)
    assert not np.allclose(p_a, p_b)
    assert np.allclose(result.weight, (p_a + p_b) / 2) and np.allclose(result.clean_prob, (clean_a + clean_b) / 2)
    rows, both = np.arange(5), method.nets
    together = method.retrieval_similarity(rows, rows)
    each = []
    for net in both:
        method.nets = [net]
        each.append(method.retrieval_similarity(rows, rows))
    assert np.allclose(together, (each[0] + each[1]) / 2)


def test_co_training_purified_is_the_mean_over_the_networks() -> None:
    data, inputs = _small()
    method = _mscn(data, inputs, co_training=True)
    method.setup()
    method.begin_epoch(1)
    a, b = method.nets
    aside = {id(a): data.train[:4], id(b): data.train[4:14]}     # a sets 4 pairs aside, b 10

    def posterior(net):
        clean = np.ones(len(data))
        clean[aside[id(net)]] = 0.1
        return clean, clean
    method.score_net = posterior
    assert method.end_epoch(1)["purified"] == 7
    assert np.flatnonzero(~a.keep).tolist() == data.train[:4].tolist()
    assert np.flatnonzero(~b.keep).tolist() == data.train[4:14].tolist()


def test_co_training_is_the_default() -> None:
    assert make_config("mscn").co_training is True


def test_cancel_then_resume_gives_the_uninterrupted_scores(tmp_path: Path) -> None:
    data, inputs = _small()
    whole, resumed = cancelled_then_resumed(lambda **kw: _mscn(data, inputs, co_training=True, **kw),
                                            tmp_path / "ckpt.pt", step=1)
    assert np.allclose(resumed.clean_prob, whole.clean_prob, atol=1e-6)
    assert np.allclose(resumed.weight, whole.weight, atol=1e-6)
    assert resumed.metrics["retrieval"] == pytest.approx(whole.metrics["retrieval"])
