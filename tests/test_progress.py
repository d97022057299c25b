"""The progress protocol: rate and ETA from a fake clock, cancel between batches, snapshots."""
from __future__ import annotations

import pytest

from core.errors import Cancelled
from core.progress import Progress, format_eta


class FakeClock:
    def __init__(self) -> None:
        self.t = 100.0

    def __call__(self) -> float:
        return self.t


def test_rate_and_eta_from_a_fake_clock() -> None:
    clock = FakeClock()
    p = Progress(clock=clock)
    p.start("train", total=100)
    assert p.rate is None and p.eta is None
    clock.t += 10
    p.advance(20, loss=1.5)
    assert p.rate == pytest.approx(2.0)
    assert p.eta == pytest.approx(40.0)
    assert p.fraction == pytest.approx(0.2)
    snap = p.snapshot()
    assert snap["metrics"] == {"loss": 1.5} and snap["step"] == 20 and snap["eta"] == pytest.approx(40.0)
    assert p.loss_history() == [{"step": 20.0, "loss": 1.5}]


def test_resumed_stage_measures_rate_from_where_it_resumed() -> None:
    clock = FakeClock()
    p = Progress(clock=clock)
    p.start("train", total=100, step=50)
    clock.t += 5
    p.advance(10)
    assert p.rate == pytest.approx(2.0)
    assert p.eta == pytest.approx(20.0)


def test_cancel_raises_at_the_next_check() -> None:
    p = Progress()
    p.start("embed", total=3)
    p.check()
    p.cancel()
    with pytest.raises(Cancelled):
        p.check()
    assert p.snapshot()["cancelled"] is True


def test_listener_sees_every_update() -> None:
    seen: list[int] = []
    p = Progress(listener=lambda pr: seen.append(pr.step))
    p.start("x", total=2)
    p.advance()
    p.advance()
    assert seen == [0, 1, 2]


def test_format_eta() -> None:
    assert [format_eta(None), format_eta(12.4), format_eta(185), format_eta(3720)] == ["?", "12s", "3m05s", "1h02m"]
