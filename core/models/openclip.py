"""Models from open_clip: `open_clip:ARCH:TAG` (published weights) and `file:ARCH:PATH` (a local checkpoint).

Published weights are fetched by open_clip into `CONCORD_CACHE/open_clip` when the machine is online. A file
dropped by hand into `CONCORD_CACHE/open_clip/ARCH/TAG/` is used first, so an offline machine can be given
weights; offline without it, loading fails with one line naming the file and that folder.

A local checkpoint is an open_clip state dict (a `.pt`/`.pth`/`.bin` torch file, or `.safetensors`). Its
architecture is given explicitly as `file:ARCH:PATH` (ARCH an open_clip model name, or `concord-tiny` for a
checkpoint of the built-in model): it cannot be inferred reliably from a state dict (e.g. `ViT-B-32` and
`ViT-B-32-quickgelu` have identical tensors but different activations).
"""
from __future__ import annotations

import functools
import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from core import paths
from core.errors import ConcordError, weights_must_fit

WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth")


@dataclass(frozen=True)
class OpenClipSpec:
    """A parsed model name: `arch` plus either a pretrained `tag` or a checkpoint `path`."""

    arch: str
    tag: str | None = None
    path: Path | None = None


def known_archs() -> list[str]:
    import open_clip
    return open_clip.list_models()


def check_arch(arch: str, name: str) -> str:
    """`arch` cleaned as open_clip does ("ViT-B/32" -> "ViT-B-32"); ConcordError when open_clip lacks it."""
    cleaned = arch.replace("/", "-")
    if cleaned not in known_archs():
        raise ConcordError(f"model {name!r}: open_clip has no architecture {arch!r} "
                           f"(e.g. ViT-B-32, ViT-B-16, RN50; "
                           f"`python -c 'import open_clip; print(open_clip.list_models())'`)")
    return cleaned


def parse_pretrained(name: str) -> OpenClipSpec:
    """`open_clip:ARCH:TAG`, the tag checked against open_clip's list for that architecture."""
    import open_clip
    parts = name.split(":")
    if len(parts) != 3 or not parts[1] or not parts[2]:
        raise ConcordError(f"model {name!r}: write open_clip models as open_clip:ARCH:TAG, "
                           f"e.g. open_clip:ViT-B-32:openai")
    arch = check_arch(parts[1], name)
    tags = open_clip.list_pretrained_tags_by_model(arch)
    if parts[2] not in tags:
        raise ConcordError(f"model {name!r}: open_clip has no weights tagged {parts[2]!r} for {arch} "
                           f"(tags: {', '.join(tags) or 'none'})")
    return OpenClipSpec(arch, tag=parts[2])


def parse_file(name: str, tiny_name: str) -> OpenClipSpec:
    """`file:ARCH:PATH` (PATH may itself contain colons); ARCH may be `tiny_name`."""
    parts = name.split(":", 2)
    if len(parts) != 3 or not parts[1] or not parts[2]:
        raise ConcordError(f"model {name!r}: write a local checkpoint as file:ARCH:PATH, e.g. "
                           f"file:ViT-B-32:/models/clip.pt or file:{tiny_name}:/runs/7/model.pt")
    arch = parts[1] if parts[1] == tiny_name else check_arch(parts[1], name)
    path = Path(parts[2]).expanduser()
    if not path.is_file():
        raise ConcordError(f"model {name!r}: checkpoint file {path} does not exist")
    return OpenClipSpec(arch, path=path.resolve())


@functools.lru_cache(maxsize=32)
def _file_digest(path: str, size: int, mtime_ns: int) -> str:
    h = hashlib.sha1()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def file_digest(path: Path) -> str:
    """Content hash of a checkpoint (memoised per path, size and modification time)."""
    st = path.stat()
    return _file_digest(str(path), st.st_size, st.st_mtime_ns)


def dims(arch: str) -> tuple[int, int]:
    """(embed_dim, image_size) of an open_clip architecture, from its config (no weights loaded)."""
    import open_clip
    cfg = open_clip.get_model_config(arch)
    size = cfg["vision_cfg"].get("image_size", 224)
    return int(cfg["embed_dim"]), int(size[0] if isinstance(size, (tuple, list)) else size)


def download_folder() -> Path:
    """Where open_clip downloads published weights (its Hugging Face cache layout lives under it)."""
    return paths.cache_dir() / "open_clip"


def manual_folder(spec: OpenClipSpec) -> Path:
    """Where a person can put the weights of `open_clip:ARCH:TAG` by hand."""
    return download_folder() / spec.arch / str(spec.tag)


def _expected_file(cfg: dict) -> tuple[str, str]:
    """(file name, where to download it from) for a pretrained config."""
    hub = cfg.get("hf_hub", "")
    if hub:
        repo, filename = os.path.split(hub)   # "org/repo/" names the repo's default open_clip weights
        return (filename or "open_clip_model.safetensors (or open_clip_pytorch_model.bin)",
                f"https://huggingface.co/{repo}")
    url = cfg.get("url", "")
    return os.path.basename(url), url


def _offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on")


def weights_file(spec: OpenClipSpec, name: str) -> Path:
    """The local weights of `open_clip:ARCH:TAG`: a file put in the manual folder, else open_clip's download
    into the cache (reused when already there). Offline and absent: ConcordError naming file and folder."""
    import open_clip
    from open_clip.pretrained import download_pretrained

    folder = manual_folder(spec)
    if folder.is_dir():
        found = sorted(p for p in folder.iterdir() if p.suffix in WEIGHT_SUFFIXES)
        if found:
            return found[0]
    cfg = open_clip.get_pretrained_cfg(spec.arch, spec.tag)
    filename, source = _expected_file(cfg)
    missing = (f"model {name!r}: weights not available offline; download {filename} from {source} and put it "
               f"in {folder}/")
    if _offline():
        raise ConcordError(missing + " (HF_HUB_OFFLINE is set)")
    try:
        return Path(download_pretrained(cfg, cache_dir=str(download_folder())))
    except Exception as exc:  # noqa: BLE001 - any download failure means the same thing to the user
        raise ConcordError(f"{missing} (download failed: {type(exc).__name__})") from exc


def build(spec: OpenClipSpec, name: str) -> tuple[nn.Module, object, object]:
    """(model in eval mode on the CPU, eval preprocessing, tokenizer) for an open_clip architecture with
    published weights (`spec.tag`) or a checkpoint (`spec.path`)."""
    import open_clip

    preprocessing: dict = {}
    quick_gelu = False
    if spec.tag is not None:
        checkpoint = weights_file(spec, name)
        cfg = open_clip.get_pretrained_cfg(spec.arch, spec.tag)
        # the published weights' own preprocessing (open_clip 3.3 takes it as `image_*` arguments)
        preprocessing = {f"image_{k}": cfg[k] for k in ("mean", "std", "interpolation", "resize_mode") if k in cfg}
        quick_gelu = bool(cfg.get("quick_gelu", False))   # the activation the weights were trained with
    else:
        checkpoint = spec.path
    try:
        model, _, preprocess = open_clip.create_model_and_transforms(
            spec.arch, pretrained=str(checkpoint), force_quick_gelu=quick_gelu, cache_dir=str(download_folder()),
            **preprocessing)
    except (RuntimeError, KeyError, ValueError) as exc:
        raise ConcordError(f"model {name!r}: cannot load {checkpoint} as {spec.arch}: "
                           f"{str(exc).splitlines()[0]}") from exc
    try:
        tokenizer = open_clip.get_tokenizer(spec.arch, cache_dir=str(download_folder()))
    except Exception as exc:  # noqa: BLE001 - an HF tokenizer that cannot be fetched offline
        raise ConcordError(f"model {name!r}: its tokenizer is not available ({type(exc).__name__}: "
                           f"{str(exc).splitlines()[0] if str(exc) else ''})") from exc
    return model.eval(), preprocess, tokenizer


def load_state(model: nn.Module, path: Path, name: str) -> None:
    """Load a state-dict checkpoint into `model` strictly; ConcordError naming what does not fit."""
    from open_clip import load_checkpoint
    with weights_must_fit(f"model {name!r}: {path} does not fit the architecture"):
        load_checkpoint(model, str(path), strict=True)


def encode_texts(model: nn.Module, tokenizer, texts: list[str], device: torch.device) -> torch.Tensor:
    """Normalised `encode_text` of `texts` (float32), in eval mode without gradient."""
    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode():
            return model.encode_text(tokenizer(texts).to(device), normalize=True).float()
    finally:
        model.train(was_training)
