"""How shards are scored: the settings shared by `shards score`, `bench shards` and the Datasets page (a light module:
the page imports it without loading torch)."""
from __future__ import annotations

from dataclasses import dataclass, field

from core.errors import ConcordError
from core.shards.reader import ShardColumns

ENGINES = ("local", "ray")


@dataclass(frozen=True)
class ShardScoreConfig:
    """How to score shards."""

    engine: str = "local"              # local | ray
    batch_size: int = 256              # rows per decode / embedding batch
    embeddings: bool = True            # write both embeddings per pair (Explore's map needs them)
    consensus: bool = True             # neighbour / sibling agreement terms within each shard
    consensus_k: int = 10              # neighbours per pair for the consensus terms
    calibration_pairs: int = 5000      # zero-shot models: pairs whose similarities fit the clean/noisy mixture
    device: str = "auto"               # the embedding workers' device
    workers: int = 1                   # ray: embedding actors
    num_gpus: float = 0.0              # ray: GPUs per embedding actor (0: CPU)
    columns: ShardColumns = field(default_factory=ShardColumns)

    @property
    def ray_cpus(self) -> int:
        """The fewest CPUs a Ray cluster scores on: Ray Data holds one for each embedding actor (a GPU one too)
        for the whole pass, and the read, decode and score tasks need one more; with fewer they wait forever."""
        return self.workers + 1

    def __post_init__(self) -> None:
        if self.engine not in ENGINES:
            raise ConcordError(f"unknown engine {self.engine!r} (choose {' or '.join(ENGINES)})")
        if self.batch_size < 1 or self.workers < 1 or self.num_gpus < 0:
            raise ConcordError("batch size and workers must be at least 1, and GPUs per worker not negative")
