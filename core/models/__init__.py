"""The model registry: one entry point returning an open_clip model, its preprocessing and its tokenizer.

Names:
- `concord-tiny` (default): the built-in offline model (see `core.models.tiny`).
- `open_clip:ARCH:TAG`, e.g. `open_clip:ViT-B-32:openai`: published weights (see `core.models.openclip`).
- `file:ARCH:PATH`: a local open_clip state dict of architecture ARCH (an open_clip name, or `concord-tiny`).

`model_info` validates a name and describes the model without loading weights; `load_model` loads it.
Importing this package registers the torchvision operator schemas (`core.torchvision_ops`): every import
of open_clip, timm or torchvision in Concord comes after it (features and models import this package).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from core.errors import ConcordError
from core.models import openclip, tiny
from core.torchvision_ops import register_torchvision_ops

register_torchvision_ops()   # before any import of open_clip, timm or torchvision (all inside functions)

DEFAULT_MODEL = tiny.NAME
TINY, OPEN_CLIP = "tiny", "open_clip"


@dataclass(frozen=True)
class ModelInfo:
    """What the rest of Concord needs to know about a model, without its weights."""

    name: str                 # "concord-tiny" | "open_clip:ARCH:TAG" | "file:ARCH:PATH"
    identity: str             # stable id for cache keys: architecture + weights identity (+ seed for tiny)
    image_pretrained: bool    # False for concord-tiny: its image tower is trained by the methods
    image_size: int           # input resolution of the image tower
    embed_dim: int
    text_feature_dim: int     # dim of the cached text features (tiny: 384, the pooled MiniLM output)
    family: str = OPEN_CLIP   # "tiny": cached text features are pooled MiniLM outputs, projected by the model;
    #                           "open_clip": cached text features are the final normalised `encode_text`


def model_info(name: str, seed: int = 0) -> ModelInfo:
    """Describe model `name` (ConcordError for an unknown or malformed name). `seed` only matters for
    concord-tiny, whose image tower is initialised from it."""
    if name == tiny.NAME:
        return ModelInfo(name, tiny.identity(seed), False, tiny.IMAGE_SIZE, tiny.EMBED_DIM, tiny.TEXT_FEATURE_DIM,
                         TINY)
    if name.startswith("open_clip:"):
        spec = openclip.parse_pretrained(name)
        embed_dim, size = openclip.dims(spec.arch)
        return ModelInfo(name, f"open_clip:{spec.arch}:{spec.tag}", True, size, embed_dim, embed_dim)
    if name.startswith("file:"):
        spec = openclip.parse_file(name, tiny.NAME)
        digest = openclip.file_digest(spec.path)[:16]
        if spec.arch == tiny.NAME:
            return ModelInfo(name, f"file:{tiny.architecture()}:{digest}", True, tiny.IMAGE_SIZE,
                             tiny.EMBED_DIM, tiny.TEXT_FEATURE_DIM, TINY)
        embed_dim, size = openclip.dims(spec.arch)
        return ModelInfo(name, f"file:{spec.arch}:{digest}", True, size, embed_dim, embed_dim)
    raise ConcordError(f"unknown model {name!r}: use {tiny.NAME}, open_clip:ARCH:TAG (e.g. open_clip:ViT-B-32:openai) "
                       "or file:ARCH:PATH")


def resolve_device(device: str = "auto") -> torch.device:
    """`auto` (CUDA when present, else CPU), `cpu`, `cuda` or `cuda:N`; ConcordError when CUDA is asked for
    and absent."""
    d = (device or "auto").strip().lower()
    if d == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if d == "cpu":
        return torch.device("cpu")
    if d == "cuda" or d.startswith("cuda:"):
        if not torch.cuda.is_available():
            built = "a CPU-only build" if torch.version.cuda is None else f"built for CUDA {torch.version.cuda}"
            raise ConcordError(f"device {device!r}: no CUDA device is available (torch {torch.__version__}, {built}); "
                               "use --device cpu or auto")
        index = d.partition(":")[2]
        if index and (not index.isdigit() or int(index) >= torch.cuda.device_count()):
            raise ConcordError(f"device {device!r}: there are {torch.cuda.device_count()} CUDA devices "
                               f"(cuda:0 … cuda:{torch.cuda.device_count() - 1})")
        return torch.device(d)
    raise ConcordError(f"unknown device {device!r}: use auto, cpu, cuda or cuda:N")


@dataclass
class LoadedModel:
    """A model on its device, in eval mode, with what it takes to feed it."""

    info: ModelInfo
    model: torch.nn.Module    # an open_clip model (CLIP / CustomTextCLIP)
    preprocess: Callable      # open_clip's eval transform (PIL image -> normalised tensor)
    tokenizer: Callable       # open_clip tokenizer (texts -> token tensor)
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    device: torch.device

    def encode_cached_text(self, feats: torch.Tensor) -> torch.Tensor:
        """Cached text features -> embed_dim outputs (not normalised for tiny: its trainable projection;
        open_clip: the features are final, returned as they are)."""
        if self.info.family == TINY:
            return self.model.text.proj(feats)
        return feats

    def cached_text_head(self) -> torch.nn.Module | None:
        """The trainable module that maps cached text features to embeddings (tiny: its projection), or None
        when the cached features are already the model's final text embeddings."""
        return self.model.text.proj if self.info.family == TINY else None

    def text_features(self, texts: Sequence[str]) -> torch.Tensor:
        """The cached form of caption features (float32, on the device): tiny -> pooled 384-d MiniLM output
        (not normalised); open_clip -> normalised `encode_text`."""
        if self.info.family == TINY:
            return tiny.pooled_text_features(self.model, self.tokenizer, list(texts), self.device)
        return openclip.encode_texts(self.model, self.tokenizer, list(texts), self.device)

    def image_input(self, pixels: np.ndarray | torch.Tensor) -> torch.Tensor:
        """uint8 pixels (n, S, S, 3), already resized and cropped to the tower's size -> the normalised float
        batch (n, 3, S, S) on the device (what `preprocess` produces from the images)."""
        x = torch.as_tensor(pixels).to(self.device, non_blocking=True)
        x = x.permute(0, 3, 1, 2).float().div_(255.0)
        mean = torch.tensor(self.mean, device=self.device).view(1, 3, 1, 1)
        std = torch.tensor(self.std, device=self.device).view(1, 3, 1, 1)
        return (x - mean) / std

    def image_features(self, pixels: np.ndarray | torch.Tensor) -> torch.Tensor:
        """Normalised `encode_image` of uint8 pixels (float32, eval mode, no gradient)."""
        was_training = self.model.training
        self.model.eval()
        try:
            with torch.inference_mode():
                return F.normalize(self.model.encode_image(self.image_input(pixels)).float(), dim=-1)
        finally:
            self.model.train(was_training)


def load_model(name: str, device: str = "auto", seed: int = 0) -> LoadedModel:
    """Load model `name` onto `device` in eval mode. For concord-tiny, `seed` initialises the image tower and
    the text projection (the same seed gives the same weights)."""
    import open_clip

    info = model_info(name, seed)
    dev = resolve_device(device)
    if name == tiny.NAME or (name.startswith("file:") and info.family == TINY):
        model, tokenizer = tiny.build(seed)
        if name.startswith("file:"):
            openclip.load_state(model, openclip.parse_file(name, tiny.NAME).path, name)
        mean, std = tiny.MEAN, tiny.STD
        preprocess = open_clip.image_transform(tiny.IMAGE_SIZE, is_train=False, mean=mean, std=std,
                                               interpolation="bicubic", resize_mode="shortest")
    else:
        spec = (openclip.parse_pretrained(name) if name.startswith("open_clip:")
                else openclip.parse_file(name, tiny.NAME))
        model, preprocess, tokenizer = openclip.build(spec, name)
        pp = getattr(model.visual, "preprocess_cfg", {})
        mean = tuple(float(v) for v in pp.get("mean", open_clip.OPENAI_DATASET_MEAN))
        std = tuple(float(v) for v in pp.get("std", open_clip.OPENAI_DATASET_STD))
    return LoadedModel(info, model.to(dev).eval(), preprocess, tokenizer, mean, std, dev)
