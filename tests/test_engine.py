"""The method frame: settings, the learning-rate schedule, B1 end to end, and exact resume."""
from __future__ import annotations

from dataclasses import asdict
from pathlib import Path

import numpy as np
import pytest

from core.errors import ConcordError
from core.methods import make_config, method_class, settings
from core.methods.base import Checkpointer, lr_at
from tests.engine_fixtures import cancelled_then_resumed, context, synthetic_problem


def test_settings_parse_and_refuse_unknown_keys() -> None:
    cfg = make_config("b1", {"epochs": "3", "lr": "0.01"})
    assert cfg.epochs == 3 and cfg.lr == 0.01
    assert {s.name for s in settings("b1")} >= {"epochs", "batch_size", "lr", "gmm_max_iter"}
    assert all(s.help for s in settings("b1"))
    with pytest.raises(ConcordError, match="unknown setting.*colour"):
        make_config("b1", {"colour": "red"})
    with pytest.raises(ConcordError, match="epochs='many': expected int"):
        make_config("b1", {"epochs": "many"})
    with pytest.raises(ConcordError, match="unknown method 'x'"):
        make_config("x")


@pytest.mark.parametrize("method, key, value, message", [
    ("b1", "epochs", "0", "epochs=0: must be at least 1"),
    ("b1", "batch_size", "-5", "batch_size=-5: must be at least 2"),       # trained nothing, scored garbage
    ("b1", "eval_batch_size", "0", "eval_batch_size=0: must be at least 1"),
    ("b1", "lr", "nan", "lr=nan: must be a finite number"),
    ("b1", "lr", "-1", "lr=-1.0: must be at least 0"),
    ("b1", "warmup_steps", "-1", "warmup_steps=-1: must be at least 0"),
    ("b1", "checkpoint_every_s", "inf", "checkpoint_every_s=inf: must be a finite number"),
    ("npc", "tau", "1", "tau=1.0: must be below 1"),
    ("npc", "eps", "0", "eps=0.0: must be above 0"),
    ("npc", "rebuild_bank", "on", "rebuild_bank='on': expected true or false (also 1/0, yes/no)"),
    ("mscn", "meta_batch_size", "1", "meta_batch_size=1: must be at least 2"),
    ("concord", "c", "0", "c=0.0: must be above 0"),
    ("concord", "near_miss_share", "1.5", "near_miss_share=1.5: must be at most 1"),
])
def test_settings_out_of_range_are_refused(method, key, value, message) -> None:
    with pytest.raises(ConcordError, match=f"^setting {message}$".replace("(", r"\(").replace(")", r"\)")):
        make_config(method, {key: value})
    assert next(s for s in settings(method) if s.name == key).range is not None or key == "rebuild_bank"


def test_every_numeric_setting_has_a_range_its_default_is_in() -> None:
    """The Train page's number inputs take their ends from the same ranges; no method's default is out of them."""
    from core.methods import METHODS
    for method in METHODS:
        for s in settings(method):
            if s.type in (int, float) and not s.choices and not (method == "b0" and s.name == "epochs"):
                assert s.range is not None and s.range.problem(s.default) is None, (method, s.name)


def test_lr_warms_up_then_decays_to_zero() -> None:
    assert lr_at(0, 100, 1.0, 10) == pytest.approx(0.1)
    assert lr_at(9, 100, 1.0, 10) == pytest.approx(1.0)
    assert lr_at(10, 100, 1.0, 10) == pytest.approx(1.0)
    assert lr_at(55, 100, 1.0, 10) == pytest.approx(0.5)
    assert lr_at(100, 100, 1.0, 10) == pytest.approx(0.0)


def _b1(data, inputs, checkpoint=None, progress=None):
    cfg = make_config("b1", {"epochs": 3, "batch_size": 32, "lr": 3e-3, "warmup_steps": 3})
    return method_class("b1")(cfg, context(data, inputs, checkpoint=checkpoint, progress=progress))


def test_b1_separates_noisy_pairs_and_scores_every_pair() -> None:
    data, inputs = synthetic_problem()
    result = _b1(data, inputs).run()
    train = data.train
    assert len(result.clean_prob) == len(data) and np.isfinite(result.clean_prob).all()
    noisy = data.is_noisy[train] == 1
    assert result.clean_prob[train][noisy].mean() < 0.5 < result.clean_prob[train][~noisy].mean()
    assert result.metrics["retrieval"]["rsum"] > 300
    assert result.embeddings.image_emb.shape == (len(data.image_ids), 16)
    assert np.allclose(np.linalg.norm(result.embeddings.caption_emb, axis=1), 1, atol=1e-5)


def test_a_checkpoint_of_another_architecture_is_refused_with_a_message_and_kept(tmp_path: Path) -> None:
    data, inputs = synthetic_problem()
    ckpt = tmp_path / "ckpt.pt"
    other = _b1(data, inputs)
    other.setup()
    state = other.state()
    state["model"] = {k: v[..., :1] if v.ndim else v for k, v in state["model"].items()}   # narrower layers
    Checkpointer(ckpt).save({"method": "b1", "config": asdict(other.config), "epoch": 1, "batch": 0, "step": 3,
                             "epoch_log": [], "epoch_seconds": [], "rng": {}, "state": state})
    before = ckpt.read_bytes()
    with pytest.raises(ConcordError, match="checkpoint does not fit this version's model.*start a new run"):
        _b1(data, inputs, checkpoint=ckpt).run()
    assert ckpt.read_bytes() == before


def test_cancel_then_resume_gives_the_uninterrupted_scores(tmp_path: Path) -> None:
    data, inputs = synthetic_problem()
    ckpt = tmp_path / "ckpt.pt"
    def saved() -> None:
        assert ckpt.exists()
    whole, resumed = cancelled_then_resumed(lambda **kw: _b1(data, inputs, **kw), ckpt, step=2, on_cancel=saved)
    assert np.allclose(resumed.clean_prob, whole.clean_prob, atol=1e-6)
    assert np.allclose(resumed.similarity, whole.similarity, atol=1e-6)
