"""Reviewing: the queue of pairs to decide on, how far the review has come, what to suggest, and the actions.

A queue is a dataset's pairs under one finished run, in the order the person picks (most suspicious,
most uncertain, a review set's order, or import order), narrowed by a filter (split, caption text, score
range, decision state). Decided pairs leave it: the state filter applies to decisions made before the
queue was opened (`opened_at`, a decision id), and any newer decision takes its pair out.

A queue's scope (its filter without the decision state) in its order does not depend on decisions, so it is
computed once per dataset, run, order and filter (`queue_order`, kept for the process) and every key press
applies only the current decisions (a few rows per decided pair) to it: no query over every pair. Suggestions are
the dataset's nearest captions to a pair's image and nearest images to its caption under the run's
embeddings (`core.index.RunNeighbours`, built once per run and cached). Every action is one store call:
stored at once, in one transaction, with its meta-data effect.
"""
from __future__ import annotations

import threading
from collections import OrderedDict
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime
from typing import Sequence

import numpy as np
import pandas as pd

from core.errors import ConcordError
from core.index import RunNeighbours
from core.store import Run, Store
from core.thumbnails import image_uri

ORDERS: dict[str, str] = {
    "suspicious": "Most suspicious first (lowest clean probability)",
    "uncertain": "Most uncertain first (nearest the threshold)",
    "set": "Review set order",
    "position": "Import order",
}
STATES: dict[str, tuple[str, ...]] = {   # decision state -> the current-decision actions it admits
    "undecided": ("none",),
    "skipped": ("skip",),
    "kept": ("keep",),
    "rejected": ("reject",),
    "fixed": ("fix",),
    "any": ("none", "keep", "reject", "fix", "skip"),
}
PAIR_IMAGE_SIZE = 384
"""Pixels (the longer side) of the pair's own image on the Review page."""
SUGGESTED_IMAGE_SIZE = 96
"""Pixels of each suggested image on the Review page."""
IDLE_GAP_S = 300.0
ORDERS_KEPT = 8
"""How many queue orders (`queue_order`) the process keeps (a million pairs take about 30 MB)."""
DONE = {"keep": "Kept", "reject": "Rejected", "fix": "Fixed", "skip": "Skipped"}


@dataclass(frozen=True)
class QueueSpec:
    """Which pairs a review queue holds and in what order."""

    order: str = field(default="suspicious", metadata={"help": "One of ORDERS."})
    state: str = field(default="undecided", metadata={"help": "Decision state of the pairs shown: one of STATES."})
    split: str | None = field(default=None, metadata={"help": "Only pairs of this split (None: every split)."})
    text: str = field(default="", metadata={"help": "Only pairs whose caption contains this text, or with this key."})
    clean_range: tuple[float, float] | None = field(
        default=None, metadata={"help": "Only pairs whose clean probability lies in [low, high] (None: any)."})
    set_id: int | None = field(default=None, metadata={"help": "Only the pairs of this review set."})

    def __post_init__(self) -> None:
        if self.order not in ORDERS:
            raise ConcordError(f"unknown queue order {self.order!r} (one of {', '.join(ORDERS)})")
        if self.state not in STATES:
            raise ConcordError(f"unknown decision state {self.state!r} (one of {', '.join(STATES)})")
        if self.order == "set" and self.set_id is None:
            raise ConcordError("the review-set order needs a review set")
        if self.clean_range is not None:
            low, high = self.clean_range
            if not 0.0 <= low <= high <= 1.0:
                raise ConcordError(f"a score range needs 0 <= low <= high <= 1, got {self.clean_range}")


@dataclass(frozen=True)
class ReviewProgress:
    """Counts over the queue's scope (its filter without the decision state) and this reviewer's pace."""

    scope: int
    decided: int            # keep / reject / fix
    skipped: int
    remaining: int          # pairs left in the queue
    rate_per_minute: float | None

    @property
    def eta_minutes(self) -> float | None:
        """Minutes left at the current pace (None without a pace)."""
        return self.remaining / self.rate_per_minute if self.rate_per_minute else None


@dataclass(frozen=True)
class Queue:
    """The head of a queue (pairs with ids, key, split, image path and hash, caption, scores, decision), the
    progress, and the dataset's current decisions it was made from (`Store.current_decisions`)."""

    head: pd.DataFrame
    progress: ReviewProgress
    decisions: pd.DataFrame


@dataclass(frozen=True)
class Suggestions:
    """Suggested captions for a pair's image (caption_id, caption, similarity) and nearest images to its caption
    (image_id, image_path, image_hash, similarity), best first, the pair's own left out; `caption_basis` says
    what the captions' similarity is to (`suggestions`)."""

    captions: pd.DataFrame
    images: pd.DataFrame
    caption_basis: str


def decision_rate(times: Sequence[datetime], idle_gap_s: float = IDLE_GAP_S) -> float | None:
    """Decisions per minute over the latest stretch of work: the trailing run of `times` (oldest first)
    whose gaps are at most `idle_gap_s`, the pairs of one bulk action (one time) counted once: the pace is that of
    pairs reviewed one at a time. None with fewer than two decisions or no time between them."""
    times = sorted(set(times))       # a bulk action is one moment: one step of the pace, not one per pair
    if len(times) < 2:
        return None
    start = len(times) - 1
    while start > 0 and (times[start] - times[start - 1]).total_seconds() <= idle_gap_s:
        start -= 1
    span = (times[-1] - times[start]).total_seconds()
    n = len(times) - start
    return (n - 1) / span * 60.0 if n >= 2 and span > 0 else None


ROWS_AHEAD = 64
"""How many of the queue's next pairs `build_queue` reads in one query when the head is not in its rows yet."""


@dataclass(frozen=True)
class QueueOrder:
    """A queue's scope in the queue's order: its pair ids, each id's place among them, and the rows last read of
    the pairs at its head (pair id -> its `Store.review_rows` row, whose decision columns `build_queue` reads
    afresh)."""

    ids: np.ndarray      # int64 pair ids, in order
    places: pd.Index     # pair id -> row of `ids` (a hash index, so decided pairs are found without a scan)
    rows: dict[int, dict] = field(default_factory=dict, compare=False)


_orders: OrderedDict[tuple, QueueOrder] = OrderedDict()
_orders_lock = threading.Lock()
SUGGESTIONS_KEPT = 64
"""How many pairs' suggestions the process keeps (`suggestions`)."""
_suggested: OrderedDict[tuple, Future] = OrderedDict()
_suggested_lock = threading.Lock()
_prefetcher: ThreadPoolExecutor | None = None


def queue_order(store: Store, dataset_id: int, run: Run, spec: QueueSpec) -> QueueOrder:
    """The scope of `spec`'s queue under `run`, in order: computed by the store once, then kept (the last
    `ORDERS_KEPT`) per database, dataset, run (as finished and refitted, with its threshold when the order uses
    it), order and filter. Decisions never change it; `build_queue` applies them."""
    text = spec.text.strip() or None
    key = (store.path, int(dataset_id), store.imports_seen(dataset_id), run.cache_key, run.finished_at,
           (run.metrics.get("fused") or {}).get("refits"),        # a fused run's refit rewrites its clean_prob
           run.threshold if spec.order == "uncertain" else None,
           spec.order, spec.split, text, spec.clean_range, spec.set_id)
    with _orders_lock:
        if key in _orders:
            _orders.move_to_end(key)
            return _orders[key]
    ids = store.review_scope(dataset_id, run.id, order=spec.order, split=spec.split, text=text,
                             clean_range=spec.clean_range, set_id=spec.set_id, threshold=run.threshold)
    order = QueueOrder(ids, pd.Index(ids))
    with _orders_lock:
        _orders[key] = order
        while len(_orders) > ORDERS_KEPT:
            _orders.popitem(last=False)
    return order


def queue_mask(order: QueueOrder, decisions: pd.DataFrame, actions: Sequence[str],
               opened_at: int | None) -> tuple[np.ndarray, dict[str, int]]:
    """Which pairs of `order` are in the queue (a boolean mask over its ids) and the counts, from the current
    decisions (`Store.current_decisions`: pair_id, decision_id, action). A pair is in the queue when its
    current action ("none" when undecided) is one of `actions` and, with `opened_at`, its decision is not
    newer than that. Counts: scope, decided (keep/reject/fix), skipped, queue."""
    mask = np.full(len(order.ids), "none" in actions)
    rows = order.places.get_indexer(decisions["pair_id"].to_numpy(np.int64))
    inside = rows >= 0
    action = decisions["action"].to_numpy(object)[inside]
    stays = np.isin(action, list(actions))
    if opened_at is not None:
        stays &= decisions["decision_id"].to_numpy(np.int64)[inside] <= int(opened_at)
    mask[rows[inside]] = stays
    counts = {"scope": len(order.ids), "decided": int(np.isin(action, ["keep", "reject", "fix"]).sum()),
              "skipped": int((action == "skip").sum()), "queue": int(mask.sum())}
    return mask, counts


def build_queue(store: Store, dataset_id: int, run: Run, spec: QueueSpec, *, reviewer: str,
                opened_at: int | None = None, limit: int = 1, offset: int = 0) -> Queue:
    """The first `limit` pairs of the queue (from `offset`) and the progress; `opened_at` is the newest
    decision id when the person opened the queue (see the module docstring)."""
    order = queue_order(store, dataset_id, run, spec)
    decisions = store.current_decisions(dataset_id)
    mask, counts = queue_mask(order, decisions, STATES[spec.state], opened_at)
    queued = order.ids[np.flatnonzero(mask)[int(offset):]]
    head = head_rows(store, dataset_id, run.id, order, queued, int(limit), decisions)
    rate = decision_rate(store.decision_times(dataset_id, reviewer))
    return Queue(head, ReviewProgress(counts["scope"], counts["decided"], counts["skipped"], counts["queue"], rate),
                 decisions)


def head_rows(store: Store, dataset_id: int, run_id: int, order: QueueOrder, queued: np.ndarray, limit: int,
              decisions: pd.DataFrame) -> pd.DataFrame:
    """`Store.review_rows` of the first `limit` of the `queued` ids, their decision columns from `decisions`
    (`Store.current_decisions`) and the rest from `order.rows`: when the head is not all there, the next
    `ROWS_AHEAD` queued pairs' rows are read in one query and replace them, so most key presses read no row."""
    ids = [int(i) for i in queued[:limit]]
    if not ids:
        return store.review_rows(dataset_id, run_id, ids)     # the columns, no row
    with _orders_lock:
        rows = [order.rows.get(i) for i in ids]
    if any(r is None for r in rows):
        read = store.review_rows(dataset_id, run_id, queued[:max(limit, ROWS_AHEAD)])
        window = dict(zip(read["pair_id"].astype("int64").tolist(), read.to_dict("records")))
        with _orders_lock:                 # only the latest window is kept: memory stays bounded at any pace
            order.rows.clear()
            order.rows.update(window)
        rows = [window[i] for i in ids]
    frame = pd.DataFrame(rows)
    current = decisions.set_index("pair_id").reindex(frame["pair_id"].to_numpy(np.int64))
    return frame.assign(decision=current["action"].to_numpy(object),
                        decision_id=current["decision_id"].to_numpy(np.float64))


def suggestions(store: Store, run_id: int, image_id: int, caption_id: int, k: int = 5,
                decisions: pd.DataFrame | None = None) -> Suggestions:
    """Captions for the pair's image and images for its caption under the run's model, the best first.

    Captions, from elsewhere in the dataset (the image's own captions, whatever their decision, are left out:
    a fix with one would repeat a pair): when the image has other captions that no decision rejects or replaces
    (or a fix gave it), the captions nearest to their mean in the run's caption space, i.e. those that say what
    the image's other captions say (sibling consensus: on the demo's first-start run, 2 epochs, the top one
    shares the image's objects for 52.7–54.4 % of pairs against 6.2 % for the captions nearest to the image; see
    `bench first-start`); otherwise the captions nearest to the image. Images: those nearest to the caption.

    A side whose ids have no embedding (a caption typed in a fix, a pair imported after the run) is empty;
    a run without embeddings raises NotFound saying what to do.

    Kept for the process (the last `SUGGESTIONS_KEPT`) per run, pair and the decisions on the pair's image (all
    they depend on), and `prefetch_pair` makes the queue's next pair's while the person looks at this one:
    found ready, or waited for while the prefetch finishes, never computed twice. `decisions`: the dataset's
    current decisions (`Store.current_decisions`) where the caller has them (a `Queue`'s), else they are read."""
    run = store.run(run_id)
    own = image_decisions(store, run.dataset_id, image_id, decisions)
    state = tuple((int(c), a if isinstance(a, str) else None, None if pd.isna(n) else int(n))
                  for c, a, n in own.itertuples(index=False, name=None))
    key = (store.path, run.id, int(image_id), int(caption_id), int(k), state)
    with _suggested_lock:
        made = _suggested.get(key)
        mine = made is None
        if mine:
            made = _suggested[key] = Future()
            while len(_suggested) > SUGGESTIONS_KEPT:
                _suggested.popitem(last=False)
        else:
            _suggested.move_to_end(key)
    if mine:
        try:
            made.set_result(_suggest(store, run, own, image_id, caption_id, k))
        except BaseException as exc:
            with _suggested_lock:
                _suggested.pop(key, None)       # a failure is not kept: the next call tries again
            made.set_exception(exc)
    return made.result()


def image_decisions(store: Store, dataset_id: int, image_id: int,
                    decisions: pd.DataFrame | None = None) -> pd.DataFrame:
    """Every pair of the image in import order: caption_id, its current decision (`action`, None when undecided)
    and the caption a current fix gave it (`new_caption_id`), from `decisions` (`Store.current_decisions`, read
    when not given)."""
    pairs = store.image_pairs(dataset_id, image_id)
    current = (store.current_decisions(dataset_id) if decisions is None else decisions).set_index("pair_id")
    current = current.reindex(pairs["pair_id"].to_numpy(np.int64))
    return pd.DataFrame({"caption_id": pairs["caption_id"].to_numpy(np.int64),
                         "action": current["action"].to_numpy(object),
                         "new_caption_id": current["new_caption_id"].to_numpy(object)})


def pair_view(store: Store, run_id: int, pair: pd.Series, root: str, k: int = 5,
              decisions: pd.DataFrame | None = None) -> dict:
    """What Review shows of a queue row, as plain data for the page's card: the pair's key, split, caption and
    scores line, its image and its `suggestions` (captions and images, each with its similarity as text) with the
    images as `data:` URIs at the sizes Review shows (`thumbnails.image_uri`, under the dataset's `root`). A part
    that cannot be made says why instead (`image_error`, `images_error`, `suggestions_error`)."""
    fmt = lambda v: "–" if pd.isna(v) else f"{v:.3f}"  # noqa: E731
    view: dict = {"pair_id": int(pair["pair_id"]), "key": str(pair["key"]), "split": str(pair["split"]),
                  "caption": str(pair["caption"]),
                  "scores": f"clean probability {fmt(pair['clean_prob'])} · similarity {fmt(pair['similarity'])} · "
                            f"weight {fmt(pair['weight'])}",
                  "image": None, "image_error": None, "basis": None, "captions": [], "images": [],
                  "images_error": None, "suggestions_error": None}
    try:
        view["image"] = image_uri(root, pair["image_path"], pair["image_hash"], PAIR_IMAGE_SIZE, upscale=True)
    except ConcordError as exc:
        view["image_error"] = str(exc)
    try:
        made = suggestions(store, run_id, int(pair["image_id"]), int(pair["caption_id"]), k, decisions)
    except ConcordError as exc:
        view["suggestions_error"] = str(exc)
        return view
    view["basis"] = made.caption_basis
    view["captions"] = [{"caption": str(s.caption), "similarity": f"{s.similarity:.3f}"}
                        for s in made.captions.itertuples()]
    try:
        view["images"] = [{"uri": image_uri(root, s.image_path, s.image_hash, SUGGESTED_IMAGE_SIZE),
                           "similarity": f"{s.similarity:.3f}"} for s in made.images.itertuples()]
    except ConcordError as exc:
        view["images_error"] = str(exc)
    return view


def prefetch_pair(store: Store, run_id: int, pair: pd.Series, root: str, k: int = 5,
                  decisions: pd.DataFrame | None = None) -> Future:
    """Make a queue row's `pair_view` (its suggestions and images) in the background, one thread for the process,
    so that the page finds its parts ready (kept by `suggestions` and `thumbnails.image_uri`) when the pair enters
    the window it sends. A failure is left for the page's own call to show."""
    global _prefetcher
    with _suggested_lock:
        if _prefetcher is None:
            _prefetcher = ThreadPoolExecutor(max_workers=1, thread_name_prefix="concord-suggestions")

    def work() -> None:
        try:
            pair_view(store, run_id, pair, root, k, decisions)
        except Exception:   # noqa: BLE001 - shown by the page's own call for the pair
            pass
    return _prefetcher.submit(work)


def _suggest(store: Store, run: Run, own: pd.DataFrame, image_id: int, caption_id: int, k: int) -> Suggestions:
    """`suggestions`, computed: `own` is the image's pairs with their current decisions."""
    nb = RunNeighbours.for_run(store, run.id)
    fixed = own["new_caption_id"].dropna().astype("int64")
    agreeing = own.loc[~own["action"].isin(["reject", "fix"]) & (own["caption_id"] != caption_id), "caption_id"]
    siblings = pd.concat([agreeing, fixed]).drop_duplicates().tolist()
    excluded = set(own["caption_id"].tolist()) | set(fixed.tolist()) | {int(caption_id)}
    wanted = k + len(excluded)
    empty_caps = pd.DataFrame({"caption_id": pd.Series(dtype="int64"), "similarity": pd.Series(dtype="float32")})
    try:
        caps, basis = nb.captions_near_captions(siblings, wanted), "agreement with the image's other captions"
    except KeyError:
        try:
            caps, basis = nb.captions_for_image(image_id, wanted), "similarity to the image"
        except KeyError:
            caps, basis = empty_caps, "similarity to the image"
    try:
        imgs = nb.images_for_caption(caption_id, k + 1)
    except KeyError:
        imgs = pd.DataFrame({"image_id": pd.Series(dtype="int64"), "similarity": pd.Series(dtype="float32")})
    caps = caps[~caps["caption_id"].isin(excluded)].head(k)
    imgs = imgs[imgs["image_id"] != image_id].head(k)
    texts = store.captions_by_id(caps["caption_id"]).set_index("caption_id")["text"]
    files = store.images_by_id(imgs["image_id"]).set_index("image_id")
    caps = caps.assign(caption=texts.reindex(caps["caption_id"]).to_numpy())
    imgs = imgs.assign(image_path=files["path"].reindex(imgs["image_id"]).to_numpy(),
                       image_hash=files["hash"].reindex(imgs["image_id"]).to_numpy())
    return Suggestions(caps[["caption_id", "caption", "similarity"]].reset_index(drop=True),
                       imgs[["image_id", "image_path", "image_hash", "similarity"]].reset_index(drop=True), basis)


def act(store: Store, dataset_id: int, run_id: int | None, reviewer: str, action: str, pairs: pd.DataFrame,
        caption: str | None = None) -> str:
    """Store `action` on the `pairs` (queue rows: pair_id, key, caption) in one transaction, with its
    meta-data effect; a fix re-pairs each image with `caption`. Returns what was done, for the page."""
    if pairs.empty:
        raise ConcordError("no pair selected")
    if action == "fix":
        caption = (caption or "").strip()
        if not caption:
            raise ConcordError("a fix needs the new caption: type one or use a suggestion")
    store.decide(dataset_id, pairs["pair_id"].tolist(), action, reviewer,
                 new_caption=caption if action == "fix" else None, run_id=run_id)
    what = f"pair {pairs['key'].iloc[0]}" if len(pairs) == 1 else f"{len(pairs)} pairs"
    return f"{DONE[action]} {what}" + (f" with the caption: {caption}" if action == "fix" else "")


def undo(store: Store, dataset_id: int, reviewer: str) -> str:
    """Revert `reviewer`'s latest decision on the dataset, a bulk action as a whole (and its meta-data effect);
    says which."""
    reverted = store.undo(dataset_id, reviewer)
    if not reverted:
        return f"Nothing to undo for reviewer {reviewer!r}"
    d = store.decision_summary(reverted[0])
    return f"Undid {d['action']} of " + (f"pair {d['key']}" if len(reverted) == 1 else f"{len(reverted)} pairs")

