"""Scoring sharded Parquet datasets past one machine, and attaching the scored shards as a dataset.

`reader` lists and reads the input shards (local paths, globs, fsspec URLs); `scorer` builds what scores a
pair (a zero-shot model or a finished run's trained encoder, with the clean/noisy mixture it calibrates) and
the batch stages every engine runs; `pipeline` runs those stages with `local` (one process) or `ray` (Ray
Data, actors holding the model); `writer` writes one output shard per input shard atomically, so a re-run
skips what is written (resume); `attach` makes an output folder a dataset of the store.
"""
