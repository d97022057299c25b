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
from core.shards.writer import COLUMNS, EMBEDDINGS, output_files, read_manifest, term_columns

REFUSED = "nothing attached"


def _pair_files(out: str | os.PathLike, files: list[Path], embeddings: bool) -> tuple[list[Path], int]:
    """The scored shards of `out` that hold pairs, and how many are empty (an input shard of no rows is written
    without the embeddings and terms, and adds nothing). Refused, naming the file, when one is not readable
    Parquet or lacks a column attach reads (a file not written by `shards score`, or rewritten since), and when
    every shard is empty."""
    need = COLUMNS + (EMBEDDINGS if embeddings else ())
    kept = []
    for path in files:
        try:
            meta = pq.read_metadata(path)
        except (OSError, pa.ArrowInvalid) as exc:
            raise ConcordError(f"{path} is not a readable Parquet file ({exc}), {REFUSED}: delete it and run "
                               "`shards score` again to rewrite it") from None
        if not meta.num_rows:
            continue
        missing = [c for c in need if c not in meta.schema.to_arrow_schema().names]
        if missing:
            raise ConcordError(f"{path} lacks the column(s) {', '.join(map(repr, missing))} of a scored shard, "
                               f"{REFUSED}: delete it and run `shards score` again to rewrite it")
        kept.append(path)
    if not kept:
        raise ConcordError(f"{out}: every scored shard is empty (their input shards have no rows), {REFUSED}")
    return kept, len(files) - len(kept)


def _refuse_repeated_keys(store, out: str | os.PathLike, files: list[Path]) -> None:
    """Refuse pairs that repeat an earlier pair's key (in file and row order), as an import refuses a repeated
    pair_id: a dataset's pair keys are unique (an export writes them as pair ids, which a re-import refuses to
    repeat). DuckDB reads the key columns in place, so memory does not grow with the shards."""
    cur, paths = store.cursor(), [str(f) for f in files]
    repeats = cur.execute("SELECT count(*) - count(DISTINCT key) FROM read_parquet(?::VARCHAR[])",
                          [paths]).fetchone()[0]
    if not repeats:
        return
    key, shard, row, first_shard, first_row = cur.execute("""
        SELECT key, shard, "row", first_value(shard) OVER w, first_value("row") OVER w
        FROM read_parquet(?::VARCHAR[], filename = true, file_row_number = true, union_by_name = true)
        WINDOW w AS (PARTITION BY key ORDER BY filename, file_row_number)
        QUALIFY row_number() OVER w > 1
        ORDER BY filename, file_row_number LIMIT 1""", [paths]).fetchone()
    pairs = f"{repeats:,} pairs repeat" if repeats > 1 else "1 pair repeats"
    raise ConcordError(f"{out}: {pairs} an earlier pair's key (first: key {key!r} at {shard} row {row}, first at "
                       f"{first_shard} row {first_row}), {REFUSED}: a dataset's pair keys must be unique, as on "
                       "import; give the shards unique keys (or no key column, to key pairs SHARD:ROW) and score "
                       "them into a new folder")


def _embedding_table(files: list[Path]) -> pa.Table:
    """Each pair's image and caption hash and embeddings, read before anything is stored."""
    return pa.concat_tables([pq.read_table(f, columns=["image_hash", "caption_hash", *EMBEDDINGS]) for f in files])


def _embeddings(table: pa.Table, images, captions) -> RunEmbeddings:
    """One embedding per image and caption of the dataset (the first row with its content), in store id order."""
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
    """Attach the scored shards in `out` as dataset `name`; returns its id, run id and counts. All or nothing:
    every shard is checked before the dataset is created (a folder without scored shards, a taken name, a file
    that is not a scored shard, repeated keys are refused with a message), and a failure after it is created
    (reading the embeddings, saving them) deletes it and what was cached again. Empty shards are left out and
    counted (`empty`)."""
    manifest = read_manifest(out)
    files = output_files(out)
    if not files:
        raise ConcordError(f"{out} has a manifest but no scored shard yet: run `shards score` first")
    identity = manifest["identity"]
    embeddings = bool(identity.get("embeddings"))
    files, empty = _pair_files(out, files, embeddings)
    _refuse_repeated_keys(store, out, files)
    config = {"scorer": identity["scorer"], "shards": str(Path(out).resolve()), "mixture": manifest.get("mixture")}
    ds_id, run_id = store.attach_scored_shards(
        name, [str(f) for f in files], model=identity["model"], config=config, source_path=str(Path(out).resolve()),
        info={"shards": len(files), "scorer": identity["scorer"]}, terms=term_columns(files),
        splits=any("split" in pq.read_schema(f).names for f in files))
    run = store.run(run_id)
    try:
        summary = store.dataset_summary(ds_id)
        if embeddings:      # read once the pairs are stored, so they are never in memory beside DuckDB's attach
            emb = _embeddings(_embedding_table(files), store.images_frame(ds_id), store.captions_frame(ds_id))
            artifacts.save_embeddings(run, emb)
    except BaseException:
        store.delete_dataset(name)
        artifacts.clear_run(run)
        raise
    return {"dataset": name, "dataset_id": ds_id, "run_id": run_id, "shards": len(files), "empty": empty,
            "pairs": summary["pairs"], "images": summary["images"], "embeddings": embeddings}


def attach_summary(result: dict[str, Any]) -> str:
    """The one line that reports an `attach` (the CLI's output, the Datasets page's notice)."""
    empty = result.get("empty", 0)
    return (f"attached {result['pairs']:,} pairs ({result['images']:,} images, {result['shards']} shards) as "
            f"{result['dataset']!r}, run {result['run_id']}"
            + (f"; {empty} empty shard{'s' * (empty > 1)} left out" if empty else ""))
