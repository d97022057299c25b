"""What scores a pair of a shard, and the batch stages every engine runs (decode → embed → score).

A `ScorerSpec` is plain data that travels to Ray workers: the model name, the trained encoder's weights when
scoring with a finished run (its `DualEncoder` state from the run's checkpoint, rebuilt with
`core.training.encoder_factory` exactly as the run trained it), and the two-component Gaussian mixture that
turns a pair's similarity into `clean_prob` (B0's rule, `core.mixtures`): fitted on the run's own training
similarities, or for a zero-shot model on the similarities of the first pairs of the shards.

Batches are dicts of numpy arrays (Ray Data's `numpy` batch format), so the same functions serve the local
engine and Ray's `map_batches`.
"""
from __future__ import annotations

import io
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from core import artifacts
from core.errors import ConcordError, weights_must_fit
from core.hashing import bytes_hash, text_hash
from core.mixtures import GMMFit, fit_gmm
from core.models import model_info
from core.shards.reader import image_bytes

Batch = dict[str, np.ndarray]
GMM_MAX_ITER = 100          # as B0's score split


@dataclass(frozen=True)
class Mixture:
    """A fitted similarity GMM as plain tuples (components sorted by mean; 1 = matched)."""

    means: tuple[float, float]
    variances: tuple[float, float]
    weights: tuple[float, float]

    @classmethod
    def fit(cls, similarity: np.ndarray, seed: int = 0) -> "Mixture":
        g = fit_gmm(np.asarray(similarity, np.float64), max_iter=GMM_MAX_ITER, seed=seed)
        return cls(tuple(map(float, g.means)), tuple(map(float, g.variances)), tuple(map(float, g.weights)))

    def clean_prob(self, similarity: np.ndarray) -> np.ndarray:
        """The matched component's posterior of each similarity."""
        g = GMMFit(np.array(self.means), np.array(self.variances), np.array(self.weights))
        return g.posterior(np.asarray(similarity, np.float64))[:, 1]


@dataclass(frozen=True)
class ScorerSpec:
    """Everything a worker needs to embed and score pairs (picklable)."""

    model: str
    seed: int = 0
    regime: str | None = None                          # the run's regime; None: the model zero-shot
    encoder_state: dict[str, Any] | None = field(default=None, compare=False, repr=False)
    mixture: Mixture | None = None
    source: str = ""                                   # what scores, in words (and in the output's manifest)

    @property
    def image_size(self) -> int:
        return model_info(self.model, self.seed).image_size


def _encoder_state(state: dict[str, Any]) -> dict[str, Any]:
    """The run's describing encoder in a method's checkpoint state (b1 and NPC: `model`; MSCN: `encoder`, the
    first network's when co-training, which is the encoder MSCN's run describes itself by)."""
    if "nets" in state:
        state = state["nets"][0]
    for key in ("model", "encoder"):
        if key in state:
            return state[key]
    raise ConcordError(f"the run's checkpoint holds no encoder weights (keys: {', '.join(state)})")


def spec_from_run(store, run_id: int) -> ScorerSpec:
    """Score with finished run `run_id`: its trained encoder (none for b0, which scores with the model as it
    is) and a GMM on its training pairs' similarities."""
    run = store.run(run_id)
    if run.state != "finished":
        raise ConcordError(f"run {run_id} is {run.state}: score shards with a finished run")
    state = None
    if run.method != "b0":
        path = artifacts.checkpoint_path(run)
        if not path.exists():
            raise ConcordError(f"run {run_id} has no checkpoint in the cache ({path}); run it again")
        state = _encoder_state(torch.load(path, map_location="cpu", weights_only=False)["state"])
    frame = store.pairs_frame(run.dataset_id, run_id)
    train = frame.loc[frame["split"] == "train", "similarity"].dropna().to_numpy(np.float64)
    if not len(train):
        raise ConcordError(f"run {run_id} has no scored training pairs to calibrate clean_prob on")
    return ScorerSpec(run.model, run.seed or 0, None if state is None else run.regime, state,
                      Mixture.fit(train, run.seed or 0), f"run {run_id} ({run.method}, {run.model})")


def zero_shot_spec(model: str) -> ScorerSpec:
    """Score with `model` as it is (B0); the mixture is fitted later (`calibrated`). Refuses models whose image
    tower is not pretrained (concord-tiny's is trained by a run: score with the run instead)."""
    if not model_info(model).image_pretrained:
        raise ConcordError(f"{model}'s image tower is not pretrained: score with a finished run trained on a "
                           "sample (--run RUN_ID) or a pretrained model (e.g. open_clip:ViT-B-32:openai)")
    return ScorerSpec(model, source=f"zero-shot {model}")


def scorer_spec(store, run_id: int | None, model: str | None) -> ScorerSpec:
    """Who scores: finished run `run_id` (`spec_from_run`), else pretrained `model` zero-shot (`zero_shot_spec`)."""
    if run_id is not None:
        return spec_from_run(store, run_id)
    if not model:
        raise ConcordError("name who scores: a finished run (--run) or a pretrained model (--model)")
    return zero_shot_spec(model)


# ------------------------------------------------------------------------------------------- decode
def decode_batch(batch: Batch, *, image_size: int, folders: dict[str, tuple[str, str, bool]], image: str = "image",
                 caption: str = "caption", key: str | None = None, split: str | None = None,
                 path: str = "path") -> Batch:
    """Read and decode each row's image (as open_clip's eval preprocessing, `core.features.load_pixels`) and
    hash its image and caption. `folders` maps a row's `path` value to (shard name, shard folder, whether
    the shard's images are inline bytes): a reader that unifies shards' schemas (Ray's) hands paths over as
    bytes when other shards hold bytes. A row whose image cannot be read gets zero pixels and its reason in
    `error` (its shard is reported, not written)."""
    from core.features import load_pixels
    n = len(batch[caption])
    pixels = np.zeros((n, image_size, image_size, 3), np.uint8)
    names, refs, data, hashes, errors = [], [], [], [], []
    for i in range(n):
        name, folder, is_bytes = folders[str(batch[path][i])]
        value = batch[image][i]
        names.append(name)
        if not is_bytes and isinstance(value, (bytes, bytearray, memoryview)):
            value = bytes(value).decode("utf-8")
        refs.append("" if is_bytes or value is None else str(value))
        try:
            if value is None:
                raise ValueError("no image")
            raw = image_bytes(value, folder)
            pixels[i] = load_pixels(io.BytesIO(raw), image_size)
            hashes.append(bytes_hash(raw))
            data.append(raw if is_bytes else b"")
            errors.append("")
        except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as exc:
            hashes.append("")
            data.append(b"")
            errors.append(f"image {refs[-1] or '(bytes)'}: {exc}")
    texts = [str(t) for t in batch[caption]]
    out: Batch = {"shard": np.array(names, object), "caption": np.array(texts, object),
                  "caption_hash": np.array([text_hash(t) for t in texts], object),
                  "image_ref": np.array(refs, object), "image_data": np.array(data, object),
                  "image_hash": np.array(hashes, object), "error": np.array(errors, object), "pixels": pixels}
    if key is not None:
        out["key"] = np.array([str(k) for k in batch[key]], object)
    if split is not None:   # an empty or missing split is train
        out["split"] = np.array([str(v).strip() if v is not None and str(v).strip() else "train"
                                 for v in batch[split]], object)
    return out


# ------------------------------------------------------------------------------------------- embed
class Embedder:
    """Loads the model (and the run's encoder) once; each call embeds a decoded batch and adds `image_emb`,
    `caption_emb` (float32, L2-normalised) and `similarity`. Used as a Ray Data actor class."""

    def __init__(self, spec: ScorerSpec, device: str = "auto") -> None:
        from core.models import load_model
        from core.training import encoder_factory
        self.spec = spec
        self.loaded = load_model(spec.model, device, seed=spec.seed)
        self.encoder = None
        if spec.encoder_state is not None:
            info = self.loaded.info
            make = encoder_factory(self.loaded, spec.regime or "finetune", info.embed_dim, info.text_feature_dim,
                                   self.loaded.device)
            with torch.random.fork_rng(devices=[]):
                self.encoder = make(spec.seed)
            with weights_must_fit(f"{spec.source}: its trained weights do not fit this version's {spec.model} "
                                  "(the architecture changed since the run); train the run again"):
                self.encoder.load_state_dict(spec.encoder_state)
            self.encoder.eval()

    @torch.inference_mode()
    def embed(self, pixels: np.ndarray, texts: list[str]) -> tuple[np.ndarray, np.ndarray]:
        """(image, caption) embeddings of a batch, as the run's model computes them."""
        feats = self.loaded.text_features(texts)
        if self.encoder is None:
            img = self.loaded.image_features(pixels)
            cap = F.normalize(self.loaded.encode_cached_text(feats).float(), dim=-1)
        else:
            if self.spec.regime == "features":
                img = self.encoder.encode_image(self.loaded.image_features(pixels))
            else:
                img = self.encoder.encode_image(self.loaded.image_input(pixels))
            cap = self.encoder.encode_text(feats)
        return img.cpu().numpy().astype(np.float32), cap.cpu().numpy().astype(np.float32)

    def __call__(self, batch: Batch) -> Batch:
        out = {k: v for k, v in batch.items() if k != "pixels"}
        img, cap = self.embed(batch["pixels"], [str(t) for t in batch["caption"]])
        out["image_emb"], out["caption_emb"] = img, cap
        out["similarity"] = np.einsum("nd,nd->n", img, cap).astype(np.float64)
        return out


# ------------------------------------------------------------------------------------------- score
def score_batch(batch: Batch, *, mixture: Mixture) -> Batch:
    """Add `clean_prob` (the mixture's matched posterior of the similarity) and `weight` (= clean_prob, as B0)."""
    clean = mixture.clean_prob(batch["similarity"])
    return batch | {"clean_prob": clean, "weight": clean.copy()}
