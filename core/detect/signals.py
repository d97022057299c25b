"""The per-pair signals of a dataset under its finished runs: one column per (space, consensus signal).

A *space* is a finished run's embeddings (b0/b1/NPC/MSCN all store one vector per image and caption); the
text tower's own cached caption features add a text-only space for the sibling terms, and beside the images' raw
pixels a pixel space for the neighbour terms (`core.detect.pixels`). Those two are *shared*: no network trains
them, and every network's classifier reads them (`space_groups`); each run space also scores, with its own
cosine, the pixel space's neighbours of every pair (`look_alikes`, `read_alikes`: its columns). Everything is indexed by
rows of `SignalInputs.image_ids` / `caption_ids`, so the same code scores dataset pairs and the negatives the
fused classifier constructs. Only pair ids, image ids, caption ids and splits reach this module: no ground truth
(`is_noisy`, original captions) and nothing of the `test` split's pairs (they are scored, never pooled).
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import NamedTuple, Sequence

import numpy as np
import pandas as pd

from core.detect.consensus import (CaptionSets, Pool, Space, look_alike_signals, sibling_terms, similarity_margin,
                                   text_signals)
from core.detect.context import Context
from core.index import normalise
from core.meta_seed import HELD_OUT_SPLIT, TRAIN_SPLIT
TEXT_SPACE = "text"
PIXEL_SPACE = "pixels"
SHARED_SPACES = (TEXT_SPACE, PIXEL_SPACE)
PAIR_COLUMNS = ("pair_id", "image_id", "caption_id", "split")
"""The only columns of the store's pairs frame that the signals read."""


@dataclass(frozen=True)
class SignalInputs:
    """The spaces signals are computed in, over one dataset's image and caption ids."""

    image_ids: np.ndarray                             # sorted store image ids
    caption_ids: np.ndarray                           # sorted store caption ids
    spaces: dict[str, tuple[np.ndarray, np.ndarray]]  # name -> (image_emb, caption_emb), rows as the ids
    text: np.ndarray | None                           # the text tower's caption features, rows as caption_ids
    pixels: np.ndarray | None = None                  # the images' pixel features, rows as image_ids (with text)

    def image_rows(self, ids: np.ndarray) -> np.ndarray:
        return _rows(self.image_ids, ids, "image")

    def caption_rows(self, ids: np.ndarray) -> np.ndarray:
        return _rows(self.caption_ids, ids, "caption")


def _rows(known: np.ndarray, wanted: np.ndarray, what: str) -> np.ndarray:
    wanted = np.asarray(wanted, np.int64)
    pos = np.minimum(np.searchsorted(known, wanted), max(len(known) - 1, 0))
    if len(wanted) and (len(known) == 0 or (known[pos] != wanted).any()):
        raise KeyError(f"no embedding for a {what} of the labelled pairs")
    return pos


def pair_view(pairs: pd.DataFrame) -> pd.DataFrame:
    """The columns of a pairs frame the signals may see (see `PAIR_COLUMNS`)."""
    return pairs.loc[:, list(PAIR_COLUMNS)].reset_index(drop=True)


def pooled(pairs: pd.DataFrame) -> pd.DataFrame:
    """The pairs outside the held-out `test` split: what siblings and neighbours come from."""
    return pairs[pairs["split"] != HELD_OUT_SPLIT]


def pool_of(pairs: pd.DataFrame, inputs: SignalInputs) -> Pool:
    """The pool siblings and neighbours come from (`pooled`)."""
    return _pool(pooled(pairs), inputs)


def searched_pool(pairs: pd.DataFrame, inputs: SignalInputs) -> Pool:
    """The pairs whose images and captions neighbours are searched among: the noisy split's (every pool pair where
    the dataset has none). So a trusted pair from a clean split meets neighbours as noisy as a training pair's: a
    clean split's pairs would otherwise find each other (the demo keeps each scene's near-miss sibling in its own
    split) and teach the classifier that neighbours agree more than they do among the pairs it scores."""
    noisy = pairs[pairs["split"] == TRAIN_SPLIT]
    return _pool(noisy, inputs) if len(noisy) else pool_of(pairs, inputs)


def _pool(pairs: pd.DataFrame, inputs: SignalInputs) -> Pool:
    return Pool.from_pairs(inputs.image_rows(pairs["image_id"].to_numpy()),
                           inputs.caption_rows(pairs["caption_id"].to_numpy()),
                           len(inputs.image_ids), len(inputs.caption_ids))


def index_spaces(inputs: SignalInputs, pool: Pool, searched: Pool | None = None, margins: bool = True
                 ) -> dict[str, Space]:
    """Each run space, and the pixel space where the inputs have one, over the pool, its neighbours searched among
    `searched`'s images and captions (default the pool's; `searched_pool`), indexed once for everything that
    searches it; with `margins`, the run spaces give their margins over the siblings too
    (`core.detect.consensus.MARGIN_SIGNALS`)."""
    spaces = {space: Space.build(image_emb, caption_emb, pool, searched=searched, margins=margins)
              for space, (image_emb, caption_emb) in inputs.spaces.items()}
    if inputs.pixels is not None and inputs.pixels.shape[1] and inputs.text is not None:   # identical images: none
        spaces[PIXEL_SPACE] = Space.build(inputs.pixels, inputs.text, pool, joint=False, searched=searched)
    return spaces


class Query(NamedTuple):
    """A set of pairs to compute signals for, as rows into the inputs' image and caption ids."""

    image: np.ndarray
    caption: np.ndarray
    moved_from: np.ndarray | None = None   # constructed mismatches: the image their caption left (`Space.signals`)


def signal_matrix(inputs: SignalInputs, pool: Pool, queries: Sequence[Query], k: int, tau: float,
                  indexed: dict[str, Space] | None = None, look_alikes: bool = True,
                  searched: Pool | None = None, margins: bool = True) -> tuple[list[str], list[np.ndarray]]:
    """(names, one (n, s) matrix per query set) of every signal of each query's pairs. Each space is indexed
    once for all the query sets (`indexed`: by `index_spaces` when the caller searches them too, else here over
    `searched`, default the pool). With `margins`, the text tower's space gives `sibling_margin` too, its other
    images among `searched`'s (the run spaces as `indexed` was built). With
    `look_alikes` and a pixel space, each run space also gets its cosine over the pixel space's neighbours
    (`core.detect.consensus.look_alike_signals`), from the same searches as the pixel space's own terms."""
    columns: list[dict[str, np.ndarray]] = [{} for _ in queries]
    indexed = indexed or index_spaces(inputs, pool, searched, margins)
    pixel_neighbours = ([indexed[PIXEL_SPACE].neighbours(q.image, q.caption, k) for q in queries]
                        if PIXEL_SPACE in indexed else [None] * len(queries))
    for space, indexed_space in indexed.items():
        for cols, q, nb in zip(columns, queries, pixel_neighbours):
            for s, v in indexed_space.signals(q.image, q.caption, k, tau, q.moved_from,
                                              nb if space == PIXEL_SPACE else None).items():
                cols[f"{space}.{s}"] = v
            if look_alikes and nb is not None and space not in SHARED_SPACES:
                for s, v in look_alike_signals(indexed_space, nb, q.image, q.caption, tau).items():
                    cols[f"{space}.{s}"] = v
    if inputs.text is not None:
        sets = CaptionSets.build(inputs.text, searched or pool) if margins else None
        for cols, q in zip(columns, queries):
            for s, v in text_signals(inputs.text, pool, q.image, q.caption, sets).items():
                cols[f"{TEXT_SPACE}.{s}"] = v
    names = list(columns[0]) if columns else []
    return names, [np.column_stack([cols[n] for n in names]) if names else np.zeros((len(q.image), 0))
                   for cols, q in zip(columns, queries)]


def caption_spaces(inputs: SignalInputs) -> dict[str, np.ndarray]:
    """Every space's caption embeddings (the runs' and the text tower's): where the sibling terms are computed."""
    captions = {space: caption_emb for space, (_, caption_emb) in inputs.spaces.items()}
    if inputs.text is not None:
        captions[TEXT_SPACE] = inputs.text
    return captions


def run_spaces(names: Sequence[str]) -> list[str]:
    """The run spaces among signal names (`space.signal`), in order of appearance (the shared ones are not)."""
    return list(dict.fromkeys(n.partition(".")[0] for n in names if n.partition(".")[0] not in SHARED_SPACES))


def space_groups(names: list[str]) -> list[list[int]] | None:
    """The signal columns of each run space (in `run_spaces` order), each with the shared spaces'
    (`core.detect.fusion.fit_fused`'s groups: one classifier per network); None with fewer than two run spaces,
    where that is one classifier anyway."""
    space_of = [n.partition(".")[0] for n in names]
    shared = [j for j, space in enumerate(space_of) if space in SHARED_SPACES]
    spaces = run_spaces(names)
    return ([[j for j, sp in enumerate(space_of) if sp == space] + shared for space in spaces]
            if len(spaces) > 1 else None)


def in_context(names: list[str], x: np.ndarray, contexts: dict[str, tuple[np.ndarray, Context, np.ndarray | None]],
               q_image: np.ndarray, q_caption: np.ndarray) -> np.ndarray:
    """`x` (the queries' signals) with each space's sibling terms computed in that space's swapped pool instead
    (`contexts`: space -> (its caption embeddings, its matched context, its image embeddings: None for the text
    tower's space), `core.detect.context`); the other signals do not depend on the image's own captions and stay. A
    sibling margin moves with the siblings (its other images come from the noisy split, which no context swaps); a
    similarity margin is taken over the image's captions in the context."""
    out = np.array(x, np.float64)
    for space, (emb, context, image_emb) in contexts.items():
        stand_in = context.stand_in(q_image, q_caption)
        agreement, rank = sibling_terms(emb, context.pool, q_image, q_caption, stand_in=stand_in)
        if f"{space}.sibling_margin" in names:
            j = names.index(f"{space}.sibling_margin")
            out[:, j] += agreement - out[:, names.index(f"{space}.siblings")]
        if image_emb is not None and f"{space}.similarity_margin" in names:
            out[:, names.index(f"{space}.similarity_margin")] = similarity_margin(
                image_emb, emb, context.pool, q_image, q_caption, stand_in)
        out[:, names.index(f"{space}.siblings")] = agreement
        out[:, names.index(f"{space}.sibling_rank")] = rank
    return out


def summary_signals(names: list[str], x: np.ndarray) -> dict[str, np.ndarray]:
    """One column per signal kind (the mean over the run spaces; each shared space's apart, e.g.
    `text_siblings`, `pixels_caption_images`), for the map and the Review line."""
    kinds: dict[str, list[int]] = {}
    for j, name in enumerate(names):
        space, _, signal = name.partition(".")
        key = f"{space}_{signal}" if space in SHARED_SPACES else signal
        kinds.setdefault(key, []).append(j)
    with warnings.catch_warnings():       # a pair missing a signal in every space stays NaN
        warnings.simplefilter("ignore", RuntimeWarning)
        return {key: np.nanmean(x[:, cols], axis=1) if len(cols) > 1 else x[:, cols[0]].astype(np.float64)
                for key, cols in kinds.items()}


def load_inputs(store, dataset_id: int, runs: list, pairs: pd.DataFrame, text_model: str | None,
                device: str = "auto", pixels: bool = False) -> SignalInputs:
    """The spaces of `runs` (their cached embeddings), with `text_model` its cached caption features, and with
    `pixels` too the images' pixel features (`core.detect.pixels`, its components fitted on the images outside the
    held-out split)."""
    from core import artifacts
    image_ids = np.unique(pairs["image_id"].to_numpy(np.int64))
    caption_ids = np.unique(pairs["caption_id"].to_numpy(np.int64))
    spaces = {}
    for run in runs:
        emb = artifacts.load_embeddings(run)
        spaces[f"{run.method}#{run.id}"] = (normalise(emb.image_rows(image_ids)),
                                            normalise(emb.caption_rows(caption_ids)))
    text = None
    if text_model is not None:
        from core.features import text_features
        text = normalise(text_features(store, dataset_id, text_model, device).rows(caption_ids))
    pixel = None
    if pixels and text is not None:
        from core.detect.pixels import dataset_pixel_features
        pixel = dataset_pixel_features(store, dataset_id, image_ids,
                                       fit_ids=pooled(pairs)["image_id"].to_numpy(np.int64))
    return SignalInputs(image_ids, caption_ids, spaces, text, pixel)
