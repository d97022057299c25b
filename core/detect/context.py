"""The labelled pairs' sibling context, matched to the noisy split's before the fused classifier learns from them.

The fused classifier learns from the trusted pairs of a clean split (and the negatives made from them) but
scores the pairs of the noisy `train` split, and the sibling terms differ between the two for a reason that
has nothing to do with the pair itself: a trusted image's other captions are all clean, while a train image's
are mismatched at the split's noise rate. A clean train caption therefore agrees less with its siblings than a
clean trusted one, and a classifier fitted on trusted pairs as they are over-trusts the sibling terms (most
where the noise is heavy: fashion-mnist at 60 % random swaps, docs/benchmarks.md).

So the labelled pairs are given the noisy split's kind of context: each caption of a trusted image is swapped,
with probability `rate`, for a foreign caption drawn as the constructed negatives are (`core.detect.labels`:
a near miss or a random caption of another image), and the labelled pairs' sibling terms are computed in that
swapped pool. Where mismatches come a whole image at a time (the `decl` kind: every caption of an image
replaced), a clean caption's siblings are all clean and a mismatched one's all foreign, so there the trusted
pairs keep their context and the constructed negatives get their images wholly swapped (`labelled_contexts`).
The rate and the near-miss share are fitted without any label, in each space apart (a run's caption space was
trained on the noisy pairs, so its siblings may agree more than the text tower's): they are the ones at which the
agreement of the trusted images' captions is distributed as the noisy split's. Which of the two kinds the split
carries is its noise, not a space's, so a concord run decides it once over every space (`swapped_whole`), by how
near each kind's best context comes to the noisy split in its captions' agreement and in its images' mean
agreement (the image level is where the kinds differ most). Only
sibling terms change: the neighbour terms draw their neighbours from the noisy split's pairs
(`core.detect.signals.searched_pool`), for trusted and noisy pairs alike.
"""
from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from core.detect.consensus import Pool, sibling_terms
from core.detect.labels import construct_negatives
from core.index import VectorIndex


@dataclass(frozen=True)
class SwapDraw:
    """One random draw of swaps over the trusted images' pool captions, from which every (rate, near-miss share,
    whole images or not) context is cut. The same draw serves every setting, so a higher rate swaps a superset
    of a lower rate's captions and the fit's distance changes smoothly between neighbouring settings."""

    pool: Pool
    image: np.ndarray          # the slots: each trusted image's pool captions, as (image row, caption row)
    caption: np.ndarray
    near: np.ndarray           # a near-miss caption for each slot (-1: none could be drawn)
    random: np.ndarray         # a random foreign caption for each slot (-1: none could be drawn)
    draw: np.ndarray           # uniform in [0, 1): a slot is swapped at rate r when draw < r
    image_draw: np.ndarray     # uniform in [0, 1), one per image: with whole images, all its slots at once
    kind: np.ndarray           # uniform in [0, 1): a swapped slot takes its near miss at share s when kind < s

    def at(self, rate: float, share: float, whole: bool = False) -> "Context":
        """The context with the slots (`whole`: every slot of the images) drawn below `rate` swapped, for their
        near miss at near-miss share `share` and for their random caption otherwise."""
        foreign = np.where(self.kind < share, self.near, self.random)
        swapped = ((self.image_draw if whole else self.draw) < rate) & (foreign >= 0)
        if not swapped.any():                     # the pool as it is (rate 0, the trusted pairs' whole-image case)
            none = np.zeros(0, np.int64)
            return Context(self.pool, float(rate), float(share), whole, none, none)
        members = self.pool.members.tocoo()
        n_captions = members.shape[1]
        keys = self.image[swapped] * n_captions + self.caption[swapped]
        kept = ~np.isin(members.row.astype(np.int64) * n_captions + members.col, keys)
        pool = Pool.from_pairs(np.concatenate([members.row[kept], self.image[swapped]]),
                               np.concatenate([members.col[kept], foreign[swapped]]), *members.shape)
        order = np.argsort(keys)
        return Context(pool, float(rate), float(share), whole, keys[order], foreign[swapped][order])


@dataclass(frozen=True)
class Context:
    """A swapped pool, and which caption stands in each swapped (image, caption) slot."""

    pool: Pool
    rate: float                # the share of the trusted images' captions (or, `whole`, images) swapped
    share: float               # the share of the swaps that are near misses
    whole: bool                # whole images swapped (mismatches come an image at a time), else captions one by one
    swapped_keys: np.ndarray   # image row * n_captions + caption row of each swapped slot, sorted
    swapped_in: np.ndarray     # the foreign caption now in that slot

    def stand_in(self, q_image: np.ndarray, q_caption: np.ndarray) -> np.ndarray:
        """The pool caption in each query's own slot: the foreign one where the slot was swapped, else its own."""
        out = np.array(q_caption, np.int64)
        if len(self.swapped_keys):
            keys = np.asarray(q_image, np.int64) * self.pool.members.shape[1] + out
            pos = np.minimum(np.searchsorted(self.swapped_keys, keys), len(self.swapped_keys) - 1)
            hit = self.swapped_keys[pos] == keys
            out[hit] = self.swapped_in[pos[hit]]
        return out


def draw_swaps(pool: Pool, images: np.ndarray, caption_emb: np.ndarray, near_k: int = 10, seed: int = 0,
               index: VectorIndex | None = None) -> SwapDraw:
    """A near-miss and a random foreign caption, and two uniform draws, for each pool caption of `images` (rows
    into the pool). Near misses are among the `near_k` captions nearest in `caption_emb`: a space's own near
    misses (each space gets its own draw; on the demo's development cells that cost less than near misses of
    the text tower's space for every space, docs/benchmarks.md). `index`: the pool captions' index in that
    space, when the caller has one."""
    captions_of = pool.captions_of[np.asarray(images, np.int64)]
    image = np.repeat(np.asarray(images, np.int64), np.diff(captions_of.indptr))
    caption = captions_of.indices.astype(np.int64)
    foreign = []
    for share in (1.0, 0.0):
        made = construct_negatives(image, caption, pool, caption_emb, 1.0, share, near_k, seed + 1, index)
        slot = np.full(len(image), -1, np.int64)
        slot[made.source] = made.caption_row
        foreign.append(slot)
    rng = np.random.default_rng([seed, 8191])
    draw, kind = rng.random(len(image)), rng.random(len(image))
    per_image = rng.random(len(images))[np.repeat(np.arange(len(images)), np.diff(captions_of.indptr))]
    return SwapDraw(pool, image, caption, foreign[0], foreign[1], draw, per_image, kind)


RATES = np.linspace(0.0, 1.0, 21)
SHARES = np.linspace(0.0, 1.0, 5)
"""The settings the context is fitted over: the swap rate in steps of 0.05, the near-miss share in quarters."""
QUANTILES = np.linspace(0.01, 0.99, 99)
KindFits = dict[bool, tuple[tuple[float, float, bool], float]]
"""`context_fits`' answer: for each kind of swap (whole images or not), its best grid point and its distance to
the noisy split there (captions' and images' agreement)."""


def context_fits(draw: SwapDraw, caption_emb: np.ndarray, noisy_image: np.ndarray,
                 noisy_caption: np.ndarray) -> KindFits:
    """For each kind of swap (False: captions one by one; True: whole images), the grid point whose trusted
    images' sibling agreement in one space is distributed nearest the noisy pairs', and that distance.

    Args:
        draw: the swaps of the trusted images' captions (`draw_swaps`, in the same space).
        caption_emb: the space's normalised caption embeddings, rows as the pool's captions.
        noisy_image, noisy_caption: the pairs of the noisy split, whose sibling agreement is the target.
    Grid points: `RATES` × `SHARES` one by one; `RATES` with random captions for whole images, whose near misses
    would agree with each other as the image's own captions do. A kind's grid point is the one at the least
    1-Wasserstein distance (the mean gap between the quantiles) over every caption of the trusted images,
    swapped-in ones included (as the noisy split's pairs are all its captions, mismatched ones included): a
    minimum-distance estimate of the noise the split carries, fitted on no label. The unswapped pool (rate 0) is
    a candidate of both kinds, as (0, 0, False). The distance returned for the kind adds the same distance over
    the images' mean agreement (`image_means`), which is what tells the kinds apart: whole images swapped leave an
    image's captions all clean or all foreign, captions swapped one by one mix them within each image, and where
    an image's captions are few templates shared by many images (fashion-mnist) the captions' agreement alone
    can come out level for both kinds (docs/benchmarks.md, stop 48). Empty when either has no siblings.
    """
    noisy_agreement = sibling_terms(caption_emb, draw.pool, noisy_image, noisy_caption)[0]
    target, target_images = _quantiles(noisy_agreement), _quantiles(image_means(noisy_agreement, noisy_image))
    # the search needs only the trusted images' captions: a pool of those alone is cut far faster
    local = replace(draw, pool=Pool.from_pairs(draw.image, draw.caption, *draw.pool.members.shape))

    def agreement(rate: float, share: float, whole: bool) -> np.ndarray:
        context = local.at(rate, share, whole)
        return sibling_terms(caption_emb, context.pool, draw.image, context.stand_in(draw.image, draw.caption))[0]

    unswapped = agreement(0.0, 0.0, False)
    if target is None or _quantiles(unswapped) is None:
        return {}
    fits = {}
    for whole in (False, True):                  # rate 0 is the unswapped pool whatever the rest: measured once
        best, best_gap, best_agreement = (0.0, 0.0, False), _gap(unswapped, target), unswapped
        for share in (SHARES if not whole else SHARES[:1]):
            for rate in RATES[1:]:
                swapped = agreement(rate, share, whole)
                gap = _gap(swapped, target)
                if gap < best_gap - 1e-12:
                    best, best_gap, best_agreement = (float(rate), float(share), whole), gap, swapped
        fits[whole] = (best, best_gap + _gap(image_means(best_agreement, draw.image), target_images))
    return fits


def swapped_whole(fits: list[KindFits]) -> bool:
    """Whether mismatches come a whole image at a time, decided once for every space (`context_fits` of each): the
    kind whose distances, summed over the spaces, are the smaller. It is the split's noise, not a space's; a
    space alone can take the wrong kind where its sibling agreement barely tells them apart (the text tower's on
    fashion-mnist at 70 % random swaps, docs/benchmarks.md). Where every space takes the same kind, that one."""
    fits = [f for f in fits if f]
    return bool(fits) and sum(f[True][1] for f in fits) < sum(f[False][1] for f in fits) - 1e-12


def context_at(draw: SwapDraw, fits: KindFits, whole: bool) -> Context:
    """The trusted images' context, cut from `draw`, at the grid point `context_fits` found for the kind `whole`
    (nothing swapped where it found none)."""
    return draw.at(*fits[whole][0]) if fits else draw.at(0.0, 0.0)


def matched_context(draw: SwapDraw, caption_emb: np.ndarray, noisy_image: np.ndarray,
                    noisy_caption: np.ndarray) -> Context:
    """The trusted images' context in one space, of the kind and grid point whose sibling agreement is distributed
    nearest the noisy pairs' (`context_fits`; a concord run decides the kind over every space, `swapped_whole`).
    `labelled_contexts` gives the labelled pairs' contexts."""
    fits = context_fits(draw, caption_emb, noisy_image, noisy_caption)
    return context_at(draw, fits, swapped_whole([fits]))


def labelled_contexts(draw: SwapDraw, context: Context) -> tuple[Context, Context]:
    """The contexts (trusted pairs', constructed negatives') that mirror `context`'s noise on the noisy split.

    Captions swapped one by one: a clean caption and a mismatched one alike sit among siblings swapped at the
    rate, so both get `context`. Whole images swapped: a clean caption's siblings are all clean (its image was
    not swapped), so the trusted pairs keep their own context; a mismatched caption's are all foreign, so the
    constructed negatives get their images wholly swapped."""
    if not context.whole:
        return context, context
    return draw.at(0.0, context.share), draw.at(1.0, context.share, whole=True)


def image_means(agreement: np.ndarray, image: np.ndarray) -> np.ndarray:
    """Each image's mean sibling agreement over its captions (`agreement`, one per caption of `image`, NaN where
    it has none): one value per image with any, in the order of the image rows."""
    known = np.isfinite(agreement)
    _, row = np.unique(np.asarray(image)[known], return_inverse=True)
    return np.bincount(row, agreement[known]) / np.bincount(row)


def _gap(agreement: np.ndarray, target: np.ndarray) -> float:
    """The 1-Wasserstein distance between `agreement`'s distribution and `target`'s quantiles."""
    mine = _quantiles(agreement)
    return float("inf") if mine is None else float(np.abs(mine - target).mean())


def _quantiles(agreement: np.ndarray) -> np.ndarray | None:
    finite = agreement[np.isfinite(agreement)]
    return np.quantile(finite, QUANTILES) if len(finite) else None
