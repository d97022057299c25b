"""The fused score's headroom: what the best weighting of a fused run's own signals reaches on the training pairs.

A benchmark diagnostic, never a method (it reads the injected ground truth, which no scorer ever sees): the
fused classifier (`core.detect.fusion`, the run's own `c`) is fitted on the training pairs' truth over the run's
cached signals and scored out of fold. A fused run well below its fit ceiling learnt weights on the trusted pairs
that do not transfer to the training split; a run close to it can only be lifted by better signals (better towers),
and no number of decisions that only re-weigh the signals can lift it by more than the gap.
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from core import artifacts

CEILING_FOLDS = 5


def fit_ceiling(store, run_id: int, folds: int = CEILING_FOLDS, measured: pd.DataFrame | None = None
                ) -> float | None:
    """Out-of-fold AUROC (noisy the positive class) of the fused classifier fitted on the ground truth of the
    pairs `evaluate_run` measures (`core.evaluate.measured_pairs`, or `measured` when the caller has read them);
    None for a run that is not a fused run, whose signals are not cached, or without injected truth of both
    kinds."""
    from core.detect.fusion import cross_validated_auroc
    from core.detect.method import CACHE_FILE, METHOD
    from core.evaluate import measured_pairs
    from core.methods import make_config
    run = store.run(run_id)
    path = artifacts.run_dir(run) / CACHE_FILE
    if run.method != METHOD or not path.exists():
        return None
    with np.load(path) as z:
        pair_ids, x = z["pair_ids"], z["x"]
    frame = measured_pairs(store, run.dataset_id) if measured is None else measured
    frame = frame[frame["is_noisy"].notna()]
    rows = pd.Series(np.arange(len(pair_ids)), index=pair_ids).reindex(frame["pair_id"]).to_numpy()
    known = ~np.isnan(rows)
    matched = (~frame["is_noisy"].astype(bool).to_numpy()[known]).astype(np.int64)
    return cross_validated_auroc(x[rows[known].astype(np.int64)], matched, make_config(METHOD, run.config).c,
                                 run.seed or 0, folds)
