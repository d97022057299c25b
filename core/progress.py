"""The progress protocol: one small thread-safe object every long operation takes.

The operation reports `step`/`total`, a message, metrics and log lines, and calls `check()` between
batches so that a cancel takes effect there. Readers (the CLI's progress bar, the job runner, the
pages) take `snapshot()`s; rate and ETA are derived from the clock, which tests can replace.
"""
from __future__ import annotations

import threading
import time
from collections import deque
from typing import Any, Callable

from core.errors import Cancelled

Listener = Callable[["Progress"], None]


class Progress:
    """Progress of one long operation, possibly in stages (`start` begins a stage)."""

    def __init__(self, clock: Callable[[], float] = time.monotonic, listener: Listener | None = None,
                 history: int = 5000) -> None:
        self._clock = clock
        self._lock = threading.RLock()
        self._cancel = threading.Event()
        self._listener = listener
        self.stage = ""
        self.message = ""
        self.step = 0
        self.total: int | None = None
        self.metrics: dict[str, float] = {}
        self.history: deque[dict[str, float]] = deque(maxlen=history)
        self.epochs: list[dict[str, Any]] = []
        self.log_lines: deque[str] = deque(maxlen=500)
        self._t0 = self._clock()
        self._stage_t0 = self._t0
        self._stage_step0 = 0

    # writer side -------------------------------------------------------------------------------
    def start(self, stage: str, total: int | None, step: int = 0, message: str = "") -> None:
        """Begin a stage of `total` steps, starting at `step` (non-zero when resuming)."""
        with self._lock:
            self.stage, self.total, self.step = stage, total, step
            self.message = message or stage
            self._stage_t0, self._stage_step0 = self._clock(), step
        self._notify()

    def advance(self, n: int = 1, **metrics: float) -> None:
        """Count `n` more steps done and record the latest metrics (e.g. `loss=...`)."""
        with self._lock:
            self.step += n
            if metrics:
                self.metrics.update(metrics)
                self.history.append({"step": float(self.step), **{k: float(v) for k, v in metrics.items()}})
        self._notify()

    def set_message(self, message: str) -> None:
        with self._lock:
            self.message = message
        self._notify()

    def epoch_done(self, **summary: Any) -> None:
        """Record one epoch's summary metrics (shown as a table by the Train page)."""
        with self._lock:
            self.epochs.append(dict(summary))
        self._notify()

    def log(self, line: str) -> None:
        with self._lock:
            self.log_lines.append(line)
        self._notify()

    def check(self) -> None:
        """Raise `Cancelled` if a cancel was requested: call between batches."""
        if self._cancel.is_set():
            raise Cancelled(self.stage or "operation")

    # reader / controller side ------------------------------------------------------------------
    def cancel(self) -> None:
        self._cancel.set()

    @property
    def cancelled(self) -> bool:
        return self._cancel.is_set()

    @property
    def elapsed(self) -> float:
        """Seconds since the current stage started."""
        return max(0.0, self._clock() - self._stage_t0)

    @property
    def rate(self) -> float | None:
        """Steps per second in the current stage, None before the first step."""
        with self._lock:
            done = self.step - self._stage_step0
            dt = self._clock() - self._stage_t0
        return done / dt if done > 0 and dt > 0 else None

    @property
    def eta(self) -> float | None:
        """Seconds left in the current stage at the current rate, None when unknown."""
        rate = self.rate
        with self._lock:
            if rate is None or self.total is None:
                return None
            return max(0.0, (self.total - self.step) / rate)

    @property
    def fraction(self) -> float | None:
        with self._lock:
            if not self.total:
                return None
            return min(1.0, self.step / self.total)

    def snapshot(self) -> dict[str, Any]:
        """A plain-data copy, safe to hand to another thread or to serialise as JSON."""
        with self._lock:
            return {
                "stage": self.stage, "message": self.message, "step": self.step, "total": self.total,
                "fraction": self.fraction, "rate": self.rate, "eta": self.eta, "elapsed": self.elapsed,
                "metrics": dict(self.metrics), "epochs": list(self.epochs),
                "log": list(self.log_lines)[-50:], "cancelled": self.cancelled,
            }

    def loss_history(self) -> list[dict[str, float]]:
        with self._lock:
            return list(self.history)

    def _notify(self) -> None:
        if self._listener is not None:
            self._listener(self)


def format_eta(seconds: float | None) -> str:
    """`1h02m`, `3m05s`, `12s`, or `?`."""
    if seconds is None:
        return "?"
    s = int(round(seconds))
    if s >= 3600:
        return f"{s // 3600}h{(s % 3600) // 60:02d}m"
    if s >= 60:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s}s"
