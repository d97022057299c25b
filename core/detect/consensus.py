"""Consensus signals of an image–caption combination: how well it agrees with its siblings and its neighbours.

Pure functions over one embedding *space* (L2-normalised image and caption embeddings, e.g. a finished run's) and
a *pool*: the pairs that siblings and neighbours are drawn from, as (image row, caption row) into that space.
A query is any (image row, caption row) combination, a pool pair or not (the fused classifier also scores
negatives it constructs). Every signal is oriented the same way: **higher means the pair looks matched**.

- `similarity`: cos(image, caption).
- `caption_margin`: the similarity minus that of the caption's best other image (does the caption prefer
  another image of the pool?).
- `image_margin`: the similarity minus that of the image's best caption that is not one of its own.
- `image_neighbours` (LEMoN's s_n, as an agreement): the caption against the captions of the image's k nearest
  other images (image space), each neighbour weighted by exp(−tau · (1 − cos(image, neighbour))).
- `caption_neighbours` (LEMoN's s_m): the image against the images of the caption's k nearest other captions
  (text space; the image's own captions left out), weighted by exp(−tau · (1 − cos(caption, neighbour))).
- `caption_images`: the image against the caption's other images (the same caption text paired with other
  images of the pool: templated or repeated captions), their normalised mean; NaN where the caption has none.
  A query that stands for a caption moved from another image (a constructed mismatch) leaves that image out,
  as a real swap takes the caption from it.
- `siblings`: mean cosine of the caption to the image's other captions; `sibling_rank`: its place among
  them when each caption of the image is scored by the same agreement (0 = agrees least, 1 = most).
  NaN where the image has no other caption.
- `sibling_margin`: `siblings` minus the caption's highest agreement with another image's captions
  (`CaptionSets.other_agreement`: the images the space searches, the caption itself left out of each). A caption
  moved to the wrong image, a near miss above all, agrees with its new siblings almost as a true one does, but
  better with those it was taken from.
- `similarity_margin`: `similarity` minus the image's mean cosine with its other captions: how much better the image
  matches this caption than its siblings (a network that represents an image poorly scores all its captions low).
  NaN where the image has no other caption.

A neighbour's captions (or a caption's images) enter as their normalised mean embedding, so one mismatched
caption of a neighbour moves the term little. Neighbour search goes through `core.index.VectorIndex` (faiss).

Two terms join two spaces (`look_alike_signals`): a run's joint space scores, and a space no network trained
(the pixel space) finds the neighbours, so memorising a pair does not raise them:
- `look_alikes`: the caption against the images that look most like the pair's image (the run's cosine, k nearest
  other images of the other space, weighted by their cosine there);
- `read_alikes`: the image against the captions that read most like the pair's caption (the image's own captions
  left out), likewise.

A space need not embed both modalities in one space: where images and captions come from separate encoders (the
pixel space, `core.detect.pixels`: raw pixels and the text tower's features), only the same-modality terms exist,
`NEIGHBOUR_SIGNALS`.
"""
from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np
from scipy import sparse

from core.index import VectorIndex, normalise

SIGNALS = ("similarity", "caption_margin", "image_margin", "image_neighbours", "caption_neighbours", "caption_images",
           "siblings", "sibling_rank", "sibling_margin", "similarity_margin")
NEIGHBOUR_SIGNALS = ("image_neighbours", "caption_neighbours", "caption_images")
"""The signals that compare images only with images and captions only with captions (a space that is not joint)."""
MARGIN_SIGNALS = ("sibling_margin", "similarity_margin")
"""A joint space's margins over the pair's siblings (`Space.build`'s `margins`)."""
LOOK_ALIKE_SIGNALS = ("look_alikes", "read_alikes")
"""A joint space's cosine over another space's neighbours (`look_alike_signals`)."""


@dataclass(frozen=True)
class Pool:
    """The pairs siblings and neighbours come from, as a binary image × caption membership matrix."""

    members: sparse.csr_matrix      # (n_images, n_captions): 1 where the pool pairs the image with the caption

    @classmethod
    def from_pairs(cls, image_row: np.ndarray, caption_row: np.ndarray, n_images: int, n_captions: int) -> "Pool":
        m = sparse.csr_matrix((np.ones(len(image_row), np.float32), (np.asarray(image_row), np.asarray(caption_row))),
                              shape=(n_images, n_captions))
        m.data[:] = 1.0          # a pair listed twice is one membership
        return cls(m)

    @property
    def captions_of(self) -> sparse.csr_matrix:
        return self.members

    @functools.cached_property
    def images_of(self) -> sparse.csr_matrix:
        return self.members.T.tocsr()

    @functools.cached_property
    def _keys(self) -> np.ndarray:
        """Each pool pair as image row * n_captions + caption row, sorted."""
        rows = np.repeat(np.arange(self.members.shape[0], dtype=np.int64), np.diff(self.members.indptr))
        return np.sort(rows * self.members.shape[1] + self.members.indices.astype(np.int64))

    def contains(self, image_row: np.ndarray, caption_row: np.ndarray) -> np.ndarray:
        """Whether each (image, caption) combination is a pool pair (arrays of any one shape; a negative row,
        faiss's "no result", never is)."""
        image_row, caption_row = np.asarray(image_row, np.int64), np.asarray(caption_row, np.int64)
        keys = image_row * self.members.shape[1] + caption_row
        if not len(self._keys):
            return np.zeros(keys.shape, bool)
        pos = np.minimum(np.searchsorted(self._keys, keys), len(self._keys) - 1)
        return (image_row >= 0) & (caption_row >= 0) & (self._keys[pos] == keys)


def centroids(members: sparse.csr_matrix, emb: np.ndarray) -> np.ndarray:
    """Normalised mean of each row's member embeddings (rows without members stay zero)."""
    return normalise(members @ emb)


def _weighted_mean(values: np.ndarray, sims: np.ndarray, valid: np.ndarray, tau: float) -> np.ndarray:
    w = np.where(valid, np.exp(-tau * (1.0 - np.where(valid, sims, 0.0))), 0.0)
    total = w.sum(axis=1)
    out = np.full(len(values), np.nan)
    np.divide((w * np.where(valid, values, 0.0)).sum(axis=1), total, out=out, where=total > 0)
    return out


def _search_excluding(index: VectorIndex, queries: np.ndarray, k: int, own: np.ndarray | None, extra: int,
                      pool: Pool | None = None, query_image: np.ndarray | None = None
                      ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The k best results of each query that are neither `own[q]` nor, with `pool`, a caption the pool pairs
    with image `query_image[q]` (ids, sims, valid)."""
    want = min(len(index), k + extra)
    ids, sims = index.search(queries, want)
    valid = ids >= 0
    if own is not None:
        valid &= ids != own[:, None]
    if pool is not None:
        valid &= ~pool.contains(np.broadcast_to(query_image[:, None], ids.shape), ids)
    return _first_valid(ids, sims, valid, k)


def _first_valid(ids: np.ndarray, sims: np.ndarray, valid: np.ndarray, k: int
                 ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Each row's first k valid results, in similarity order (ids, sims, valid; invalid ones fill the rest)."""
    order = np.argsort(~valid, axis=1, kind="stable")[:, :k]
    return (np.take_along_axis(ids, order, 1), np.take_along_axis(sims, order, 1),
            np.take_along_axis(valid, order, 1))


def caption_set(emb: np.ndarray, pool: Pool, q_image: np.ndarray, q_caption: np.ndarray, stand_in: np.ndarray,
                in_pool: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(the sum of each query image's captions in the space of `emb`, the query's caption in its slot; how many
    others there are): its pool captions with `stand_in` (the pool caption in the query's slot) replaced by the
    query's caption, or the query's caption added where `stand_in` is no pool pair of the image (`in_pool`:
    `pool.contains(q_image, stand_in)` when the caller has it already)."""
    caps = pool.captions_of
    in_pool = pool.contains(q_image, stand_in) if in_pool is None else in_pool
    swapped = in_pool & (stand_in != q_caption)
    images, of_query = np.unique(q_image, return_inverse=True)
    total = (np.asarray(caps[images] @ emb)[of_query]
             + np.where(~in_pool | swapped, 1.0, 0.0)[:, None] * emb[q_caption]
             - np.where(swapped, 1.0, 0.0)[:, None] * emb[stand_in])
    return total, np.diff(caps.indptr)[q_image] + np.where(in_pool, 0, 1) - 1


def sibling_terms(text_emb: np.ndarray, pool: Pool, q_image: np.ndarray, q_caption: np.ndarray,
                  in_pool: np.ndarray | None = None, stand_in: np.ndarray | None = None
                  ) -> tuple[np.ndarray, np.ndarray]:
    """(siblings, sibling_rank) of each query in the space of `text_emb` (normalised rows); NaN without siblings.

    The image's captions are its pool captions plus the query's; a caption's agreement is its mean cosine to
    the others. The rank compares the query's agreement with each sibling's (ties count half). `stand_in`: the
    pool caption in the query's place, left out of its siblings (default the query's own caption; a pool whose
    captions were swapped for foreign ones, `core.detect.context`, puts the swapped-in one there). `in_pool`:
    `pool.contains(q_image, stand_in)` when the caller has it already."""
    q_image, q_caption = np.asarray(q_image), np.asarray(q_caption)
    stand_in = q_caption if stand_in is None else np.asarray(stand_in)
    caps = pool.captions_of
    total, others = caption_set(text_emb, pool, q_image, q_caption, stand_in, in_pool)
    agreement = np.full(len(q_image), np.nan)
    dots = np.einsum("nd,nd->n", text_emb[q_caption], total)
    np.divide(dots - 1.0, others, out=agreement, where=others > 0)
    # each sibling's own agreement within the same caption set: one row per (query, sibling)
    rows = caps[q_image]
    owner = np.repeat(np.arange(len(q_image)), np.diff(rows.indptr))
    sib = rows.indices.astype(np.int64)
    keep = sib != stand_in[owner]
    owner, sib = owner[keep], sib[keep]
    sib_agree = (np.einsum("nd,nd->n", text_emb[sib], total[owner]) - 1.0) / np.maximum(others[owner], 1)
    below = np.bincount(owner, weights=(sib_agree < agreement[owner]).astype(float), minlength=len(q_image))
    ties = np.bincount(owner, weights=(sib_agree == agreement[owner]).astype(float), minlength=len(q_image))
    rank = np.full(len(q_image), np.nan)
    np.divide(below + 0.5 * ties, others, out=rank, where=others > 0)
    return agreement, rank


BATCH_EXACT_BELOW = 4096
"""The spaces' indexes are searched by every pair at once: exact (flat) below this many vectors, IVF above
(calibrated to 0.99 recall@10, `core.index`), where exact search of 100k queries would take most of the time."""


@dataclass(frozen=True)
class Neighbours:
    """Each query's nearest indexed images to its image and indexed captions to its caption in one space
    (`Space.neighbours`): rows into the space's images / captions, their cosines, and which are real (an index
    smaller than k leaves some empty)."""

    images: np.ndarray          # (n, k) image rows
    image_sims: np.ndarray
    image_valid: np.ndarray
    captions: np.ndarray        # (n, k) caption rows, none of them one of the query image's own captions
    caption_sims: np.ndarray
    caption_valid: np.ndarray


@dataclass(frozen=True)
class Space:
    """One embedding space over a pool, indexed once for any number of query sets (`signals`)."""

    img: np.ndarray                    # normalised image embeddings, one row per image
    cap: np.ndarray                    # normalised caption embeddings, one row per caption
    pool: Pool
    image_index: VectorIndex           # the pool's images
    caption_index: VectorIndex         # the pool's captions
    caption_centroid: np.ndarray       # per image: its pool captions' normalised mean
    image_sum: np.ndarray              # per caption: the sum of its pool images
    image_centroid: np.ndarray         # per caption: its pool images' normalised mean
    joint: bool = True                 # images and captions in one space (else only `NEIGHBOUR_SIGNALS`)
    searched: Pool | None = None       # the pairs the indexes hold (`build`; None: the pool's)
    margins: bool = True               # a joint space also gives `MARGIN_SIGNALS`

    @classmethod
    def build(cls, image_emb: np.ndarray, caption_emb: np.ndarray, pool: Pool,
              exact_below: int = BATCH_EXACT_BELOW, joint: bool = True, searched: Pool | None = None,
              margins: bool = True) -> "Space":
        """The space over `pool`; its indexes hold the images and captions of `searched`'s pairs (default the
        pool's): what neighbours, margins and near misses are searched among (`sibling_margin`'s other images
        too). `margins`: a joint space gives `MARGIN_SIGNALS` (False: the signals before them)."""
        img, cap = normalise(image_emb), normalise(caption_emb)
        searched = pool if searched is None else searched
        pool_images = np.flatnonzero(np.diff(searched.captions_of.indptr) > 0)
        pool_captions = np.flatnonzero(np.diff(searched.images_of.indptr) > 0)
        image_sum = np.asarray(pool.images_of @ img, np.float32)
        return cls(img, cap, pool, VectorIndex.build(img[pool_images], pool_images, exact_below),
                   VectorIndex.build(cap[pool_captions], pool_captions, exact_below),
                   centroids(pool.captions_of, cap), image_sum, normalise(image_sum), joint, searched, margins)

    @functools.cached_property
    def caption_sets(self) -> "CaptionSets":
        """Each searched image's captions in this space (`sibling_margin`'s other images), built on first use."""
        return CaptionSets.build(self.cap, self.searched or self.pool)

    @property
    def names(self) -> tuple[str, ...]:
        """The signals this space gives."""
        if not self.joint:
            return NEIGHBOUR_SIGNALS
        return SIGNALS if self.margins else tuple(s for s in SIGNALS if s not in MARGIN_SIGNALS)

    def neighbours(self, q_image: np.ndarray, q_caption: np.ndarray, k: int = 10) -> Neighbours:
        """Each query's k nearest other images to its image and k nearest captions to its caption among those the
        space indexes (`build`'s `searched`), none of them the image's own captions: the searches every neighbour
        term of the queries shares."""
        q_image, q_caption = np.asarray(q_image, np.int64), np.asarray(q_caption, np.int64)
        u_img, img_inv = np.unique(q_image, return_inverse=True)
        u_cap, cap_inv = np.unique(q_caption, return_inverse=True)
        max_own = int(np.diff(self.pool.captions_of.indptr).max(initial=0))
        n_img, n_sim, n_valid = _search_excluding(self.image_index, self.img[u_img], k, u_img, 1)
        c_ids, c_sim, c_valid = _search_excluding(self.caption_index, self.cap[u_cap], k + max_own, u_cap, 1)
        c_ids, c_sim, c_valid = c_ids[cap_inv], c_sim[cap_inv], c_valid[cap_inv]
        valid_q = c_valid & ~self.pool.contains(np.broadcast_to(q_image[:, None], c_ids.shape), c_ids)
        return Neighbours(np.maximum(n_img, 0)[img_inv], n_sim[img_inv], n_valid[img_inv],
                          *_first_valid(np.maximum(c_ids, 0), c_sim, valid_q, k))

    def signals(self, q_image: np.ndarray, q_caption: np.ndarray, k: int = 10, tau: float = 5.0,
                moved_from: np.ndarray | None = None, neighbours: Neighbours | None = None
                ) -> dict[str, np.ndarray]:
        """Every signal of `names` for each query (image row, caption row); see `space_signals`. `neighbours`:
        the queries' `neighbours(q_image, q_caption, k)` where the caller has them already."""
        q_image, q_caption = np.asarray(q_image, np.int64), np.asarray(q_caption, np.int64)
        if len(q_image) == 0:
            return {s: np.zeros(0) for s in self.names}
        img, cap, pool = self.img, self.cap, self.pool
        out: dict[str, np.ndarray] = {}
        if self.joint:
            u_img, img_inv = np.unique(q_image, return_inverse=True)
            u_cap, cap_inv = np.unique(q_caption, return_inverse=True)
            max_own = int(np.diff(pool.captions_of.indptr).max(initial=0))
            out.update(self._cross_modal(q_image, q_caption, u_img, img_inv, u_cap, cap_inv, max_own))

        # LEMoN: neighbours in the same modality
        nb = self.neighbours(q_image, q_caption, k) if neighbours is None else neighbours
        agree = _row_dots(cap[q_caption], self.caption_centroid, nb.images)
        out["image_neighbours"] = _weighted_mean(agree, nb.image_sims, nb.image_valid, tau)
        agree = _row_dots(img[q_image], self.image_centroid, nb.captions)
        out["caption_neighbours"] = _weighted_mean(agree, nb.caption_sims, nb.caption_valid, tau)

        # the caption's other images: its pool images' sum without the query's own image (nor the one it moved from)
        in_pool = pool.contains(q_image, q_caption)
        others = self.image_sum[q_caption] - np.where(in_pool, 1.0, 0.0)[:, None] * img[q_image]
        n_others = np.diff(pool.images_of.indptr)[q_caption] - in_pool
        if moved_from is not None:
            moved_from = np.asarray(moved_from, np.int64)
            moved = (moved_from != q_image) & pool.contains(moved_from, q_caption)
            others = others - np.where(moved, 1.0, 0.0)[:, None] * img[np.maximum(moved_from, 0)]
            n_others = n_others - moved
        norm = np.linalg.norm(others, axis=1)
        dots = np.einsum("nd,nd->n", img[q_image], others)
        out["caption_images"] = np.full(len(q_image), np.nan)
        np.divide(dots, norm, out=out["caption_images"], where=(n_others > 0) & (norm > 1e-6))

        if self.joint:
            out["siblings"], out["sibling_rank"] = sibling_terms(cap, pool, q_image, q_caption, in_pool)
            if self.margins:
                out["sibling_margin"] = sibling_margin(out["siblings"], self.caption_sets.other_agreement(q_image,
                                                                                                         q_caption))
                out["similarity_margin"] = similarity_margin(img, cap, pool, q_image, q_caption, in_pool=in_pool)
        return {s: out[s] for s in self.names}

    def _cross_modal(self, q_image: np.ndarray, q_caption: np.ndarray, u_img: np.ndarray, img_inv: np.ndarray,
                     u_cap: np.ndarray, cap_inv: np.ndarray, max_own: int) -> dict[str, np.ndarray]:
        """similarity, caption_margin and image_margin of each query (a joint space's)."""
        img, cap, pool = self.img, self.cap, self.pool
        sim = np.einsum("nd,nd->n", img[q_image], cap[q_caption]).astype(np.float64)
        # the caption's best image other than the query's own: the best two, and the second where the first is it
        ids2, sims2 = self.image_index.search(cap[u_cap], min(len(self.image_index), 2))
        first_is_own = ids2[cap_inv, 0] == q_image
        other_best = np.where(first_is_own, sims2[cap_inv, -1] if sims2.shape[1] > 1 else -np.inf,
                              sims2[cap_inv, 0])
        _, s_c, v_c = _search_excluding(self.caption_index, img[u_img], 1, None, max_own + 1, pool, u_img)
        best_caption = np.where(v_c[:, 0], s_c[:, 0], np.nan)
        return {"similarity": sim, "caption_margin": np.where(np.isfinite(other_best), sim - other_best, np.nan),
                "image_margin": sim - best_caption[img_inv]}


def look_alike_signals(run: Space, neighbours: Neighbours, q_image: np.ndarray, q_caption: np.ndarray,
                       tau: float = 5.0) -> dict[str, np.ndarray]:
    """`LOOK_ALIKE_SIGNALS` of each query (image row, caption row): a run's own cross-modal cosine, taken not with
    the pair's image or caption but with their neighbours in a space no network trained (`neighbours`, e.g. the
    pixel space's), each weighted by exp(−tau · (1 − cosine)) in that space. A run that memorised a mismatched pair
    scores the pair itself high, but not its caption with the other images that look like its image."""
    q_image, q_caption = np.asarray(q_image, np.int64), np.asarray(q_caption, np.int64)
    if len(q_image) == 0:
        return {s: np.zeros(0) for s in LOOK_ALIKE_SIGNALS}
    look = _row_dots(run.cap[q_caption], run.img, neighbours.images)
    read = _row_dots(run.img[q_image], run.cap, neighbours.captions)
    return {"look_alikes": _weighted_mean(look, neighbours.image_sims, neighbours.image_valid, tau),
            "read_alikes": _weighted_mean(read, neighbours.caption_sims, neighbours.caption_valid, tau)}


def _row_dots(queries: np.ndarray, table: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """(n, k): queries[i] · table[rows[i, j]], one column at a time (no (n, k, d) gather)."""
    out = np.empty(rows.shape, np.float64)
    for j in range(rows.shape[1]):
        out[:, j] = np.einsum("nd,nd->n", queries, table[rows[:, j]])
    return out


def space_signals(image_emb: np.ndarray, caption_emb: np.ndarray, pool: Pool, q_image: np.ndarray,
                  q_caption: np.ndarray, k: int = 10, tau: float = 5.0,
                  moved_from: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """Every signal of `SIGNALS` for each query (image row, caption row) in one space.

    Args:
        image_emb, caption_emb: the space's embeddings, one row per image / caption (normalised here).
        pool: which (image, caption) pairs neighbours and siblings come from (e.g. every pair but the test split's).
        q_image, q_caption: the queries, rows into `image_emb` / `caption_emb`.
        k: neighbours per query (LEMoN's k).
        tau: how fast a neighbour's weight falls with its distance (0: all neighbours count alike).
        moved_from: for queries that stand for a caption moved from another image (constructed mismatches), that
            image's row (−1: none); it is not among the caption's other images (`caption_images`).
    """
    return Space.build(image_emb, caption_emb, pool).signals(q_image, q_caption, k, tau, moved_from)


OTHER_CANDIDATES = 10
"""How many other images a caption's agreement is taken over (`CaptionSets.other_agreement`): those whose captions'
centroid is nearest it."""


@dataclass(frozen=True)
class CaptionSets:
    """The captions of each image a space searches, summed in one caption space and indexed (faiss) by their
    centroid: what a caption's agreement with other images' captions is taken over (`other_agreement`). Built once
    per space for every query set."""

    caption_emb: np.ndarray    # normalised caption embeddings, one row per caption
    searched: Pool
    images: np.ndarray         # the image rows that have captions in `searched`
    sums: np.ndarray           # (len(images), d): each one's caption embeddings summed
    counts: np.ndarray         # each one's caption count
    index: VectorIndex | None  # the sums (as centroids), ids positions into `images`; None without images

    @classmethod
    def build(cls, caption_emb: np.ndarray, searched: Pool) -> "CaptionSets":
        """The caption sets of `searched`'s images in the space of `caption_emb` (normalised here)."""
        emb = normalise(caption_emb)
        caps = searched.captions_of
        images = np.flatnonzero(np.diff(caps.indptr) > 0)
        sums = np.asarray(caps[images] @ emb, np.float32)
        index = VectorIndex.build(sums, np.arange(len(images)), BATCH_EXACT_BELOW) if len(images) else None
        return cls(emb, searched, images, sums, np.diff(caps.indptr)[images], index)

    def other_agreement(self, q_image: np.ndarray, q_caption: np.ndarray,
                        candidates: int = OTHER_CANDIDATES) -> np.ndarray:
        """Each query caption's highest agreement (`sibling_terms`' mean cosine) with another image's captions:
        the searched images other than the query's, the caption itself left out of each. The candidates are the
        `candidates` images whose caption centroid is nearest the caption, rescored by mean cosine. −inf where no
        candidate has a caption besides it.

        A caption moved to the wrong image agrees with the captions it was taken from as a sibling would: with
        those of the image it came from, or of one like it."""
        q_image, q_caption = np.asarray(q_image, np.int64), np.asarray(q_caption, np.int64)
        out = np.full(len(q_image), -np.inf)
        if self.index is None or len(q_image) == 0:
            return out
        u_cap, cap_inv = np.unique(q_caption, return_inverse=True)
        found, _ = self.index.search(self.caption_emb[u_cap], min(len(self.images), candidates + 1))
        dots = _row_dots(self.caption_emb[u_cap], self.sums, np.maximum(found, 0))[cap_inv]
        found = found[cap_inv]
        for j in range(found.shape[1]):
            at = np.maximum(found[:, j], 0)
            image = self.images[at]
            member = self.searched.contains(image, q_caption)
            others = self.counts[at] - member
            mean = np.full(len(q_image), -np.inf)
            np.divide(dots[:, j] - member, others, out=mean,
                      where=(found[:, j] >= 0) & (others > 0) & (image != q_image))
            np.maximum(out, mean, out=out)
        return out


def similarity_margin(img: np.ndarray, cap: np.ndarray, pool: Pool, q_image: np.ndarray, q_caption: np.ndarray,
                      stand_in: np.ndarray | None = None, in_pool: np.ndarray | None = None) -> np.ndarray:
    """Each query's cosine minus its image's mean cosine with the image's other captions (normalised `img`, `cap`);
    NaN without another caption. `stand_in` and `in_pool` as `sibling_terms`' (the pool caption in the query's
    slot, left out of the others; whether that one is a pool pair)."""
    q_image, q_caption = np.asarray(q_image, np.int64), np.asarray(q_caption, np.int64)
    stand_in = q_caption if stand_in is None else np.asarray(stand_in, np.int64)
    total, others = caption_set(cap, pool, q_image, q_caption, stand_in, in_pool)
    sim = np.einsum("nd,nd->n", img[q_image], cap[q_caption])
    mean = np.full(len(q_image), np.nan)
    np.divide(np.einsum("nd,nd->n", img[q_image], total) - sim, others, out=mean, where=others > 0)
    return sim - mean


def sibling_margin(siblings: np.ndarray, other: np.ndarray) -> np.ndarray:
    """`siblings` minus `CaptionSets.other_agreement`: how much more the caption agrees with its own image's other
    captions than with any other image's. NaN where either is missing."""
    with np.errstate(invalid="ignore"):
        margin = np.asarray(siblings, np.float64) - other      # no other image (−inf): inf, and NaN below
    return np.where(np.isfinite(margin), margin, np.nan)


def text_signals(text_emb: np.ndarray, pool: Pool, q_image: np.ndarray, q_caption: np.ndarray,
                 sets: CaptionSets | None = None) -> dict[str, np.ndarray]:
    """The signals a text-only space (e.g. the pretrained text tower's features, no images) can give: the
    sibling terms of each query, and with `sets` (`CaptionSets` of the same space, built once for every query
    set) its `sibling_margin`."""
    q_image, q_caption = np.asarray(q_image, np.int64), np.asarray(q_caption, np.int64)
    siblings, rank = sibling_terms(normalise(text_emb), pool, q_image, q_caption)
    out = {"siblings": siblings, "sibling_rank": rank}
    if sets is not None:
        out["sibling_margin"] = sibling_margin(siblings, sets.other_agreement(q_image, q_caption))
    return out
