"""`bench quality`: a noisy copy per (kind, ratio, seed) in a scratch store, each method trained on it (tiny demo)."""
from __future__ import annotations

import json

from core.cli import main


def test_quality_sweep_on_a_tiny_demo(capsys, concord_env) -> None:
    assert main(["demo", "--images", "20", "--noise", "0.4", "--seed", "1"]) == 0
    capsys.readouterr()
    assert main(["bench", "quality", "--kinds", "ncr", "--noise", "0.4", "--methods", "b1", "--epochs", "1",
                 "--seeds", "1", "--first-seed", "3", "--set", "b1.batch_size=16", "--no-docs", "--json"]) == 0
    out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert [(r["kind"], r["ratio"], r["method"], r["seed"]) for r in out["rows"]] == [
        ("clean", 0.0, "b1", 3), ("ncr", 0.4, "b1", 3)]
    noisy = out["rows"][1]
    assert 0 <= noisy["auroc"] <= 1 and noisy["weight_auroc"] == noisy["auroc"]    # b1's weight is clean_prob
    assert out["rows"][0]["auroc"] is None and out["rows"][0]["rsum"] is not None  # no noise: nothing to detect
    assert [(s["kind"], s["seeds"]) for s in out["summary"]] == [("clean", 1), ("ncr", 1)]

    assert main(["datasets", "--json"]) == 0                                       # the user's store: untouched
    assert [d["name"] for d in json.loads(capsys.readouterr().out)] == ["demo"]


def test_near_miss_noise_takes_k_and_a_ratio_it_cannot_serve_names_the_option(capsys, concord_env) -> None:
    """Near misses at a ratio the k most similar captions cannot serve: refused with the option that helps, nothing
    trained; with a larger `--k` the sweep runs and its command line repeats it."""
    assert main(["demo", "--images", "20", "--noise", "0.4", "--seed", "1"]) == 0
    capsys.readouterr()
    args = ["bench", "quality", "--kinds", "hard", "--noise", "0.8", "--methods", "b1", "--epochs", "1", "--seeds",
            "1", "--no-ceiling", "--set", "b1.batch_size=16", "--no-docs"]
    assert main([*args, "--k", "1"]) == 1
    assert "among the k=1 most similar captions of other images; use a larger --k or a smaller ratio" in (
        capsys.readouterr().err)
    assert main([*args, "--k", "30"]) == 0
    assert "--epochs 1 --k 30 --set b1.batch_size=16` (" in capsys.readouterr().out


def test_fused_gain_is_over_the_best_other_method_on_the_same_data() -> None:
    from core.benchmarks.quality import fused_gains, markdown, summarise
    base = {"set": "demo", "kind": "hard", "ratio": 0.4, "auprc": 0.5, "f1": 0.5, "weight_auroc": 0.5, "rsum": 100.0,
            "seconds_per_epoch": 1.0}
    aurocs = {(0, "b1"): 0.70, (0, "npc"): 0.75, (0, "concord"): 0.80,
              (1, "b1"): 0.72, (1, "npc"): 0.70, (1, "concord"): 0.74}
    rows = [base | {"seed": s, "method": m, "auroc": a} for (s, m), a in aurocs.items()]
    gains = fused_gains(rows)
    assert gains["gain"].round(6).tolist() == [0.05, 0.02]                  # over npc on seed 0, over b1 on seed 1
    fused = summarise(rows).set_index("method").loc["concord"]
    assert round(fused["gain_mean"], 6) == 0.035 and round(fused["gain_min"], 6) == 0.02
    assert "| demo | hard | 0.4 | concord | 0.770 ± 0.042 |" in markdown(summarise(rows), "cmd", 60.0)
    assert "+0.035 / +0.020 |" in markdown(summarise(rows), "cmd", 60.0)
    assert fused_gains([r for r in rows if r["method"] != "concord"]).empty


def test_kept_stores_are_collected_into_one_table(capsys, concord_env, tmp_path) -> None:
    assert main(["demo", "--images", "20", "--noise", "0.4", "--seed", "1"]) == 0
    capsys.readouterr()
    kept = tmp_path / "kept"
    args = ["bench", "quality", "--kinds", "ncr", "--noise", "0.4", "--methods", "b1", "--epochs", "1", "--seeds", "1",
            "--set", "b1.batch_size=16", "--no-ceiling", "--no-docs", "--json"]
    assert main([*args, "--keep", str(kept / "a")]) == 0
    first = json.loads(capsys.readouterr().out.strip().splitlines()[-1])["rows"]
    assert main([*args, "--first-seed", "1", "--keep", str(kept / "b")]) == 0
    second = json.loads(capsys.readouterr().out.strip().splitlines()[-1])["rows"]
    assert (kept / "a" / "demo" / "bench.duckdb").exists()

    assert main(["bench", "quality", "--collect", str(kept / "a"), str(kept / "b"), "--no-docs", "--json"]) == 0
    out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    strip = lambda rows: [{k: v for k, v in r.items() if k != "run_seconds"} for r in rows]  # noqa: E731
    assert out["rows"] == strip(first) + strip(second)          # the same figures, read back from the stores
    assert [(s["kind"], s["ratio"], s["seeds"]) for s in out["summary"]] == [("ncr", 0.4, 2)]
    assert main(["bench", "quality", "--collect", str(kept), "--no-docs", "--json"]) == 0   # the folder of both
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["rows"] == out["rows"]

    before = sorted(p.name for p in (kept / "a" / "demo").iterdir())
    assert main([*args, "--keep", str(kept / "a")]) == 1         # a kept folder is never mixed into
    assert "exists: --keep names a new folder" in capsys.readouterr().err
    assert sorted(p.name for p in (kept / "a" / "demo").iterdir()) == before
    assert main(["bench", "quality", "--collect", str(tmp_path / "nothing"), "--no-docs"]) == 1
    assert "no kept benchmark store" in capsys.readouterr().err
    assert main(["bench", "quality", "--collect", str(kept / "a"), "--dataset", "emoji", "--seeds", "3"]) == 1
    assert "--collect trains nothing: --dataset, --seeds would be ignored; leave them out" in capsys.readouterr().err


def test_fuse_again_measures_a_new_fused_run_on_the_kept_base_runs(capsys, concord_env, tmp_path) -> None:
    from core.store import Store
    assert main(["demo", "--images", "20", "--noise", "0.4", "--seed", "1"]) == 0
    kept = tmp_path / "kept"
    assert main(["bench", "quality", "--kinds", "ncr", "--noise", "0.4", "--methods", "b1,concord", "--epochs", "1",
                 "--set", "b1.batch_size=16", "--set", "concord.fast_b1_lr=0.01", "--no-ceiling", "--no-docs",
                 "--json", "--keep", str(kept)]) == 0
    first = json.loads(capsys.readouterr().out.strip().splitlines()[-1])["rows"]
    # the faster b1 the fused run trained for itself is a row of its own, among the methods it must beat
    assert [r["method"] for r in first] == ["b1", "concord", "b1 lr=0.01"] and first[2]["run_seconds"] is None
    db = kept / "demo" / "bench.duckdb"
    with Store.open(db, read_only=True) as store:
        before = {r.id: r.method for r in store.runs()}
        fast = next(r.id for r in store.runs() if r.method == "b1" and r.config["lr"] == 0.01)
        assert store.run(fast).config["epochs"] == 1                  # the epochs of the sweep's b1

    assert main(["bench", "quality", "--collect", str(kept), "--fuse-again", "--set", "concord.match_context=false",
                 "--no-docs", "--json"]) == 0
    out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    with Store.open(db, read_only=True) as store:
        runs = {r.id: r for r in store.runs()}
    (new,) = set(runs) - set(before)                       # one new run: the fused one, over the same b1 run
    b1 = min(i for i, m in before.items() if m == "b1")
    assert runs[new].method == "concord" and runs[new].metrics["base_runs"] == [b1, fast]   # no network trained
    assert runs[new].config["match_context"] is False and runs[new].metrics["context"] == {}
    # one row per method and rate still: the b1 runs as they were, the fused one from the new run
    assert [r["method"] for r in out["rows"]] == ["b1", "concord", "b1 lr=0.01"]
    strip = lambda r: {k: v for k, v in r.items() if k != "run_seconds"}  # noqa: E731
    assert out["rows"][0] == strip(first[0]) and out["rows"][2] == strip(first[2])
    assert out["gains"][0]["gain"] == out["rows"][1]["auroc"] - max(out["rows"][0]["auroc"], out["rows"][2]["auroc"])
    # the loop on the kept cells takes the latest fused run only (decisions on two would mix)
    assert main(["bench", "loop", "--cells", str(kept), "--decide", "3", "--no-docs", "--json"]) == 0
    assert len(json.loads(capsys.readouterr().out.strip().splitlines()[-1])["rows"]) == 1

    assert main(["bench", "quality", "--collect", str(kept), "--fuse-again", "--set", "b1.batch_size=8"]) == 1
    assert "--set b1.batch_size=8: b1 is not among the methods trained (concord)" in capsys.readouterr().err
    assert main(["bench", "quality", "--fuse-again", "--no-docs"]) == 1
    assert "--fuse-again goes with --collect DIR" in capsys.readouterr().err
    with Store.open(db, read_only=True) as store:          # the refused commands ran nothing
        assert len(store.runs()) == len(runs)
