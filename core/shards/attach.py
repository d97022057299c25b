"""`attach`: make a folder of scored shards a dataset the app explores, reviews and exports.

The store reads the shards in place (`Store.attach_scored_shards`) and copies what the pages and decisions join
on; the run it records (method `shards`) carries the scores, and its consensus terms are read from the files
whenever a page asks (`Store.scores_frame`, `Store.pair_extras`). When the shards hold embeddings they become the
run's embeddings in the cache (`core.artifacts`), which Explore's map and Review's suggestions read.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from core import artifacts
from core.artifacts import RunEmbeddings
from core.errors import ConcordError
from core.shards.writer import output_files, read_manifest, term_columns


def _embeddings(files: list[Path], images, captions) -> RunEmbeddings:
    """One embedding per image and caption of the dataset (the first row with its content), in store id order."""
    table = pa.concat_tables([pq.read_table(f, columns=["image_hash", "caption_hash", "image_emb", "caption_emb"])
                              for f in files])
    paths = np.array(table.column("image_hash").to_pylist(), object)
    hashes = np.array(table.column("caption_hash").to_pylist(), object)

    def matrix(column: str) -> np.ndarray:
        col = table.column(column).combine_chunks()
        return col.values.to_numpy().reshape(len(col), -1)

    _, first_img = np.unique(paths, return_index=True)
    _, first_cap = np.unique(hashes, return_index=True)
    img_at = {paths[i]: i for i in first_img}
    cap_at = {hashes[i]: i for i in first_cap}
    img_rows = np.array([img_at[h] for h in images["hash"]], np.int64)
    cap_rows = np.array([cap_at[h] for h in captions["hash"]], np.int64)
    return RunEmbeddings(images["image_id"].to_numpy(np.int64), matrix("image_emb")[img_rows],
                         captions["caption_id"].to_numpy(np.int64), matrix("caption_emb")[cap_rows])


def attach(store, out: str | os.PathLike, name: str) -> dict[str, Any]:
    """Attach the scored shards in `out` as dataset `name`; returns its id, run id and counts. Refused with a
    message (and nothing stored) when `out` holds no scored shards or the name is taken."""
    manifest = read_manifest(out)
    files = output_files(out)
    if not files:
        raise ConcordError(f"{out} has a manifest but no scored shard yet: run `shards score` first")
    identity = manifest["identity"]
    config = {"scorer": identity["scorer"], "shards": str(Path(out).resolve()), "mixture": manifest.get("mixture")}
    ds_id, run_id = store.attach_scored_shards(
        name, [str(f) for f in files], model=identity["model"], config=config, source_path=str(Path(out).resolve()),
        info={"shards": len(files), "scorer": identity["scorer"]}, terms=term_columns(files),
        splits=any("split" in pq.read_schema(f).names for f in files))
    if identity.get("embeddings"):
        emb = _embeddings(files, store.images_frame(ds_id), store.captions_frame(ds_id))
        artifacts.save_embeddings(store.run(run_id), emb)
    summary = store.dataset_summary(ds_id)
    return {"dataset": name, "dataset_id": ds_id, "run_id": run_id, "shards": len(files), "pairs": summary["pairs"],
            "images": summary["images"], "embeddings": bool(identity.get("embeddings"))}


def attach_summary(result: dict[str, Any]) -> str:
    """The one line that reports an `attach` (the CLI's output, the Datasets page's notice)."""
    return (f"attached {result['pairs']:,} pairs ({result['images']:,} images, {result['shards']} shards) as "
            f"{result['dataset']!r}, run {result['run_id']}")
