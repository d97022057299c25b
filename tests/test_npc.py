"""NPC (methods.md §2): its pure arithmetic, the memory bank, one batch against a naive reference, warm-up,
the released-code switch, outputs and exact resume."""
from __future__ import annotations

import copy
import dataclasses
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

import core.methods.npc as npc_module
from core.errors import ConcordError
from core.methods import make_config, method_class
from core.methods.b1 import make_adamw
from core.methods.data import MetaData
from core.methods.encoder import DualEncoder
from core.methods.losses import per_sample_infonce
from core.methods.npc import (BankPool, memory_entries, mode_invariant, negative_impact, npc_objective, npc_weight)
from tests.engine_fixtures import cancelled_then_resumed, context, synthetic_problem

SMALL = {"epochs": 3, "batch_size": 16, "lr": 3e-3, "warmup_steps": 2, "warmup_epochs": 1}


def _npc(data, inputs, method="npc", checkpoint=None, progress=None, pretrained=False, **values):
    cfg = make_config(method, SMALL | values)
    ctx = context(data, inputs, checkpoint=checkpoint, progress=progress)
    return method_class(method)(cfg, dataclasses.replace(ctx, image_pretrained=pretrained))


# ---------------------------------------------------------------------------------------------- pure math
def test_weight_is_tanh_below_one_and_exactly_one_at_and_above() -> None:
    r = torch.tensor([0.0, 0.5, 0.999, 1.0, 1.0001, 7.0])
    w = npc_weight(r)
    assert w[:3].tolist() == pytest.approx([0.0, math.tanh(0.5), math.tanh(0.999)])
    assert w[3:].tolist() == [1.0, 1.0, 1.0]
    assert math.tanh(0.999) < 0.762          # a harmful sample weighs at most tanh(1) ≈ 0.76


def test_negative_impact_from_hand_made_losses() -> None:
    l0_i, l1_i = torch.tensor([1.0, 2.0, 3.0]), torch.tensor([2.0, 1.0, 0.0])
    l0_t, l1_t = torch.tensor([3.0, 1.0, 1.0]), torch.tensor([1.0, 4.0, 1.0])
    r = negative_impact(l0_i, l1_i, l0_t, l1_t, eps=0.0)
    assert r[:2].tolist() == [(1 / 2 + 3 / 1) / 2, (2 / 1 + 1 / 4) / 2]     # 1.75, 1.125
    assert math.isinf(r[2])
    r = negative_impact(l0_i, l1_i, l0_t, l1_t, eps=0.5)
    assert r.tolist() == pytest.approx([(1 / 2.5 + 3 / 1.5) / 2, (2 / 1.5 + 1 / 4.5) / 2, (3 / 0.5 + 1 / 1.5) / 2])
    # learning the batch raised both entries' losses: r < 1 and the weight drops below tanh(1)
    r = negative_impact(torch.tensor([1.0]), torch.tensor([2.0]), torch.tensor([2.0]), torch.tensor([4.0]), 0.0)
    assert r.item() == 0.5 and npc_weight(r).item() == pytest.approx(math.tanh(0.5))


def test_objective_paper_versus_released_arithmetic_and_gradients() -> None:
    a = torch.tensor([1.0, 3.0], requires_grad=True)      # per-sample losses l
    b = torch.tensor(2.0, requires_grad=True)             # the memory-bank loss L_MB
    w = torch.tensor([0.5, 1.0])
    assert npc_objective(a * 1, w, b * 1).item() == pytest.approx((0.5 * 1 + 1 * 3) / 2 + 2)      # 3.75
    assert npc_objective(a * 1, w, b * 1, released=True).item() == pytest.approx(0.75 * 2 + 2)   # 3.5
    npc_objective(a * 1, w, b * 1).backward()
    assert a.grad.tolist() == [0.25, 0.5] and b.grad.item() == 1.0          # per-sample weights, L_MB trains
    a.grad = b.grad = None
    npc_objective(a * 1, w, b * 1, released=True).backward()
    assert a.grad.tolist() == [0.375, 0.375] and b.grad is None              # batch-mean weight, L_MB inert
    a.grad = None
    npc_objective(a * 1, torch.zeros(2), b * 1).backward()                   # every w = 0: L_MB still trains
    assert a.grad.tolist() == [0.0, 0.0] and b.grad.item() == 1.0


def test_memory_entries_equal_brute_force_on_six_pairs() -> None:
    rng = np.random.default_rng(3)
    image_emb, caption_emb = rng.normal(size=(6, 4)), rng.normal(size=(6, 4))
    image_emb[4] = image_emb[1] * 2.0           # pair 4's image is pair 1's (same direction)
    clean = np.array([True, True, False, True, False, True])
    i_entry, t_entry = memory_entries(image_emb, caption_emb, clean)

    def brute(x: np.ndarray) -> np.ndarray:
        x = x / np.linalg.norm(x, axis=1, keepdims=True)
        sim = x @ x.T
        sim[:, ~clean] = -np.inf
        np.fill_diagonal(sim, -np.inf)          # never the pair itself
        return sim.argmax(axis=1)
    assert i_entry.tolist() == brute(image_emb).tolist()
    assert t_entry.tolist() == brute(caption_emb).tolist()
    assert i_entry[4] == 1 and i_entry[1] != 1 and clean[i_entry].all() and clean[t_entry].all()
    only = np.array([False, False, True, False, False, False])   # one clean pair: it has no entry but others do
    i_entry, _ = memory_entries(image_emb, caption_emb, only)
    assert i_entry.tolist() == [2, 2, -1, 2, 2, 2]


def test_bank_pool_forces_meta_positives_in_and_negatives_out() -> None:
    data, _ = synthetic_problem(n_images=20, n_meta=3)
    train = data.train
    meta = MetaData(np.r_[data.meta.image_row, data.image_row[train[:2]]],
                    np.r_[data.meta.caption_row, data.caption_row[train[:2]]],
                    np.r_[data.meta.label, 1, 0], np.r_[data.meta.pair_index, train[:2]])
    pool = BankPool.from_data(dataclasses.replace(data, meta=meta))
    assert len(pool) == len(train) + 3 and pool.n_train == len(train)      # val positives join the pool
    assert pool.image_row[:len(train)].tolist() == data.image_row[train].tolist()
    assert pool.caption_row[:len(train)].tolist() == data.caption_row[train].tolist()
    verdict = np.zeros(len(train), bool)
    verdict[1] = verdict[2] = True
    clean = pool.clean(verdict)
    assert clean[0] and not clean[1] and clean[2]            # positive in despite the GMM, negative out despite it
    assert clean[len(train):].all() and clean.sum() == 5


# ---------------------------------------------------------------------------------------------- the method
def test_meta_positive_in_bank_despite_high_loss_and_negative_never() -> None:
    data, inputs = synthetic_problem()
    train = data.train
    noisy = train[data.is_noisy[train] == 1]
    clean_pairs = train[data.is_noisy[train] == 0]
    pos, neg = noisy[0], clean_pairs[:5]
    meta = MetaData(data.image_row[np.r_[pos, neg]], data.caption_row[np.r_[pos, neg]],
                    np.r_[1, np.zeros(5, np.int64)], np.r_[pos, neg])
    data = dataclasses.replace(data, meta=meta)
    method = _npc(data, inputs)
    method.setup()
    for b in range(0, len(train), 16):                       # the warm-up epoch
        method.train_batch(0, np.sort(train)[b:b + 16])
    method.begin_epoch(1)
    losses = method.per_sample_losses(method.model, train, 0)
    assert losses[np.searchsorted(train, pos)] > np.quantile(losses, 0.75)   # a high loss …
    row = method.pool_row[pos]
    assert method.clean[row]                                 # … yet in the bank,
    assert row in method.i_entry or row in method.t_entry    # and the entry of some pair
    neg_rows = method.pool_row[neg]
    assert not method.clean[neg_rows].any()
    assert not np.isin(neg_rows, method.i_entry).any() and not np.isin(neg_rows, method.t_entry).any()
    own = method.pool_row[train]
    assert (method.i_entry[own] != own).all() and (method.t_entry[own] != own).all()


def _tower(dim_in: int, norm: bool) -> nn.Module:
    layers = [nn.Linear(dim_in, 32), nn.BatchNorm1d(32) if norm else nn.Identity(), nn.GELU(), nn.Linear(32, 16)]
    return nn.Sequential(*layers)


def _naive_batch(method, batch: np.ndarray, released: bool) -> DualEncoder:
    """A's weights after one NPC batch computed the long way: a separate A′ with its own forwards."""
    cfg, data, inputs, pool = method.config, method.data, method.inputs, method.pool
    model = copy.deepcopy(method.model)
    opt = make_adamw(model.parameters(), cfg)
    opt.load_state_dict(method.opt.state_dict())
    siamese = copy.deepcopy(model)
    siamese_opt = make_adamw(siamese.parameters(), cfg)
    for o in (opt, siamese_opt):
        method.set_lr(o)
    rows = method.pool_row[batch]
    i_uni, i_inv = np.unique(method.i_entry[rows], return_inverse=True)
    t_uni, t_inv = np.unique(method.t_entry[rows], return_inverse=True)

    def entries(enc):
        both = np.r_[i_uni, t_uni]
        img_rows, img_at = np.unique(pool.image_row[both], return_inverse=True)     # each image once
        cap_rows, cap_at = np.unique(pool.caption_row[both], return_inverse=True)
        img = enc.encode_image(inputs.image_batch(img_rows))[torch.as_tensor(img_at)]
        txt = enc.encode_text(inputs.text_batch(cap_rows))[torch.as_tensor(cap_at)]
        n, scale = len(i_uni), enc.logit_scale.exp().clamp(max=100)
        return (per_sample_infonce(scale * img[:n] @ txt[:n].T), per_sample_infonce(scale * img[n:] @ txt[n:].T))
    siamese.eval()
    with torch.no_grad():
        l0 = entries(siamese)
    siamese.train()
    siamese_opt.zero_grad()
    per_sample_infonce(method.pair_logits(siamese, batch)).mean().backward()
    siamese_opt.step()
    siamese.eval()
    with torch.no_grad():
        l1 = entries(siamese)
    r = ((l0[0] / (l1[0] + cfg.eps))[i_inv] + (l0[1] / (l1[1] + cfg.eps))[t_inv]) / 2
    w = torch.where(r < 1, torch.tanh(r), torch.ones_like(r))
    model.train()
    l = per_sample_infonce(method.pair_logits(model, batch))
    if released:
        loss = w.mean() * l.mean()
    else:
        mb = entries(model)
        loss = (w * l).mean() + ((mb[0][i_inv] + mb[1][t_inv]) / 2).mean()
    opt.zero_grad()
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
    opt.step()
    return model


@pytest.mark.parametrize("norm,released,shared", [(False, False, True), (False, False, False), (True, False, False),
                                                  (True, True, False), (False, True, True)])
def test_one_batch_equals_a_naive_siamese_computation(norm: bool, released: bool, shared: bool) -> None:
    """Shared forwards (L0 from A, A′'s step from A's forward, one forward for towers without train/eval
    differences) give what a separate A′ with its own passes gives, with and without batch norm."""
    data, inputs = synthetic_problem(n_images=40)
    ctx = context(data, inputs)

    def make(seed: int) -> DualEncoder:
        torch.manual_seed(seed)
        return DualEncoder(_tower(16, norm), _tower(16, norm))
    cfg = make_config("npc-released" if released else "npc", SMALL | {"warmup_epochs": 0})
    method = method_class("npc")(cfg, dataclasses.replace(ctx, make_encoder=make, image_pretrained=True))
    method.setup()
    assert method._shared == (not norm) == mode_invariant(method.model)
    method._shared = shared
    method.begin_epoch(0)
    batch = data.train[:16]
    assert (method.i_entry[method.pool_row[batch]] >= 0).all()
    expected = _naive_batch(method, batch, released)
    method.train_batch(0, batch)
    for p, q in zip(method.model.state_dict().values(), expected.state_dict().values()):
        assert torch.allclose(p.float(), q.float(), atol=1e-5)


def test_every_w_zero_still_trains_through_the_memory_bank_except_released(monkeypatch) -> None:
    data, inputs = synthetic_problem(n_images=40)
    monkeypatch.setattr(npc_module, "npc_weight", lambda r: torch.zeros_like(r))
    norms = {}
    for method_name in ("npc", "npc-released"):
        method = _npc(data, inputs, method_name, pretrained=True)
        method.setup()
        method.begin_epoch(0)
        metrics = method.train_batch(0, data.train[:16])
        assert metrics["mean_w"] == 0.0 and metrics["l_mb"] > 0
        norms[method_name] = sum(float(p.grad.norm()) for p in method.model.parameters() if p.grad is not None)
    assert norms["npc"] > 1e-3 and norms["npc-released"] == 0.0


def test_warmup_epochs_for_a_tower_trained_from_scratch_only() -> None:
    data, inputs = synthetic_problem(n_images=20)
    with pytest.raises(ConcordError, match="epochs must be at least 2, got 1"):
        _npc(data, inputs, epochs=1).run()
    method = _npc(data, inputs, epochs=2)
    assert [e.get("warmup", False) for e in method.run().metrics["epochs"]] == [True, False]
    method = _npc(data, inputs, epochs=1, pretrained=True)    # a pretrained tower: NPC at once
    assert "clean_in_bank" in method.run().metrics["epochs"][0]


def test_run_on_the_synthetic_fixture_gives_valid_outputs() -> None:
    data, inputs = synthetic_problem()
    result = _npc(data, inputs).run()
    train = data.train
    n = len(data)
    assert result.clean_prob.shape == result.weight.shape == result.similarity.shape == (n,)
    assert set(result.extras) == {"r"}
    assert ((result.clean_prob >= 0) & (result.clean_prob <= 1)).all()
    assert ((result.weight >= 0) & (result.weight <= 1)).all()
    r = result.extras["r"]
    assert np.isfinite(r[train]).all() and np.isnan(np.delete(r, train)).all()
    assert np.allclose(result.weight[train], np.where(r[train] < 1, np.tanh(r[train]), 1.0))
    assert (result.weight[np.delete(np.arange(n), train)] == 1).all()        # never trained: weight 1
    noisy = data.is_noisy[train] == 1
    assert result.clean_prob[train][noisy].mean() < 0.5 < result.clean_prob[train][~noisy].mean()
    assert result.metrics["retrieval"]["rsum"] > 300
    last = result.metrics["epochs"][-1]
    assert result.metrics["seconds_per_npc_epoch"] > 0
    assert 0 < last["clean_in_bank"] <= len(train) + len(data.meta) and 0 < last["mean_w"] <= 1


def test_cancel_then_resume_gives_the_uninterrupted_scores(tmp_path: Path) -> None:
    data, inputs = synthetic_problem(n_images=40)
    ckpt = tmp_path / "ckpt.pt"
    make = lambda **kw: _npc(data, inputs, rebuild_bank=True, **kw)  # noqa: E731
    def saved_mid_epoch_two() -> None:
        assert torch.load(ckpt, weights_only=False)["epoch"] == 1
    whole, resumed = cancelled_then_resumed(make, ckpt, step=2, on_cancel=saved_mid_epoch_two)
    assert np.allclose(resumed.clean_prob, whole.clean_prob, atol=1e-6)
    assert np.allclose(resumed.weight, whole.weight, atol=1e-6)
    assert np.allclose(resumed.extras["r"], whole.extras["r"], atol=1e-6, equal_nan=True)
    assert np.allclose(resumed.similarity, whole.similarity, atol=1e-6)


def test_a_batch_without_trusted_neighbours_is_a_plain_update() -> None:
    data, inputs = synthetic_problem(n_images=20, n_meta=0)
    method = _npc(data, inputs, pretrained=True)
    method.setup()
    method.begin_epoch(0)
    method.i_entry[:] = method.t_entry[:] = -1          # as with an empty clean set and no meta-data
    before = [p.detach().clone() for p in method.model.parameters()]
    metrics = method.train_batch(0, data.train[:8])
    assert np.isfinite(metrics["loss"]) and "mean_w" not in metrics
    assert (method.w[data.train[:8]] == 1).all() and np.isnan(method.r[data.train[:8]]).all()
    assert any(not torch.equal(a, b) for a, b in zip(before, method.model.parameters()))
