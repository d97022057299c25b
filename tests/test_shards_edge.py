"""Sharded scoring at its edges: an empty input shard (scored, then left out of attach), an attach refused with
nothing created (every shard empty, a file that is not a scored shard, repeated keys, a failure after the dataset
was made), a failed shard's rows not counted as scored, and a local Ray cluster too small to read on.

No training: a concord-tiny with random weights scores a few generated images zero-shot, with a fixed mixture."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
from PIL import Image

from core import artifacts
from core.errors import ConcordError
from core.shards.attach import attach, attach_summary
from core.shards.config import ShardScoreConfig
from core.shards.pipeline import score_shards, score_with_engine
from core.shards.reader import shard_name
from core.shards.scorer import Mixture, ScorerSpec
from core.shards.writer import output_files
from core.store import Store

CONFIG = ShardScoreConfig(batch_size=8, consensus_k=2)


@pytest.fixture(scope="module")
def spec(tmp_path_factory: pytest.TempPathFactory) -> ScorerSpec:
    """concord-tiny with random weights, zero-shot, with a fixed mixture (nothing to calibrate)."""
    from core.models.tiny import build
    weights = tmp_path_factory.mktemp("tiny") / "tiny.pt"
    torch.save(build(7)[0].state_dict(), weights)
    return ScorerSpec(f"file:concord-tiny:{weights}", mixture=Mixture((0.1, 0.5), (0.01, 0.01), (0.5, 0.5)),
                      source="tiny")


def shard(folder: Path, name: str, n: int, keys: list[str] | None = None, start: int = 0) -> Path:
    """A shard of `n` pairs of distinct generated images in `folder` (images referred to relatively); `keys` adds a
    key column. With n == 0, the columns and no row."""
    (folder / "img").mkdir(parents=True, exist_ok=True)
    images = []
    for i in range(start, start + n):
        Image.new("RGB", (32, 32), ((37 * i) % 256, (91 * i) % 256, (151 * i) % 256)).save(folder / "img" / f"{i}.png")
        images.append(f"img/{i}.png")
    columns = {"image": pa.array(images, pa.string()), "caption": pa.array([f"caption {i}" for i in
                                                                             range(start, start + n)], pa.string())}
    if keys is not None:
        columns["key"] = pa.array(keys, pa.string())
    pq.write_table(pa.table(columns), folder / f"{name}.parquet")
    return folder / f"{name}.parquet"


def nothing_created(db: Path) -> bool:
    with Store.open(db) as store:
        return store.dataset_names() == [] and store.runs() == []


def test_an_empty_shard_is_scored_and_left_out_of_attach(spec: ScorerSpec, tmp_path: Path) -> None:
    shard(tmp_path / "in", "a", 4)
    empty = shard(tmp_path / "in", "b", 0)
    report = score_shards([str(tmp_path / "in")], tmp_path / "out", spec, CONFIG)
    assert (report.pairs, len(report.written), report.failed) == (4, 2, {})
    with Store.open(tmp_path / "a.duckdb") as store:
        result = attach(store, tmp_path / "out", "web")
        assert (result["pairs"], result["shards"], result["empty"], result["embeddings"]) == (4, 1, 1, True)
        assert attach_summary(result) == f"attached 4 pairs (4 images, 1 shards) as 'web', run {result['run_id']}; " \
                                         "1 empty shard left out"
        run = store.run(result["run_id"])
        assert run.config["files"] == [str(tmp_path / "out" / f"{shard_name(str(tmp_path / 'in' / 'a.parquet'))}"
                                                                ".parquet")]
        assert len(run.config["terms"]) == 9 and artifacts.load_embeddings(run).image_emb.shape == (4, 256)
    # a folder of empty shards only: refused, nothing created
    score_shards([str(empty)], tmp_path / "only-empty", spec, CONFIG)
    with pytest.raises(ConcordError) as refused:
        with Store.open(tmp_path / "b.duckdb") as store:
            attach(store, tmp_path / "only-empty", "web")
    assert str(refused.value) == (f"{tmp_path / 'only-empty'}: every scored shard is empty (their input shards have "
                                  "no rows), nothing attached")
    assert nothing_created(tmp_path / "b.duckdb")


def test_a_file_that_is_not_a_scored_shard_is_refused_before_anything_is_created(spec: ScorerSpec,
                                                                                  tmp_path: Path) -> None:
    shard(tmp_path / "in", "a", 3)
    shard(tmp_path / "in", "b", 3, start=3)
    score_shards([str(tmp_path / "in")], tmp_path / "out", spec, CONFIG)
    first, second = output_files(tmp_path / "out")
    pq.write_table(pq.read_table(second).drop_columns(["caption_emb", "clean_prob"]), second)
    with pytest.raises(ConcordError) as refused:
        with Store.open(tmp_path / "a.duckdb") as store:
            attach(store, tmp_path / "out", "web")
    assert str(refused.value) == (f"{second} lacks the column(s) 'clean_prob', 'caption_emb' of a scored shard, "
                                  "nothing attached: delete it and run `shards score` again to rewrite it")
    second.write_text("not parquet")
    with pytest.raises(ConcordError, match=rf"^{second} is not a readable Parquet file \(.*\), nothing attached: "
                                           r"delete it and run `shards score` again to rewrite it$"):
        with Store.open(tmp_path / "a.duckdb") as store:
            attach(store, tmp_path / "out", "web")
    assert nothing_created(tmp_path / "a.duckdb")


def test_a_failure_after_the_dataset_is_made_deletes_it(spec: ScorerSpec, tmp_path: Path, monkeypatch) -> None:
    shard(tmp_path / "in", "a", 3)
    score_shards([str(tmp_path / "in")], tmp_path / "out", spec, CONFIG)

    def full_disk(*args) -> None:
        raise OSError(28, "No space left on device")
    monkeypatch.setattr(artifacts, "save_embeddings", full_disk)
    with pytest.raises(OSError, match="No space left on device"):
        with Store.open(tmp_path / "a.duckdb") as store:
            attach(store, tmp_path / "out", "web")
    assert nothing_created(tmp_path / "a.duckdb")


def test_repeated_keys_are_refused_as_on_import(spec: ScorerSpec, tmp_path: Path) -> None:
    """Keys unique within each shard but one repeated across two: refused naming both places, nothing created;
    the same shards keyed SHARD:ROW attach."""
    a = shard(tmp_path / "in", "a", 3, keys=["k0", "k1", "k2"])
    b = shard(tmp_path / "in", "b", 3, keys=["k3", "k1", "k1"], start=3)
    score_shards([str(tmp_path / "in")], tmp_path / "out", spec, CONFIG)
    with pytest.raises(ConcordError) as refused:
        with Store.open(tmp_path / "a.duckdb") as store:
            attach(store, tmp_path / "out", "web")
    assert str(refused.value) == (
        f"{tmp_path / 'out'}: 2 pairs repeat an earlier pair's key (first: key 'k1' at {b} row 1, first at {a} row "
        "1), nothing attached: a dataset's pair keys must be unique, as on import; give the shards unique keys (or "
        "no key column, to key pairs SHARD:ROW) and score them into a new folder")
    assert nothing_created(tmp_path / "a.duckdb")
    for path in (a, b):
        pq.write_table(pq.read_table(path).drop_columns(["key"]), path)
    score_shards([str(tmp_path / "in")], tmp_path / "unkeyed", spec, CONFIG)
    with Store.open(tmp_path / "a.duckdb") as store:
        assert attach(store, tmp_path / "unkeyed", "web")["pairs"] == 6


def test_the_rows_of_a_failed_shard_are_not_counted_as_scored(spec: ScorerSpec, tmp_path: Path) -> None:
    shard(tmp_path / "in", "a", 4)
    pq.write_table(pa.table({"image": ["img/0.png", "img/missing.png"], "caption": ["x", "y"]}),
                   tmp_path / "in" / "b.parquet")
    report = score_shards([str(tmp_path / "in")], tmp_path / "out", spec, CONFIG)
    assert (report.pairs, len(report.written), list(report.failed)) == (4, 1, [str(tmp_path / "in" / "b.parquet")])
    assert report.summary() == f"scored 4 pairs in {report.seconds:.1f} s with tiny: 1 shards written, 0 already " \
                               "done, 1 failed"
    report = score_shards([str(tmp_path / "in" / "b.parquet")], tmp_path / "out-b", spec, CONFIG)
    assert report.summary().startswith("scored 0 pairs in ") and report.summary().endswith(
        ": 0 shards written, 0 already done, 1 failed")


def test_a_local_ray_cluster_without_a_cpu_to_read_on_is_refused_before_it_starts(spec: ScorerSpec,
                                                                                   tmp_path: Path) -> None:
    """Ray Data holds a CPU for each embedding actor all pass long; the read tasks need one more, or they wait
    forever. A cluster of `num_cpus` below that is refused before Ray starts, naming the minimum."""
    ray = pytest.importorskip("ray", reason="the ray extra is not installed")
    if ray.is_initialized():
        pytest.skip("Ray is already initialised: the cluster is not started here, so not checked")
    assert (ShardScoreConfig().ray_cpus, ShardScoreConfig(workers=3).ray_cpus) == (2, 4)
    shard(tmp_path / "in", "a", 2)
    with pytest.raises(ConcordError) as refused:
        score_with_engine([str(tmp_path / "in")], tmp_path / "out", spec, ShardScoreConfig(engine="ray"), num_cpus=1)
    assert str(refused.value) == (
        "a local Ray cluster of 1 CPU cannot score with 1 embedding worker: Ray holds a CPU for each worker and "
        "reading the shards needs one more, so it needs at least 2 CPUs (--num-cpus 2): give it more, or use the "
        "local engine")
    with pytest.raises(ConcordError) as refused:
        score_with_engine([str(tmp_path / "in")], tmp_path / "out", spec, ShardScoreConfig(engine="ray", workers=3),
                          num_cpus=3)
    assert str(refused.value) == (
        "a local Ray cluster of 3 CPUs cannot score with 3 embedding workers: Ray holds a CPU for each worker and "
        "reading the shards needs one more, so it needs at least 4 CPUs (--num-cpus 4): give it more, use fewer "
        "workers, or use the local engine")
    assert not ray.is_initialized() and not (tmp_path / "out").exists()
