"""Settings every method shares, as a frozen dataclass; each method's config extends it.

Field metadata carries the one-line help the CLI (`--set key=value`) and the Train page show.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field


@dataclass(frozen=True)
class Range:
    """The values a numeric setting may take: finite, and within `low`..`high` (each end excluded when `open`)."""

    low: float | None = None
    high: float | None = None
    low_open: bool = False
    high_open: bool = False

    def problem(self, value: float) -> str | None:
        """Why `value` is out of range, or None."""
        if not math.isfinite(value):
            return "must be a finite number"
        if self.low is not None and (value <= self.low if self.low_open else value < self.low):
            return f"must be {'above' if self.low_open else 'at least'} {self.low:g}"
        if self.high is not None and (value >= self.high if self.high_open else value > self.high):
            return f"must be {'below' if self.high_open else 'at most'} {self.high:g}"
        return None


AT_LEAST_0, AT_LEAST_1, ABOVE_0 = Range(0), Range(1), Range(0, low_open=True)
SHARE = Range(0, 1)


def setting(default, help: str, choices: tuple | None = None,  # noqa: A002 - the word the UI shows
            range: Range | None = None):  # noqa: A002
    """A config field with its help text (and allowed values, or for a number its `range`)."""
    return field(default=default, metadata={"help": help, "choices": choices, "range": range})


@dataclass(frozen=True)
class MethodConfig:
    """Training settings common to every method."""

    epochs: int = setting(8, "training epochs over the training split", range=AT_LEAST_1)
    batch_size: int = setting(128, "pairs per batch (also the batch of the per-sample loss split)", range=Range(2))
    lr: float = setting(1e-3, "peak learning rate of the trainable towers / heads (AdamW)", range=AT_LEAST_0)
    weight_decay: float = setting(0.01, "AdamW weight decay", range=AT_LEAST_0)
    warmup_steps: int = setting(50, "linear learning-rate warm-up steps, then cosine decay to 0", range=AT_LEAST_0)
    grad_clip: float = setting(10.0, "clip the gradient norm of each update at this value (0: off)", range=AT_LEAST_0)
    eval_batch_size: int = setting(1024, "batch size when embedding or scoring without gradients", range=AT_LEAST_1)
    checkpoint_every_s: float = setting(60.0, "also checkpoint mid-epoch at most this often (seconds)",
                                        range=AT_LEAST_0)
