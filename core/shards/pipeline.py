"""`score_shards`: read Parquet shards, decode, embed, score, and write one scored shard per input shard.

Two engines run the same stages (`core.shards.scorer`):
- `local`: one process, shard after shard, no Ray (small data, tests);
- `ray`: Ray Data — `read_parquet`, image decoding in CPU `map_batches` tasks, embedding in an actor pool
  (`Embedder` loads the model once per worker; `num_gpus` per actor where Ray sees GPUs), then scoring. Ray
  retries a task whose worker died and restarts the actor, so a killed worker still gives complete output.

Either way the driver gathers the scored rows shard by shard (order preserved), adds the consensus terms of
the shard (`core.detect.consensus`, neighbours and siblings drawn from the same shard) and writes the shard
whole (`ShardWriter`). Progress counts rows; a cancel stops between batches and keeps every finished shard,
and a re-run skips them. A shard with unreadable rows is reported by name and not written.
"""
from __future__ import annotations

import os
import time
from contextlib import contextmanager
from dataclasses import asdict, dataclass, replace
from typing import Any, Iterator, Sequence

import numpy as np

from core.errors import ConcordError
from core.progress import Progress
from core.shards.config import ShardScoreConfig
from core.shards.reader import Shard, input_columns, list_shards, read_shard
from core.shards.scorer import Batch, Embedder, Mixture, ScorerSpec, decode_batch, score_batch
from core.shards.writer import ShardWriter

@dataclass
class ShardScoreReport:
    """What a scoring pass did."""

    out: str
    shards: int
    skipped: list[str]                 # already written before this pass (resume)
    written: list[str]
    failed: dict[str, str]             # shard path -> the first reason
    pairs: int                         # rows written in this pass (a failed shard's rows are not)
    seconds: float
    scorer: str

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    def summary(self) -> str:
        """The one line that reports a pass (the CLI's output, the Datasets page's notice)."""
        return (f"scored {self.pairs:,} pairs in {self.seconds:.1f} s with {self.scorer}: {len(self.written)} shards "
                f"written, {len(self.skipped)} already done, {len(self.failed)} failed")


# ------------------------------------------------------------------------------------------- engines
def _folders(shards: Sequence[Shard]) -> dict[str, tuple[str, str, bool]]:
    """Row `path` value (ours, or Ray's scheme-less form of a URL) -> (shard name, shard folder, inline images)."""
    out = {}
    for s in shards:
        out[s.path] = out[s.path.split("://", 1)[-1]] = (s.name, s.folder, s.images_inline)
    return out


def _stage_options(shards: Sequence[Shard], spec: ScorerSpec, config: ShardScoreConfig) -> dict[str, Any]:
    c = config.columns
    return {"image_size": spec.image_size, "folders": _folders(shards), "image": c.image, "caption": c.caption,
            "key": c.key if shards[0].has_key else None, "split": c.split if shards[0].has_split else None}


def local_batches(shards: Sequence[Shard], spec: ScorerSpec, config: ShardScoreConfig) -> Iterator[Batch]:
    """The scored batches of `shards`, in order, computed in this process."""
    if not shards:
        return
    options = _stage_options(shards, spec, config)
    embedder = Embedder(spec, config.device)
    for shard in shards:
        table = read_shard(shard, config.columns)
        for start in range(0, table.num_rows, config.batch_size):
            part = table.slice(start, config.batch_size)
            batch = {name: part.column(name).to_numpy(zero_copy_only=False) for name in part.column_names}
            batch["path"] = np.full(part.num_rows, shard.path, object)
            yield score_batch(embedder(decode_batch(batch, **options)), mixture=spec.mixture)


def ray_batches(shards: Sequence[Shard], spec: ScorerSpec, config: ShardScoreConfig) -> Iterator[Batch]:
    """The scored batches of `shards`, in order, computed by Ray Data on the cluster `ray_session` joined."""
    if not shards:
        return
    import ray.data
    ctx = ray.data.DataContext.get_current()
    ctx.execution_options.preserve_order = True      # rows of a shard arrive together and in order
    ctx.enable_progress_bars = False
    ds = ray.data.read_parquet([s.path for s in shards], include_paths=True)
    ds = ds.select_columns(input_columns(shards[0], config.columns) + ["path"])
    ds = ds.map_batches(decode_batch, fn_kwargs=_stage_options(shards, spec, config), batch_format="numpy",
                        batch_size=config.batch_size, num_cpus=1)
    ds = ds.map_batches(Embedder, fn_constructor_kwargs={"spec": spec, "device": config.device},
                        compute=ray.data.ActorPoolStrategy(size=config.workers), num_gpus=config.num_gpus,
                        batch_format="numpy", batch_size=config.batch_size)
    ds = ds.map_batches(score_batch, fn_kwargs={"mixture": spec.mixture}, batch_format="numpy", batch_size=None)
    yield from ds.iter_batches(batch_format="numpy", batch_size=None, prefetch_batches=1)


def _refuse_too_few_cpus(cpus: float, config: ShardScoreConfig) -> None:
    """Refuse a local cluster of `cpus` CPUs that cannot run `config`'s pass (`ShardScoreConfig.ray_cpus`): Ray
    would wait forever for a CPU to read the shards on."""
    if cpus < config.ray_cpus:
        workers = f"{config.workers} embedding worker{'s' * (config.workers > 1)}"
        fewer = " use fewer workers," if config.workers > 1 else ""
        raise ConcordError(f"a local Ray cluster of {cpus:g} CPU{'s' * (cpus != 1)} cannot score with {workers}: "
                           "Ray holds a CPU for each worker and reading the shards needs one more, so it needs at "
                           f"least {config.ray_cpus} CPUs (--num-cpus {config.ray_cpus}): give it more,{fewer} or "
                           "use the local engine")


@contextmanager
def ray_session(num_cpus: int | None = None, object_store_memory: int | None = None,
                config: ShardScoreConfig | None = None) -> Iterator[float]:
    """Join the Ray cluster at `RAY_ADDRESS` (or start a local one with `num_cpus`) unless Ray is already
    initialised; yields the seconds start-up took, and shuts down only what it started. With `config`, a local
    cluster too small for its pass is refused: before starting when `num_cpus` is given, else once Ray has
    counted this machine's CPUs."""
    try:
        import ray
    except ImportError:
        raise ConcordError("the ray engine needs Ray: pip install -r requirements-ray.txt "
                           "(or use --engine local)") from None
    if ray.is_initialized():
        yield 0.0
        return
    from core.paths import REPO_ROOT
    address = os.environ.get("RAY_ADDRESS")
    if config is not None and num_cpus is not None and not address:
        _refuse_too_few_cpus(num_cpus, config)
    t0 = time.perf_counter()
    env = {"env_vars": {"PYTHONPATH": os.pathsep.join(filter(None, [str(REPO_ROOT), os.environ.get("PYTHONPATH")]))}}
    if address:
        ray.init(address=address, runtime_env=env, log_to_driver=False)
    else:
        ray.init(num_cpus=num_cpus, object_store_memory=object_store_memory, include_dashboard=False,
                 runtime_env=env, log_to_driver=False)
    try:
        if config is not None and num_cpus is None and not address:
            _refuse_too_few_cpus(ray.cluster_resources().get("CPU", 0), config)
        yield time.perf_counter() - t0
    finally:
        ray.shutdown()


def score_with_engine(inputs: Sequence[str], out: str | os.PathLike, spec: ScorerSpec, config: ShardScoreConfig,
                      progress: Progress | None = None, num_cpus: int | None = None) -> ShardScoreReport:
    """`score_shards`, inside a `ray_session` (a local cluster of `num_cpus` unless `RAY_ADDRESS` names one) when
    the engine is Ray: what `shards score` and the Datasets page's job run."""
    if config.engine != "ray":
        return score_shards(inputs, out, spec, config, progress)
    with ray_session(num_cpus=num_cpus, config=config):
        return score_shards(inputs, out, spec, config, progress)

# ------------------------------------------------------------------------------------------- assembling
def consensus_terms(image_hash: np.ndarray, caption_hash: np.ndarray, image_emb: np.ndarray,
                    caption_emb: np.ndarray, k: int) -> dict[str, np.ndarray]:
    """The consensus signals (`core.detect.consensus`) of each pair of one shard, its pairs as the pool:
    images and captions are identified by content within the shard. The similarity is left out (already a
    column)."""
    from core.detect.consensus import Pool, space_signals
    _, img_first, img_row = np.unique(image_hash.astype(str), return_index=True, return_inverse=True)
    _, cap_first, cap_row = np.unique(caption_hash.astype(str), return_index=True, return_inverse=True)
    pool = Pool.from_pairs(img_row, cap_row, len(img_first), len(cap_first))
    signals = space_signals(image_emb[img_first], caption_emb[cap_first], pool, img_row, cap_row, k=k)
    return {name: np.asarray(v, np.float64) for name, v in signals.items() if name != "similarity"}


class _Assembler:
    """Gathers scored batches per shard and writes each shard when all its rows are in."""

    def __init__(self, shards: Sequence[Shard], writer: ShardWriter, config: ShardScoreConfig) -> None:
        self.by_name = {s.name: s for s in shards}
        self.writer, self.config = writer, config
        self.parts: dict[str, list[Batch]] = {s.name: [] for s in shards}
        self.counts = {s.name: 0 for s in shards}
        self.written: list[str] = []
        self.pairs = 0                     # rows of the written shards
        self.failed: dict[str, str] = {}
        for s in shards:
            if s.rows == 0:
                self._finish(s)

    def add(self, batch: Batch) -> None:
        names = batch["shard"].astype(str)
        for name in dict.fromkeys(names):
            rows = np.flatnonzero(names == name)
            self.parts[name].append({k: v[rows] for k, v in batch.items()})
            self.counts[name] += len(rows)
            if self.counts[name] == self.by_name[name].rows:
                self._finish(self.by_name[name])

    def _finish(self, shard: Shard) -> None:
        parts = self.parts.pop(shard.name)
        cols = {k: np.concatenate([p[k] for p in parts]) for k in parts[0]} if parts else {}
        errors = [e for e in cols.get("error", []) if e]
        if errors:
            self.failed[shard.path] = f"{len(errors)} of {shard.rows} rows unreadable, first: {errors[0]}"
            return
        self.writer.write(shard, self._columns(shard, cols))
        self.written.append(shard.name)
        self.pairs += shard.rows

    def _columns(self, shard: Shard, cols: Batch) -> dict[str, np.ndarray]:
        n = shard.rows
        rows = np.arange(n, dtype=np.int64)
        if n == 0:
            return {"key": np.array([], str), "shard": np.array([], str), "row": rows, "ordinal": rows,
                    "caption": np.array([], str), "caption_hash": np.array([], str), "image_path": np.array([], str),
                    "image_hash": np.array([], str), "similarity": np.zeros(0), "clean_prob": np.zeros(0),
                    "weight": np.zeros(0)} | ({"split": np.array([], str)} if shard.has_split else {})
        keys = cols["key"].astype(str) if "key" in cols else np.array([f"{shard.name}:{r}" for r in rows], object)
        paths = [self.writer.image_path(h, d) if not ref else _absolute(ref, shard.folder)
                 for ref, h, d in zip(cols["image_ref"], cols["image_hash"], cols["image_data"])]
        out: dict[str, np.ndarray] = {
            "key": keys, "shard": np.full(n, shard.path, object), "row": rows, "ordinal": rows + shard.offset,
            "caption": cols["caption"].astype(str), "caption_hash": cols["caption_hash"].astype(str),
            "image_path": np.array(paths, object), "image_hash": cols["image_hash"].astype(str),
            "similarity": cols["similarity"], "clean_prob": cols["clean_prob"], "weight": cols["weight"]}
        if "split" in cols:
            out["split"] = cols["split"].astype(str)
        if self.config.consensus:
            out |= consensus_terms(cols["image_hash"], cols["caption_hash"], cols["image_emb"], cols["caption_emb"],
                                   self.config.consensus_k)
        if self.config.embeddings:
            out["image_emb"], out["caption_emb"] = cols["image_emb"], cols["caption_emb"]
        return out


def _absolute(ref: str, folder: str) -> str:
    if "://" in ref or "://" in folder:
        return ref if "://" in ref else f"{folder.rstrip('/')}/{ref}"
    return os.path.normpath(os.path.join(folder, ref))


# ------------------------------------------------------------------------------------------- entry point
def calibrated(spec: ScorerSpec, shards: Sequence[Shard], config: ShardScoreConfig) -> ScorerSpec:
    """`spec` with its mixture fitted on the similarities of the first `calibration_pairs` readable pairs of
    `shards` (in order), computed in this process. Specs from a run come calibrated and are returned as
    they are."""
    if spec.mixture is not None:
        return spec
    sims, n = [], 0
    for batch in local_batches(shards, replace(spec, mixture=Mixture((0, 1), (1, 1), (.5, .5))), config):
        ok = batch["error"] == ""
        sims.append(batch["similarity"][ok])
        n += int(ok.sum())
        if n >= config.calibration_pairs:
            break
    if not n:
        raise ConcordError("no readable pair to calibrate the zero-shot scores on")
    return replace(spec, mixture=Mixture.fit(np.concatenate(sims)[:config.calibration_pairs]))


def manifest(spec: ScorerSpec, config: ShardScoreConfig) -> dict[str, Any]:
    """What the output folder records: the identity a re-run must match, and how the mixture was fitted."""
    return {"version": 1,
            "identity": {"scorer": spec.source, "model": spec.model, "seed": spec.seed, "regime": spec.regime,
                         "embeddings": config.embeddings, "consensus": config.consensus,
                         "consensus_k": config.consensus_k},
            "mixture": asdict(spec.mixture) if spec.mixture is not None else None}


def score_shards(inputs: Sequence[str], out: str | os.PathLike, spec: ScorerSpec,
                 config: ShardScoreConfig = ShardScoreConfig(), progress: Progress | None = None) -> ShardScoreReport:
    """Score every pair of the shards `inputs` into `out` with `spec` (see the module docstring). With
    `engine="ray"`, call inside `ray_session()` (or with Ray already initialised)."""
    progress = progress or Progress()
    t0 = time.perf_counter()
    shards = list_shards(inputs, config.columns)
    head = manifest(spec, config)
    writer = ShardWriter(out, head)
    if writer.manifest.get("mixture") is not None and spec.mixture is None:   # resume: the first pass's mixture
        spec = replace(spec, mixture=Mixture(**{k: tuple(v) for k, v in writer.manifest["mixture"].items()}))
    pending = writer.pending(shards)
    skipped = [s.name for s in shards if s not in pending]
    if pending and spec.mixture is None:
        progress.start("calibrating", None, message=f"calibrating {spec.source} on {config.calibration_pairs} pairs")
        spec = calibrated(spec, shards, config)
        writer.record(mixture=asdict(spec.mixture))     # a resumed pass scores with the same mixture
    total = sum(s.rows for s in pending)
    progress.start("scoring shards", total, message=f"shards: {len(pending)} to score, {len(skipped)} done")
    assembler = _Assembler(pending, writer, config)
    engine = ray_batches if config.engine == "ray" else local_batches
    batches = engine(pending, spec, config)
    try:
        for batch in batches:
            assembler.add(batch)
            progress.advance(len(batch["shard"]), shards_written=float(len(assembler.written)))
            progress.check()
    finally:
        close = getattr(batches, "close", None)
        if close is not None:
            close()
    return ShardScoreReport(str(out), len(shards), skipped, assembler.written, assembler.failed, assembler.pairs,
                            round(time.perf_counter() - t0, 3), spec.source)

