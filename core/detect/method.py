"""`concord`: the fused score over every finished run of a dataset, refitted from decisions in seconds.

A concord run trains no network of its own. It takes the dataset's finished runs (by default the latest of each
method and learning rate; when there is none it first trains a `b1` run of `epochs` epochs, and, when `fast_b1_lr`
is set, for a model whose image tower trains from scratch a second b1 at that rate), computes every consensus signal
(`core.detect.consensus`) in each run's embedding space, the sibling terms and margin in the text tower's space, the
neighbour terms in the pixel space (`core.detect.pixels`) and each run's look-alike terms over the pixel space's
neighbours, and fits the fused classifier (`core.detect.fusion`:
one per run's space, weighed by how well each splits the pairs, and the same with every weight ≥ 0, weighed
against it) on the meta-data plus constructed negatives
(`core.detect.labels`), the trusted images' sibling terms (and margins) taken in a context matched to the noisy
split's (`core.detect.context`). Its `clean_prob` is the classifier's; `similarity` the mean cosine of the spaces;
`weight` the clean probability too; extras the per-kind signals, for the map and the Review line.

The signal matrices are cached with the run, so `refit` (after a batch of decisions) only refits the
classifier and rewrites `clean_prob`: no embedding, no search, no network.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from core import artifacts
from core.detect.consensus import Pool
from core.detect.context import context_at, context_fits, draw_swaps, labelled_contexts, swapped_whole
from core.detect.explain import LOW_QUANTILE
from core.detect.fusion import FusedModel, fit_fused
from core.detect.labels import Constructed, caption_index, construct_negatives
from core.detect.signals import (HELD_OUT_SPLIT, TEXT_SPACE, Query, caption_spaces, in_context, index_spaces,
                                 load_inputs, pair_view, pool_of, run_spaces, searched_pool, signal_matrix,
                                 space_groups, summary_signals)
from core.errors import ConcordError
from core.index import VectorIndex
from core.meta_seed import DEFAULT_TRUSTED_SPLIT, TRAIN_SPLIT, usable_split
from core.methods.config import ABOVE_0, AT_LEAST_0, AT_LEAST_1, SHARE, setting
from core.progress import Progress
from core.runs import latest_of_each, run_lr, same_rate

METHOD = "concord"
CACHE_FILE = "signals.npz"
NO_POSITIVES = ("the fused score needs trusted matched pairs: seed the meta-data from a clean split (Meta-data "
                "page, or `python -m core meta NAME seed --split SPLIT`), import them (`python -m core meta NAME "
                "import --csv FILE`), or keep some pairs in Review")


@dataclass(frozen=True)
class ConcordConfig:
    """Settings of the fused score. Defaults chosen on the labelled (`val`) pairs' cross-validated AUROC."""

    base_runs: str = setting("latest", "finished runs whose spaces and scores it fuses: 'latest' (the latest of "
                                       "each method and learning rate: a network trained at another rate learns "
                                       "another space, and fusing it helps) or comma-separated run ids")
    epochs: int = setting(8, "epochs of the b1 run trained first when the dataset has no finished run",
                          range=AT_LEAST_1)
    fast_b1_lr: float = setting(0.0, "with 'latest' base runs and a model whose image tower trains from scratch "
                                     "(concord-tiny), also fuse a b1 run at this learning rate (e.g. 0.01, ten "
                                     "times the shared default): a network trained faster learns another space. "
                                     "Trained first, with the epochs and seed of the dataset's latest b1, when the "
                                     "dataset has no finished b1 at this rate; one more network for −0.002 to "
                                     "+0.005 with concord-tiny's ResNet tower, so 0 (none) by default",
                                range=AT_LEAST_0)
    k: int = setting(10, "neighbours per pair in the neighbour-consensus terms (LEMoN's k)", range=AT_LEAST_1)
    tau: float = setting(5.0, "neighbour weight exp(-tau * (1 - cosine)): how fast far neighbours count less",
                         range=AT_LEAST_0)
    text_signals: bool = setting(True, "also the sibling terms in the text tower's own feature space")
    pixel_signals: bool = setting(True, "also the neighbour terms in the pixel space: images as their raw pixels "
                                        "(averaged over a 16×16 grid, 64 whitened principal components), captions "
                                        "as the text tower's features. No network trains it, so it cannot fit the "
                                        "noise the runs train on (needs text_signals)")
    look_alikes: bool = setting(True, "also each run's own image–caption cosine taken over the pixel space's "
                                      "neighbours: the caption against the images that look most like the pair's, "
                                      "the image against the captions that read most like the pair's. Memorising "
                                      "a mismatched pair does not raise them (needs pixel_signals)")
    sibling_margins: bool = setting(True, "also each space's margins over a pair's siblings: how much more a caption "
                                          "agrees with its own image's other captions than with those of any other "
                                          "image of the noisy split (a near miss agrees as well with the captions "
                                          "it was taken from), and in each network's space how much better the "
                                          "image matches the caption than its other captions")
    negatives_per_positive: float = setting(1.0, "constructed negatives per trusted positive", range=AT_LEAST_0)
    near_miss_share: float = setting(0.5, "share of constructed negatives that are near misses, not random",
                                     range=SHARE)
    near_k: int = setting(10, "a near-miss negative is one of this many captions most similar to the positive's",
                          range=AT_LEAST_1)
    match_context: bool = setting(True, "before fitting, swap the trusted images' captions for foreign ones, in each "
                                        "space at the rate, near-miss share and pattern (captions one by one or "
                                        "whole images) where their sibling agreement is distributed as the noisy "
                                        "split's (a clean split's siblings all agree; a noisy split's do not)")
    trusted_split: str = setting(DEFAULT_TRUSTED_SPLIT, "every pair of this split the user names clean is a trusted "
                                                        "positive too, beside the meta-data ('' for none; never "
                                                        "'train' or 'test')")
    per_space: bool = setting(True, "one classifier per base run's space (each with the text tower's sibling terms), "
                                    "their logits averaged, instead of one over every space: the labelled pairs come "
                                    "from a clean split no network trained on, so they cannot tell which network's "
                                    "signals carry over to the pairs it trained on")
    weigh_spaces: bool = setting(True, "with per_space, weigh each space's classifier by how well its logit splits "
                                       "every pair into two modes (Ashman's D of a two-component mixture; no label "
                                       "used) instead of equally: a network that fitted the noise splits them less")
    nonnegative: bool = setting(True, "also fit each classifier with every weight ≥ 0 (every signal is higher when "
                                      "a pair looks matched) and weigh that fused score against the unconstrained "
                                      "one by how well each splits every pair into two modes, the unconstrained "
                                      "one also by how closely it ranks them like the constrained one: where the "
                                      "labelled pairs teach signs the noisy pairs do not follow (heavy noise swaps "
                                      "most trusted captions' context), the constrained fit counts more")
    c: float = setting(0.1, "inverse L2 regularisation of the fused logistic regression", range=ABOVE_0)
    refit_every: int = setting(20, "refit after this many new decisions while reviewing (0: only on request)",
                               range=AT_LEAST_0)


class Concord:
    """The concord run: fuse the dataset's finished runs (see the module docstring)."""

    name = METHOD
    config_cls = ConcordConfig

    def __init__(self, config: ConcordConfig, store, run, progress: Progress) -> None:
        self.config, self.store, self.run_row, self.progress = config, store, run, progress

    def base_runs(self) -> list:
        """The runs to fuse (training a b1 run first when the dataset has none)."""
        store, run = self.store, self.run_row
        finished = [r for r in store.runs(run.dataset_id, state="finished") if r.method != METHOD]
        if self.config.base_runs.strip() != "latest":
            try:
                wanted = [int(x) for x in self.config.base_runs.split(",") if x.strip()]
            except ValueError:
                raise ConcordError(f"base_runs must be 'latest' or run ids, got {self.config.base_runs!r}") from None
            by_id = {r.id: r for r in finished}
            missing = [i for i in wanted if i not in by_id]
            if missing:
                raise ConcordError(f"base run(s) {', '.join(map(str, missing))} are not finished runs of this dataset")
            return [by_id[i] for i in wanted]
        bases = sorted(latest_of_each(finished, lambda r: (r.method, run_lr(r))).values(),
                       key=lambda r: r.id) or [self.train_b1(self.config.epochs)]
        from core.models import model_info     # loads torch: not when a page imports this module
        b1 = [r for r in bases if r.method == "b1"]
        fast = self.config.fast_b1_lr
        if (fast > 0 and not model_info(run.model).image_pretrained
                and not any(same_rate(run_lr(r), fast) for r in b1)):
            bases.append(self.train_b1((b1[-1].config or {}).get("epochs") if b1 else self.config.epochs, lr=fast))
        return bases

    def train_b1(self, epochs: int | None, **settings: Any):
        """A b1 run of the concord run's dataset, model, device and seed, trained now (`settings` over b1's
        defaults); its finished row. Without `settings`, the latest interrupted b1 of the dataset and model (a
        server killed while the first start's b1 trained) is resumed from its checkpoint instead of training
        another. Its heartbeat beats while it trains inside this run's job, so no page takes it for dead."""
        from core.jobs import heartbeat
        from core.training import execute_run, start_run
        store, run = self.store, self.run_row
        stopped = [r for r in store.runs(run.dataset_id, state="interrupted")
                   if r.method == "b1" and r.model == run.model and not settings]
        base = stopped[0].id if stopped else start_run(
            store, store.dataset_by_id(run.dataset_id).name, "b1", model=run.model, device=run.device or "auto",
            seed=run.seed or 0, epochs=epochs, settings=settings)
        with heartbeat(store, base, self.progress):
            execute_run(store, base, self.progress)
        return store.run(base)

    def run(self):
        from core.methods.base import MethodResult
        t0 = time.perf_counter()
        cfg, store, run = self.config, self.store, self.run_row
        pairs = pair_view(store.pairs_frame(run.dataset_id))
        trusted = trusted_mask(store, run.dataset_id, pairs, cfg.trusted_split)     # refused before a b1 trains
        bases = self.base_runs()
        self.progress.start("signals", None, message=f"{METHOD}: consensus signals over {len(bases)} run(s)")
        inputs = load_inputs(store, run.dataset_id, bases, pairs, bases[0].model if cfg.text_signals else None,
                             run.device or "auto", pixels=cfg.pixel_signals)
        pool = pool_of(pairs, inputs)
        q_img, q_cap = (inputs.image_rows(pairs["image_id"].to_numpy()),
                        inputs.caption_rows(pairs["caption_id"].to_numpy()))
        meta = store.meta_frame(run.dataset_id)
        positives = pd.concat([meta.loc[meta["label"] == 1, ["image_id", "caption_id"]],
                               pairs.loc[trusted, ["image_id", "caption_id"]]]).drop_duplicates()
        positives = positives[positives["image_id"].isin(inputs.image_ids)
                              & positives["caption_id"].isin(inputs.caption_ids)]   # a typed fix has no embedding
        if positives.empty:
            raise ConcordError(NO_POSITIVES)
        pos_img, pos_cap = (inputs.image_rows(positives["image_id"].to_numpy()),
                            inputs.caption_rows(positives["caption_id"].to_numpy()))
        searched = searched_pool(pairs, inputs)
        indexed = index_spaces(inputs, pool, searched, cfg.sibling_margins)
        captions = caption_spaces(inputs)
        indexes = {space: (indexed[space].caption_index if space in indexed else caption_index(pool, emb))
                   for space, emb in captions.items()}
        near_space = TEXT_SPACE if TEXT_SPACE in captions else next(iter(captions))   # near misses: the text tower's
        made = construct_negatives(pos_img, pos_cap, pool, captions[near_space], cfg.negatives_per_positive,
                                   cfg.near_miss_share, cfg.near_k, run.seed or 0, indexes[near_space])
        names, (x, x_made) = signal_matrix(
            inputs, pool, [Query(q_img, q_cap), Query(made.image_row, made.caption_row, made.moved_from)],
            cfg.k, cfg.tau, indexed, cfg.look_alikes, searched, cfg.sibling_margins)
        pair_ids = pairs["pair_id"].to_numpy(np.int64)
        train = (pairs["split"] == TRAIN_SPLIT).to_numpy()
        weighed = (pairs["split"] != HELD_OUT_SPLIT).to_numpy()    # what the spaces and fits are weighed on
        x_fit, matched = x, {}
        if cfg.match_context:
            x_fit, x_made, matched = labelled_in_context(
                captions, {space: image_emb for space, (image_emb, _) in inputs.spaces.items()}, pool, indexes, names,
                x, x_made, made, q_img, q_cap,
                clean_images=np.setdiff1d(pos_img, q_img[train]), train=train, near_k=cfg.near_k, seed=run.seed or 0)
        artifacts.atomic_save_npz(artifacts.run_dir(run) / CACHE_FILE, names=np.array(names), pair_ids=pair_ids,
                                  x=x, x_fit=x_fit, x_made=x_made, trusted=trusted, weighed=weighed)
        model, labelled = fit_on_meta(names, x_fit, x_made, pair_ids, meta, trusted, cfg, run.seed or 0, x[weighed])
        clean = model.clean_prob(x)
        summary = summary_signals(names, x)
        summary.pop("similarity")        # the run's own `similarity` column already
        summary["sibling_count"] = np.asarray(pool.captions_of.sum(axis=1)).ravel()[q_img] - pool.contains(q_img, q_cap)
        cos = [x[:, names.index(f"{space}.similarity")] for space in inputs.spaces]
        parts = [e[0] for e in inputs.spaces.values()], [e[1] for e in inputs.spaces.values()]
        scale = 1.0 / np.sqrt(len(inputs.spaces))
        emb = artifacts.RunEmbeddings(inputs.image_ids, np.hstack(parts[0]) * scale,
                                      inputs.caption_ids, np.hstack(parts[1]) * scale)
        lows = {k: float(np.nanquantile(v[train], LOW_QUANTILE)) for k, v in summary.items()
                if k != "sibling_count" and np.isfinite(v[train]).any()}
        metrics = {"base_runs": [r.id for r in bases], "seconds": time.perf_counter() - t0, "context": matched,
                   "fused": fused_metrics(model, labelled, store.last_decision_id(run.dataset_id)),
                   "signal_lows": lows}
        return MethodResult(np.mean(cos, axis=0), clean, clean.copy(), summary, emb, metrics)


def labelled_in_context(captions: dict[str, np.ndarray], images: dict[str, np.ndarray], pool: Pool,
                        indexes: dict[str, VectorIndex], names: list[str], x: np.ndarray, x_made: np.ndarray,
                        made: Constructed, q_img: np.ndarray, q_cap: np.ndarray,
                        *, clean_images: np.ndarray, train: np.ndarray, near_k: int, seed: int
                        ) -> tuple[np.ndarray, np.ndarray, dict[str, dict[str, Any]]]:
    """The labelled pairs' signals as the classifier learns from them, each space's sibling terms taken in the
    context matched to the noisy split's (`core.detect.context`; whether mismatches come a whole image at a time
    decided once over every space): (every pair's signals with the clean images' pairs in context, the
    constructed negatives' in context, the fitted context of each space where one was fitted).

    Args:
        captions: each space's normalised caption embeddings (`core.detect.signals.caption_spaces`).
        images: each run space's normalised image embeddings (the similarity margins are taken in context too).
        pool: the pool the signals were computed over.
        indexes: each space's index of the pool captions (where its near misses are searched).
        names, x: the signal names and every pair's signals (rows as `q_img` / `q_cap`, the pairs' rows).
        x_made, made: the constructed negatives' signals and the negatives themselves.
        clean_images: the trusted images, none of them in the noisy split: their captions are swapped.
        train: which pairs are the noisy split's, whose sibling agreement is matched.
        near_k, seed: the swaps' near misses and draw (as the constructed negatives').
    """
    for_trusted, for_made, fitted = {}, {}, {}
    draws = {space: draw_swaps(pool, clean_images, emb, near_k, seed, indexes[space])
             for space, emb in captions.items()}
    fits = {space: context_fits(draws[space], emb, q_img[train], q_cap[train]) for space, emb in captions.items()}
    whole = swapped_whole(list(fits.values()))
    for space, emb in captions.items():
        context = context_at(draws[space], fits[space], whole)
        trusted_context, made_context = labelled_contexts(draws[space], context)
        image_emb = images.get(space)
        for_trusted[space], for_made[space] = (emb, trusted_context, image_emb), (emb, made_context, image_emb)
        if fits[space]:             # none without siblings (every image one caption) or without trusted images
            fitted[space] = {"rate": context.rate, "near_miss_share": context.share, "whole_images": context.whole}
    rows = np.flatnonzero(np.isin(q_img, clean_images))
    x_fit = x.copy()
    x_fit[rows] = in_context(names, x[rows], for_trusted, q_img[rows], q_cap[rows])
    return x_fit, in_context(names, x_made, for_made, made.image_row, made.caption_row), fitted


def trusted_mask(store, dataset_id: int, pairs: pd.DataFrame, split: str) -> np.ndarray:
    """The pairs of the split the user names clean; none for '' or a dataset without the default split. The noisy
    `train` split, the held-out `test` one and any other split the dataset lacks (a typo) are refused
    (`core.meta_seed.usable_split`)."""
    if not usable_split(store, dataset_id, split):
        return np.zeros(len(pairs), bool)
    return (pairs["split"] == split.strip()).to_numpy()


def fit_on_meta(names: list[str], x: np.ndarray, x_made: np.ndarray, pair_ids: np.ndarray, meta: pd.DataFrame,
                trusted: np.ndarray, cfg: ConcordConfig, seed: int, scored: np.ndarray
                ) -> tuple[FusedModel, dict[str, int]]:
    """Fit the fused classifier on the meta entries that are dataset pairs (a person's label wins), the trusted
    split's other pairs as positives, and the constructed negatives. `x` holds every pair's signals as the
    classifier learns from them (the trusted images' sibling terms in the matched context, `core.detect.context`),
    `scored` the signals of the pairs outside the held-out split as they are scored (what `weigh_spaces` and
    `nonnegative` weigh on: unlabelled, and never the `test` split's)."""
    row_of = pd.Series(np.arange(len(pair_ids)), index=pair_ids)
    entries = meta[meta["pair_id"].notna()]
    rows = row_of.reindex(entries["pair_id"].astype(np.int64)).to_numpy()
    known = ~np.isnan(rows)
    rows, labels = rows[known].astype(np.int64), entries["label"].to_numpy(np.int64)[known]
    extra = np.setdiff1d(np.flatnonzero(trusted), rows)
    rows, labels = np.concatenate([rows, extra]), np.concatenate([labels, np.ones(len(extra), np.int64)])
    xs = np.vstack([x[rows], x_made])
    ys = np.concatenate([labels, np.zeros(len(x_made), np.int64)])
    if len(np.unique(ys)) < 2:
        raise ConcordError(NO_POSITIVES)
    counts = {"positives": int((labels == 1).sum()), "negatives": int((labels == 0).sum()),
              "constructed": int(len(x_made)), "not_pairs": int((~known).sum() + meta["pair_id"].isna().sum())}
    return fit_fused(xs, ys, names, cfg.c, seed, groups=space_groups(names) if cfg.per_space else None,
                     scored=scored, weigh_groups=cfg.weigh_spaces, nonnegative=cfg.nonnegative), counts


def fused_metrics(model: FusedModel, labelled: dict[str, int], decision_id: int) -> dict[str, Any]:
    """What the run records of its classifier: CV AUROC, the signals' weights, what it learnt from."""
    spaces = None if model.group_weights is None else dict(zip(run_spaces(model.names), model.group_weights))
    signs = None if model.fit_weights is None else dict(zip(("unconstrained", "nonnegative"), model.fit_weights))
    return {"cv_auroc": model.cv_auroc, "weights": model.weights(), "labelled": labelled, "space_weights": spaces,
            "fit_weights": signs, "decision_id": int(decision_id)}


def refit(store, run_id: int, progress: Progress | None = None) -> dict[str, Any]:
    """Refit run `run_id`'s fused classifier on the meta-data as it is now (decisions included) and rewrite its
    `clean_prob` and `weight`; returns the new fused metrics."""
    from core.methods import make_config
    t0 = time.perf_counter()
    run = store.run(run_id)
    if run.method != METHOD or run.state != "finished":
        raise ConcordError(f"run {run_id} is not a finished {METHOD} run: only those refit without retraining")
    path = artifacts.run_dir(run) / CACHE_FILE
    if not path.exists():
        raise ConcordError(f"run {run_id}'s signals are not in the cache ({path}): start a new {METHOD} run")
    if progress is not None:
        progress.start("refit", None, message=f"{METHOD}: refitting run {run_id} on the decisions")
    with np.load(path) as z:
        names, pair_ids, x, x_made, trusted = ([str(n) for n in z["names"]], z["pair_ids"], z["x"], z["x_made"],
                                               z["trusted"])
        x_fit = z["x_fit"] if "x_fit" in z.files else x     # runs before the matched context cached none
        weighed = z["weighed"] if "weighed" in z.files else None
    if weighed is None:     # runs before this cached none: the pairs outside the held-out split, from the store
        split = pair_view(store.pairs_frame(run.dataset_id)).set_index("pair_id")["split"].reindex(pair_ids)
        weighed = (split != HELD_OUT_SPLIT).to_numpy()
    cfg = make_config(METHOD, run.config)
    model, labelled = fit_on_meta(names, x_fit, x_made, pair_ids, store.meta_frame(run.dataset_id), trusted, cfg,
                                  run.seed or 0, x[weighed])
    clean = model.clean_prob(x)
    store.update_clean_prob(run_id, pair_ids, clean, clean)
    fused = fused_metrics(model, labelled, store.last_decision_id(run.dataset_id))
    fused["refit_seconds"] = time.perf_counter() - t0
    fused["refits"] = int((run.metrics.get("fused") or {}).get("refits", 0)) + 1
    store.update_run(run_id, metrics=run.metrics | {"fused": fused})
    return fused


def refit_due(store, run_id: int) -> bool:
    """Whether run `run_id` is a concord run with at least `refit_every` decisions since its last fit."""
    run = store.run(run_id)
    if run.method != METHOD or run.state != "finished":
        return False
    every = int(run.config.get("refit_every", 0) or 0)
    since = store.decisions_since(run.dataset_id, int((run.metrics.get("fused") or {}).get("decision_id", 0)))
    return every > 0 and since >= every


def submit_refit_if_due(store, manager, run_id: int):
    """While reviewing: when run `run_id` is a concord run due for a refit, queue one on the job runner (a light
    job beside training; one at a time per run) and return it, else None."""
    if not refit_due(store, run_id):
        return None
    return manager.submit("refit", f"refit fused run {run_id}", lambda progress: refit(store, run_id, progress),
                          key=f"refit-{run_id}", heavy=False)
