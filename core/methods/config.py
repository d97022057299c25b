"""Settings every method shares, as a frozen dataclass; each method's config extends it.

Field metadata carries the one-line help the CLI (`--set key=value`) and the Train page show.
"""
from __future__ import annotations

from dataclasses import dataclass, field


def setting(default, help: str, choices: tuple | None = None):  # noqa: A002 - the word the UI shows
    """A config field with its help text (and allowed values)."""
    return field(default=default, metadata={"help": help, "choices": choices})


@dataclass(frozen=True)
class MethodConfig:
    """Training settings common to every method."""

    epochs: int = setting(8, "training epochs over the training split")
    batch_size: int = setting(128, "pairs per batch (also the batch of the per-sample loss split)")
    lr: float = setting(1e-3, "peak learning rate of the trainable towers / heads (AdamW)")
    weight_decay: float = setting(0.01, "AdamW weight decay")
    warmup_steps: int = setting(50, "linear learning-rate warm-up steps, then cosine decay to 0")
    grad_clip: float = setting(10.0, "clip the gradient norm of each update at this value (0: off)")
    eval_batch_size: int = setting(1024, "batch size when embedding or scoring without gradients")
    checkpoint_every_s: float = setting(60.0, "also checkpoint mid-epoch at most this often (seconds)")
