"""`bench loop`: train, decide the most suspicious pairs by ground truth, retrain, compare (b1, tiny, real engine)."""
from __future__ import annotations

import pytest

from core import metadata
from core.benchmarks.loop import REVIEWER, markdown, remove_seed, review_loop, summary
from tests.test_metadata import keys_of, make_meta_dataset

NOISY = ("k0", "k2", "k4", "k6")


def test_review_loop_decides_the_most_suspicious_and_retrains_like_the_first_run(store, tmp_path):
    ds = make_meta_dataset(store, tmp_path / "src", n=24, noisy=NOISY)  # 12 training pairs: one batch
    got = review_loop(store, "ds", "b1", 6, epochs=1, settings={"batch_size": 12})
    first, second = (r.id for r in reversed(store.runs(ds)))
    assert [r.state for r in store.runs(ds)] == ["finished", "finished"]
    assert store.run(second).config == store.run(first).config  # retrained like the first run

    scored = store.pairs_frame(ds, first, split="train").sort_values(["clean_prob", "pair_id"]).head(6)
    decisions = store.current_decisions(ds)
    assert sorted(decisions["pair_id"]) == sorted(scored["pair_id"])
    assert set(decisions["reviewer"]) == {REVIEWER}
    truth = dict(zip(scored["pair_id"], scored["is_noisy"].astype(bool)))
    assert all((a == "reject") == truth[p] for p, a in zip(decisions["pair_id"], decisions["action"]))
    assert (got["kept"], got["rejected"]) == (6 - sum(truth.values()), sum(truth.values()))
    assert (got["meta_positives"], got["meta_negatives"]) == (got["kept"], got["rejected"])  # b1: no seed

    flagged = scored["flagged"].astype(bool).to_numpy()
    noisy = scored["is_noisy"].astype(bool).to_numpy()
    assert got["before"]["agree"] == int((flagged == noisy).sum()) and got["before"]["total"] == 6
    # b1 does not read the meta-data: with the same seed the retrained run is the first one again
    assert got["after"]["agree"] == got["before"]["agree"]
    assert got["after"]["auroc"] == pytest.approx(got["before"]["auroc"])


def test_replace_seed_leaves_the_decisions_alone_in_the_meta_data(store, tmp_path):
    ds = make_meta_dataset(store, tmp_path / "src", n=24, noisy=NOISY)
    assert metadata.seed_from_split(store, ds, "val", fraction=0.5) == 6            # the first run's seed
    got = review_loop(store, "ds", "mscn", 8, order="uncertain", epochs=2,
                      settings={"batch_size": 12, "warmup_epochs": 1},
                      replace_seed=True)
    second, first = store.runs(ds)[0], store.runs(ds)[1]
    scored = store.pairs_frame(ds, first.id, split="train")
    nearest = scored.assign(gap=(scored["clean_prob"] - first.threshold).abs()).sort_values(["gap", "pair_id"]).head(8)
    assert set(store.current_decisions(ds)["pair_id"]) == set(nearest["pair_id"])  # the most uncertain first
    assert {source for _, source in keys_of(store, ds).values()} == {"decision"}   # the seed is gone
    assert (got["meta_positives"], got["meta_negatives"]) == (got["kept"], got["rejected"])
    assert got["kept"] + got["rejected"] == 8 and got["kept"] >= 4 and second.state == "finished"
    assert remove_seed(store, ds) == 0                                              # nothing left to remove


def test_remove_seed_removes_only_seed_entries(store, tmp_path):
    ds = make_meta_dataset(store, tmp_path / "src", n=40)
    assert metadata.seed_from_split(store, ds, "val", fraction=0.25, seed=1) == 5
    metadata.add_pairs(store, ds, [int(store.pairs_frame(ds, split="train")["pair_id"].iloc[0])], 0)
    assert remove_seed(store, ds) == 5
    assert list(keys_of(store, ds).values()) == [(0, "manual")]


def test_markdown_table_and_means_over_seeds():
    row = {"kind": "hard", "ratio": 0.4, "method": "mscn", "seed": 0, "kept": 30, "rejected": 70,
           "seconds_per_run": 61.2, "meta_positives": 110, "meta_negatives": 70,
           "before": {"agree": 64, "total": 100, "rate": 0.64, "auroc": 0.71234},
           "after": {"agree": 91, "total": 100, "rate": 0.91, "auroc": None}}
    text = markdown([row], "python -m core bench loop", 120.0)
    assert text.splitlines()[-1] == ("| hard 0.4 | mscn | 0 | 100 (30 / 70) | 110 / 70 | 64/100 → 91/100 | "
                                     "0.712 → – | 61 |")
    other = row | {"seed": 1, "before": {"agree": 70, "total": 100, "rate": 0.70, "auroc": 0.7},
                   "after": {"agree": 80, "total": 100, "rate": 0.80, "auroc": 0.8}}
    means = summary([row, other])
    assert len(means) == 1 and means[0]["seeds"] == 2
    assert means[0]["before_rate"] == pytest.approx(0.67) and means[0]["after_rate"] == pytest.approx(0.855)
    assert means[0]["before_auroc"] == pytest.approx(0.70617) and means[0]["after_auroc"] == pytest.approx(0.8)
    assert (markdown([row, other], "c", 1.0).splitlines()[-1]
            == "| hard 0.4 | mscn | 2 | 0.670 → 0.855 | 0.706 → 0.800 |")


def test_fused_loop_decides_in_steps_and_refits_without_retraining(store, tmp_path):
    from core.benchmarks.loop import fused_loop, fused_markdown
    from core.generated import GenerateOptions, create_generated
    create_generated(store, "demo", GenerateOptions(images=40, noise=0.4, noise_kind="hard", seed=3))
    got = fused_loop(store, "demo", "concord", [4, 10], epochs=1, settings={"refit_every": 0})
    runs = store.runs(store.dataset("demo").id)
    # its base run, and no retrain (no faster b1 either: `fast_b1_lr` is off by default)
    assert sorted((r.method, r.config.get("lr")) for r in runs) == [("b1", 0.001), ("concord", None)]
    assert [s["decided"] for s in got["steps"]] == [4, 10]
    assert all(s["kept"] + s["rejected"] == s["decided"] for s in got["steps"])
    assert len(store.current_decisions(store.dataset("demo").id)) == 10
    fused = next(r for r in runs if r.method == "concord").metrics["fused"]
    assert fused["refits"] == 2 and fused["labelled"]["positives"] + fused["labelled"]["negatives"] >= 10
    assert all(s["before"] is not None and s["after"] is not None for s in got["steps"])
    text = fused_markdown([{"kind": "hard", "ratio": 0.4, "seed": 0} | got], "cmd", 1.0)
    assert "| hard 0.4 | 0 | 10 (" in text


def test_the_loop_runs_on_kept_sweep_cells_without_changing_them(capsys, concord_env, tmp_path):
    import json

    from core.cli import main
    from core.store import Store
    assert main(["demo", "--images", "20", "--noise", "0.4", "--seed", "1"]) == 0
    kept = tmp_path / "kept"
    assert main(["bench", "quality", "--kinds", "ncr", "--noise", "0.4", "--methods", "b1,concord", "--epochs", "1",
                 "--set", "b1.batch_size=16", "--no-ceiling", "--no-docs", "--json", "--keep", str(kept)]) == 0
    quality = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    fused_row = next(r for r in quality["rows"] if r["method"] == "concord")
    assert 0 <= fused_row["fit_ceiling"] <= 1         # the fused run's headroom, beside its AUROC
    assert next(r for r in quality["rows"] if r["method"] == "b1")["fit_ceiling"] is None

    assert main(["bench", "loop", "--cells", str(kept), "--decide", "3,6", "--order", "uncertain", "--no-docs",
                 "--json"]) == 0
    out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    (row,) = out["rows"]
    assert (row["set"], row["kind"], row["ratio"], row["seed"]) == ("demo", "ncr", 0.4, 0)
    assert [s["decided"] for s in row["steps"]] == [3, 6]
    assert all(0 <= s["before"] <= 1 and 0 <= s["after"] <= 1 for s in row["steps"])
    assert all(0 <= s["fit_ceiling"] <= 1 for s in row["steps"])       # on the pairs not decided
    assert [g["decided"] for g in out["gains"]] == [3, 6]
    assert main(["bench", "loop", "--cells", str(kept), "--epochs", "2", "--no-docs"]) == 1
    assert "--cells trains nothing: --epochs would be ignored; leave it out" in capsys.readouterr().err
    with Store.open(kept / "demo" / "bench.duckdb", read_only=True) as store:   # the kept cell: no decision
        assert store.decisions_frame(store.dataset("ncr-0.4-s0").id).empty
