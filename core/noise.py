"""Synthetic noisy correspondence (methods.md §4): known mismatches injected into a clean dataset.

The three kinds are pure functions over arrays, one entry per pair: `image` (an id per image), `text`
(an id per distinct caption text: equal ids mean identical text) and, for `hard`, `features` (one
L2-normalised row per text id). Each returns a `NoiseResult`: for every pair the index of the pair
whose caption it now carries, and whether it is noisy. Captions only move between chosen pairs (a
permutation of their caption slots), so the caption multiset is preserved, and every chosen pair
receives a caption of another image that is identical to none of its own image's captions — nor to
another caption its image receives (which would merge two pairs into one).

- `ncr`: exactly ⌊r·N⌋ of the N eligible pairs, chosen at random, are deranged.
- `decl`: ⌊r·M⌋ of the M eligible images are chosen and all their pairs deranged.
- `hard`: like `ncr`, but each chosen pair's caption is one of the `k` most similar texts (cosine of
  `features`) among the chosen pairs' captions that belong to other images and match none of its own.

A random derangement rarely breaks a rule; those positions are repaired by swapping with other chosen
pairs. A pair that no swap can fix (or, for `hard`, a pair no near miss can be matched to) is replaced
by another eligible pair that was not chosen (`decl`: its image by another image) and the assignment is
redone, so the count is never silently lower; when no replacement is left a `ConcordError` says why.
Replacement slightly favours, for `hard`, pairs whose captions have near misses among the others.

`inject_noise` applies a kind to a records frame (the `train` split only); `inject_noise_copy` makes a
noisy copy of a stored dataset that shares its images.
"""
from __future__ import annotations

import random
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, Sequence

import numpy as np
import pandas as pd

if TYPE_CHECKING:
    from scipy.sparse import csr_matrix

from core.errors import ConcordError
from core.progress import Progress

KINDS = ("ncr", "decl", "hard")
NOISY_SPLIT = "train"
DEFAULT_K = 10
_SWAP_TRIES = 64
_ROUNDS = 50
_BLOCK = 1024

TextEncoder = Callable[[Sequence[str]], np.ndarray]


@dataclass(frozen=True)
class NoiseResult:
    """`source[i]`: the pair whose caption pair i now carries (i itself when untouched);
    `noisy[i]`: pair i's caption now belongs to another image."""

    source: np.ndarray
    noisy: np.ndarray

    @property
    def count(self) -> int:
        return int(self.noisy.sum())


def check_ratio(ratio: float) -> None:
    """Refuse a noise ratio outside [0, 1] (NaN included)."""
    if not 0.0 <= ratio <= 1.0:
        raise ConcordError(f"noise ratio must be within [0, 1], got {ratio}")


def _check_inputs(image: np.ndarray, text: np.ndarray, ratio: float,
                  eligible: np.ndarray | None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    image = np.asarray(image, dtype=np.int64)
    text = np.asarray(text, dtype=np.int64)
    if image.shape != text.shape or image.ndim != 1:
        raise ValueError("image and text must be 1-d arrays of the same length")
    check_ratio(ratio)
    mask = np.ones(len(image), dtype=bool) if eligible is None else np.asarray(eligible, dtype=bool)
    return image, text, mask


class _Assignment:
    """Which chosen pair's caption each chosen pair receives, with the rules of the module docstring."""

    def __init__(self, image: np.ndarray, text: np.ndarray, own: set[int], n_texts: int) -> None:
        self.image, self.text, self.own, self.n_texts = image, text, own, n_texts

    def key(self, pair: int, slot: int) -> int:
        """(receiving image, received text) as one integer."""
        return int(self.image[pair]) * self.n_texts + int(self.text[slot])

    def allowed(self, pair: int, slot: int, received: dict[int, int]) -> bool:
        return (self.image[pair] != self.image[slot] and self.key(pair, slot) not in self.own
                and received.get(self.key(pair, slot), 0) == 0)

    def repair(self, pos: np.ndarray, src: np.ndarray, rng: random.Random) -> list[int]:
        """Fix rule-breaking positions of `src` (in place) by swaps; returns the positions left broken."""
        keys = [self.key(p, s) for p, s in zip(pos, src)]
        received: dict[int, int] = {}
        for k in keys:
            received[k] = received.get(k, 0) + 1
        broken = [a for a in range(len(pos)) if self.image[pos[a]] == self.image[src[a]] or keys[a] in self.own
                  or received[keys[a]] > 1]
        stuck = []
        for a in broken:
            received[keys[a]] -= 1
            if self.allowed(pos[a], src[a], received):  # fixed meanwhile by another swap
                received[keys[a]] += 1
                continue
            for _ in range(_SWAP_TRIES):
                b = rng.randrange(len(pos))
                if b == a:
                    continue
                received[keys[b]] -= 1
                ka, kb = self.key(pos[a], src[b]), self.key(pos[b], src[a])
                if ka != kb and self.allowed(pos[a], src[b], received) and self.allowed(pos[b], src[a], received):
                    src[a], src[b] = src[b], src[a]
                    keys[a], keys[b] = ka, kb
                    received[ka] = received.get(ka, 0) + 1
                    received[kb] = received.get(kb, 0) + 1
                    break
                received[keys[b]] += 1
            else:
                received[keys[a]] += 1
                stuck.append(a)
        return stuck


def _own_keys(image: np.ndarray, text: np.ndarray, n_texts: int) -> set[int]:
    return set((image * n_texts + text).tolist())


def _result(n: int, pos: np.ndarray, src: np.ndarray) -> NoiseResult:
    source = np.arange(n, dtype=np.int64)
    source[pos] = src
    noisy = np.zeros(n, dtype=bool)
    noisy[pos] = True
    return NoiseResult(source, noisy)


def _draw(items: np.ndarray, ratio: float, seed: int) -> tuple[int, np.random.Generator, np.ndarray]:
    """How many of `items` to corrupt (⌊ratio·len⌋), the generator drawing them, and `items` in a random order
    (the first `want` are chosen, the rest are spares)."""
    rng = np.random.default_rng(seed)
    return int(np.floor(ratio * len(items))), rng, rng.permutation(items)


def _derange_with_replacement(image: np.ndarray, text: np.ndarray, pos: np.ndarray, spare: list[int],
                              rng: np.random.Generator,
                              replace: Callable[[np.ndarray, list[int], list[int]], np.ndarray],
                              what: str) -> NoiseResult:
    """Derange the captions of `pos`; pairs no swap fixes go to `replace(pos, stuck, spare)`, which
    returns the new chosen pairs (trading stuck ones for spare ones), and the derangement is redone."""
    n_texts = int(text.max()) + 1 if len(text) else 1
    assign = _Assignment(image, text, _own_keys(image, text, n_texts), n_texts)
    py_rng = random.Random(int(rng.integers(2**63)))
    for _ in range(_ROUNDS):
        src = pos[rng.permutation(len(pos))]
        stuck = assign.repair(pos, src, py_rng)
        if not stuck:
            return _result(len(image), pos, src)
        if not spare:
            break
        pos = replace(pos, [int(pos[a]) for a in stuck], spare)
    raise ConcordError(f"cannot give {what} a caption of another image that differs from all of its own "
                       "captions: too few other images or captions to permute; use a smaller ratio")


def ncr_noise(image: np.ndarray, text: np.ndarray, ratio: float, seed: int,
              eligible: np.ndarray | None = None) -> NoiseResult:
    """NCR-style noise: exactly ⌊ratio·N⌋ random eligible pairs get another image's caption."""
    image, text, mask = _check_inputs(image, text, ratio, eligible)
    want, rng, order = _draw(np.flatnonzero(mask), ratio, seed)
    if want == 0:
        return _result(len(image), np.array([], dtype=np.int64), np.array([], dtype=np.int64))
    pos, spare = np.sort(order[:want]), [int(p) for p in order[want:]]

    def replace(current: np.ndarray, stuck: list[int], pool: list[int]) -> np.ndarray:
        chosen = set(current.tolist())
        for pair in stuck:
            if not pool:
                break
            chosen.discard(pair)
            chosen.add(pool.pop())
        return np.array(sorted(chosen), dtype=np.int64)

    return _derange_with_replacement(image, text, pos, spare, rng, replace, f"{want} pairs")


def decl_noise(image: np.ndarray, text: np.ndarray, ratio: float, seed: int,
               eligible: np.ndarray | None = None) -> NoiseResult:
    """DECL-style noise: ⌊ratio·M⌋ random eligible images have all their captions permuted among them."""
    image, text, mask = _check_inputs(image, text, ratio, eligible)
    want, rng, order = _draw(np.unique(image[mask]), ratio, seed)
    if want == 0:
        return _result(len(image), np.array([], dtype=np.int64), np.array([], dtype=np.int64))
    chosen_images = set(order[:want].tolist())
    spare = [int(i) for i in order[want:]]

    def pairs_of(imgs: set[int]) -> np.ndarray:
        return np.flatnonzero(mask & np.isin(image, np.fromiter(imgs, dtype=np.int64, count=len(imgs))))

    def replace(current: np.ndarray, stuck: list[int], pool: list[int]) -> np.ndarray:
        for img in {int(image[p]) for p in stuck}:
            if not pool:
                break
            chosen_images.discard(img)
            chosen_images.add(pool.pop())
        return pairs_of(chosen_images)

    return _derange_with_replacement(image, text, pairs_of(chosen_images), spare, rng, replace,
                                     f"all pairs of {want} images")


def _near_miss_graph(image: np.ndarray, text: np.ndarray, features: np.ndarray, pos: np.ndarray,
                     own: dict[int, np.ndarray], k: int) -> csr_matrix:
    """Bipartite graph chosen pair → chosen slot: the slot's text is among the pair's k most similar
    texts of the pool that are not its own image's."""
    pool_texts = np.unique(text[pos])
    local = {int(t): i for i, t in enumerate(pool_texts)}
    slots_of = [[] for _ in pool_texts]
    for b, p in enumerate(pos):
        slots_of[local[int(text[p])]].append(b)
    feats = features[pool_texts]
    rows, cols = [], []
    for start in range(0, len(pos), _BLOCK):
        block = pos[start:start + _BLOCK]
        sims = features[text[block]] @ feats.T
        for r, p in enumerate(block):
            mine = [local[t] for t in own[int(image[p])].tolist() if t in local]
            sims[r, mine] = -np.inf
        kk = min(k, len(pool_texts))
        top = np.argpartition(-sims, kk - 1, axis=1)[:, :kk]
        for r in range(len(block)):
            for t in top[r]:
                if np.isfinite(sims[r, t]):
                    for b in slots_of[t]:
                        rows.append(start + r)
                        cols.append(b)
    from scipy.sparse import csr_matrix   # scipy's graph code: loaded by hard noise only, not by every CLI start
    return csr_matrix((np.ones(len(rows), dtype=np.int8), (rows, cols)), shape=(len(pos), len(pos)))


def hard_noise(image: np.ndarray, text: np.ndarray, features: np.ndarray, ratio: float, seed: int,
               k: int = DEFAULT_K, eligible: np.ndarray | None = None) -> NoiseResult:
    """Near-miss noise: exactly ⌊ratio·N⌋ random eligible pairs each get a distinct caption slot of
    another chosen pair whose text is among their `k` most similar (rows of `features` per text id)."""
    image, text, mask = _check_inputs(image, text, ratio, eligible)
    features = np.asarray(features, dtype=np.float32)
    if len(text) and features.shape[0] <= int(text.max()):
        raise ValueError("features needs one row per text id")
    if k < 1:
        raise ConcordError(f"hard noise needs k >= 1, got {k}")
    want, rng, order = _draw(np.flatnonzero(mask), ratio, seed)
    if want == 0:
        return _result(len(image), np.array([], dtype=np.int64), np.array([], dtype=np.int64))
    chosen, spare = set(order[:want].tolist()), [int(p) for p in order[want:]]
    n_texts = int(text.max()) + 1
    frame = pd.DataFrame({"image": image, "text": text}).drop_duplicates()
    own = {int(i): g.to_numpy() for i, g in frame.groupby("image")["text"]}
    for _ in range(_ROUNDS):
        pos = np.array(sorted(chosen), dtype=np.int64)
        graph = _near_miss_graph(image, text, features, pos, own, k)
        row_perm, col_perm = rng.permutation(len(pos)), rng.permutation(len(pos))
        shuffled = graph[row_perm][:, col_perm]
        from scipy.sparse.csgraph import maximum_bipartite_matching
        match = maximum_bipartite_matching(shuffled.tocsr(), perm_type="column")
        src = np.full(len(pos), -1, dtype=np.int64)
        matched = match >= 0
        src[row_perm[matched]] = pos[col_perm[match[matched]]]
        seen: set[int] = set()
        unmatched_rows = []
        for a in range(len(pos)):  # one text per receiving image: drop repeats (texts shared by images)
            key = int(image[pos[a]]) * n_texts + int(text[src[a]]) if src[a] >= 0 else -1
            if key < 0 or key in seen:
                unmatched_rows.append(a)
                src[a] = -1
            else:
                seen.add(key)
        if not unmatched_rows:
            return _result(len(image), pos, src)
        used = set(src[src >= 0].tolist())
        unused_slots = [int(p) for p in pos if int(p) not in used]
        drop = {int(pos[a]) for a in unmatched_rows} | set(unused_slots)
        if len(spare) < len(drop):
            break
        for pair in sorted(drop):
            chosen.discard(pair)
            chosen.add(spare.pop())
    raise ConcordError(f"cannot give {want} pairs distinct near-miss captions among the k={k} most similar "
                       "captions of other images; use a larger --k or a smaller ratio")


def noise_pairs(image: np.ndarray, text: np.ndarray, ratio: float, kind: str, seed: int, *,
                eligible: np.ndarray | None = None, features: np.ndarray | None = None,
                k: int = DEFAULT_K) -> NoiseResult:
    """Dispatch to the noise `kind` (`ncr`, `decl` or `hard`; `hard` needs `features` unless `ratio` is 0: moving no
    caption needs no near misses)."""
    if kind == "ncr" or (kind == "hard" and ratio == 0):
        return ncr_noise(image, text, ratio, seed, eligible)
    if kind == "decl":
        return decl_noise(image, text, ratio, seed, eligible)
    if kind == "hard":
        if features is None:
            raise ValueError("hard noise needs caption features")
        return hard_noise(image, text, features, ratio, seed, k, eligible)
    raise ConcordError(f"unknown noise kind {kind!r} (choose one of {', '.join(KINDS)})")


def clean_records(records: pd.DataFrame) -> pd.DataFrame:
    """`records` with injected noise undone: each noisy pair gets its recorded original caption back."""
    out = records.copy()
    if "is_noisy" in out and "original_caption" in out:
        noisy = out["is_noisy"].fillna(False).astype(bool).to_numpy()
        out.loc[noisy, "caption"] = out.loc[noisy, "original_caption"]
    out["is_noisy"] = False
    out["original_caption"] = None
    return out


def default_encoder(model: str = "concord-tiny", device: str = "auto") -> TextEncoder:
    """Caption features from `core.features.encode_texts` (L2-normalised, cached per caption)."""
    def encode(texts: Sequence[str]) -> np.ndarray:
        from core.features import encode_texts
        return encode_texts(texts, model=model, device=device)
    return encode


def inject_noise(records: pd.DataFrame, ratio: float, kind: str = "ncr", seed: int = 0, *, k: int = DEFAULT_K,
                 encoder: TextEncoder | None = None) -> pd.DataFrame:
    """Noise of `kind` injected into the `train` pairs of a clean records frame (columns `image_hash`,
    `caption`, `split`), with `is_noisy` and `original_caption` recorded for every pair."""
    if kind not in KINDS:
        raise ConcordError(f"unknown noise kind {kind!r} (choose one of {', '.join(KINDS)})")
    check_ratio(ratio)
    eligible = (records["split"] == NOISY_SPLIT).to_numpy()
    if ratio > 0 and not eligible.any():
        splits = ", ".join(sorted(records["split"].unique()))
        raise ConcordError(f"noise goes into the {NOISY_SPLIT!r} split, and there is none (splits: {splits})")
    image = pd.factorize(records["image_hash"])[0]
    text, texts = pd.factorize(records["caption"])
    features = None
    if kind == "hard" and ratio > 0:
        features = (encoder or default_encoder())(list(texts))
    result = noise_pairs(image, text, ratio, kind, seed, eligible=eligible, features=features, k=k)
    out = records.copy()
    captions = records["caption"].to_numpy()
    out["caption"] = captions[result.source]
    out["is_noisy"] = result.noisy
    out["original_caption"] = np.where(result.noisy, captions, None)
    return out


def inject_noise_copy(store, name: str, new_name: str, ratio: float, kind: str = "ncr", seed: int = 0, *,
                      k: int = DEFAULT_K, encoder: TextEncoder | None = None, replace: bool = False,
                      progress: Progress | None = None) -> dict[str, Any]:
    """Store `new_name`: dataset `name` (its clean version: injected noise undone) with noise of `kind`
    in its train split. It shares `name`'s images (same root, no files copied) and has parent `name`."""
    progress = progress or Progress()
    if new_name == name:
        raise ConcordError("a noise copy needs a new name (--as), not the name of its source")
    if not new_name or not new_name.strip():
        raise ConcordError("a noise copy needs a name (--as)")
    ds = store.dataset(name)
    if store.has_dataset(new_name) and not replace:
        raise ConcordError(f"dataset {new_name!r} already exists; pass --replace to replace it")
    progress.start("noise", None, message=f"injecting {kind} noise into a copy of {name}")
    pairs = store.pairs_frame(ds.id)
    images = store.images_frame(ds.id)
    records = pairs.merge(images[["image_id", "width", "height", "nbytes"]], on="image_id", how="left")
    records = clean_records(records[["image_path", "image_hash", "width", "height", "nbytes", "caption", "split",
                                     "key", "is_noisy", "original_caption"]])
    progress.check()
    noisy = inject_noise(records, ratio, kind, seed, k=k, encoder=encoder)
    info = {"noise": {"ratio": ratio, "kind": kind, "seed": seed, "k": k if kind == "hard" else None,
                      "source": name, "pairs": int(noisy["is_noisy"].sum())}}
    progress.check()
    counts = store.write_dataset(new_name, ds.root, ds.source_format, noisy, source_path=ds.source_path,
                                 parent=name, info=info, replace=replace)
    return counts | {"name": new_name, "parent": name, "noisy": int(noisy["is_noisy"].sum()),
                     "train_pairs": int((noisy["split"] == NOISY_SPLIT).sum())}
