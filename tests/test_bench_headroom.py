"""`core.benchmarks.headroom`: the fit ceiling of a fused run's cached signals, on hand-made signals."""
from __future__ import annotations

import numpy as np

from core import artifacts
from core.benchmarks.headroom import fit_ceiling
from core.detect.method import CACHE_FILE
from tests.test_metadata import make_meta_dataset

NOISY = ("k0", "k2", "k4", "k6", "k8", "k10")      # 6 of the 20 training pairs (even keys are train)


def fused_run_with(store, ds: int, column) -> int:
    """A fused run whose cached signals are one column computed from each pair (key number, truth)."""
    pairs = store.pairs_frame(ds)
    run_id = store.create_run(ds, "concord", "concord-tiny", seed=0, config={"c": 0.1})
    x = np.array([[column(int(k[1:]), bool(n))] for k, n in zip(pairs["key"], pairs["is_noisy"])], np.float64)
    artifacts.atomic_save_npz(artifacts.run_dir(store.run(run_id)) / CACHE_FILE, names=np.array(["s"]),
                              pair_ids=pairs["pair_id"].to_numpy(np.int64), x=x, x_made=np.zeros((0, 1)),
                              trusted=np.zeros(len(pairs), bool))
    return run_id


def test_the_ceiling_is_what_a_fit_on_the_truth_reaches_out_of_fold(store, tmp_path) -> None:
    ds = make_meta_dataset(store, tmp_path / "src", noisy=NOISY)
    # a signal that is the truth plus a small spread: every fold's fit separates its held-out pairs
    assert fit_ceiling(store, fused_run_with(store, ds, lambda k, noisy: (0.0 if noisy else 1.0) + k / 1000)) == 1.0
    # reversed, it still separates: the ceiling is what a fit can learn, whatever the sign
    assert fit_ceiling(store, fused_run_with(store, ds, lambda k, noisy: (1.0 if noisy else 0.0) + k / 1000)) == 1.0
    # a constant tells nothing: every held-out pair gets the same probability, ties count half
    assert fit_ceiling(store, fused_run_with(store, ds, lambda k, noisy: 3.0)) == 0.5


def test_meta_data_pairs_are_left_out_and_other_runs_have_none(store, tmp_path) -> None:
    ds = make_meta_dataset(store, tmp_path / "src", noisy=NOISY)
    pairs = store.pairs_frame(ds).set_index("key")
    liar = lambda k, noisy: (0.0 if noisy else 1.0) + (1.0 if k == 0 else 0.0) + k / 1000  # noqa: E731
    run_id = fused_run_with(store, ds, liar)          # k0 is noisy but its signal says matched
    assert fit_ceiling(store, run_id) < 1.0
    store.add_meta(ds, [(int(pairs.loc["k0", "image_id"]), int(pairs.loc["k0", "caption_id"]), 0)], "manual")
    assert fit_ceiling(store, run_id) == 1.0          # a meta-data pair is not measured, as in evaluate_run
    assert fit_ceiling(store, store.create_run(ds, "b1", "concord-tiny")) is None
    uncached = store.create_run(ds, "concord", "concord-tiny")
    assert fit_ceiling(store, uncached) is None
