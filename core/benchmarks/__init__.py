"""Benchmarks behind `python -m core bench NAME`: one module per benchmark, each exposing
`register(subparsers, common)` like a CLI command. Figures go to stdout (JSON with `--json`) and
to `docs/benchmarks.md`."""

import argparse
import tempfile
from contextlib import contextmanager, nullcontext
from pathlib import Path
from typing import Iterator

from core.paths import REPO_ROOT

DOC = REPO_ROOT / "docs" / "benchmarks.md"


def write_section(key: str, body: str, doc: Path = DOC) -> None:
    """Put `body` into `doc` between markers named `key`, replacing what an earlier run wrote there."""
    start, end = f"<!-- bench {key} -->", f"<!-- /bench {key} -->"
    text = doc.read_text(encoding="utf-8") if doc.exists() else "# Benchmarks\n"
    block = f"{start}\n{body.strip()}\n{end}"
    if start in text and end in text:
        before, rest = text.split(start, 1)
        text = before + block + rest.split(end, 1)[1]
    else:
        text = text.rstrip() + "\n\n" + block + "\n"
    doc.write_text(text, encoding="utf-8")


def peak_rss_gb(pid: int | None) -> float | None:
    """A live process's peak resident memory (VmHWM), GB; None when it cannot be read."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except (OSError, TypeError):
        return None
    kb = next((int(line.split()[1]) for line in status.splitlines() if line.startswith("VmHWM:")), None)
    return None if kb is None else kb / 1e6


def add_output_options(p: argparse.ArgumentParser) -> None:
    """`--no-docs` and `--json`, which every benchmark takes."""
    p.add_argument("--no-docs", action="store_true", help="do not write docs/benchmarks.md")
    p.add_argument("--json", action="store_true", help="print the figures as JSON")


def add_training_options(p: argparse.ArgumentParser, set_metavar: str = "KEY=VALUE",
                         set_help: str = "a method setting (repeatable)") -> None:
    """`--model`, `--device`, `--set` and the near-miss noise's `--k`, which every benchmark that trains takes."""
    from core.noise import DEFAULT_K
    p.add_argument("--model", default=None, help="model (default concord-tiny)")
    p.add_argument("--device", default="auto")
    p.add_argument("--set", dest="sets", action="append", default=[], metavar=set_metavar, help=set_help)
    p.add_argument("--k", type=int, default=DEFAULT_K,
                   help=f"hard noise: each near miss from the k most similar captions of other images (default "
                        f"{DEFAULT_K}; a larger set at a high ratio may need more)")


def repeated_options(args: argparse.Namespace) -> str:
    """The `add_training_options` a command line that reproduces a benchmark repeats: `--k` where it is not the
    default, and every `--set`."""
    from core.noise import DEFAULT_K
    return (f" --k {args.k}" if args.k != DEFAULT_K else "") + "".join(f" --set {s}" for s in args.sets)


@contextmanager
def scratch_store(user_store, dataset: str, prefix: str, keep: Path | None = None) -> Iterator:
    """A store in a temporary folder (never the user's) holding dataset `dataset`'s clean originals (injected
    noise undone) as `clean`, for noisy copies made with `core.noise.inject_noise_copy`. With `keep`, the store
    is made in that new folder instead and left there (its runs, scores and cached signals, for inspection)."""
    from core.errors import ConcordError
    from core.noise import clean_records
    from core.store import Store
    if keep is not None and keep.exists():
        raise ConcordError(f"{keep} exists: --keep names a new folder, so no earlier benchmark's store is mixed in")
    source = user_store.dataset(dataset)
    records = clean_records(user_store.dataset_records(source.id))
    with (tempfile.TemporaryDirectory(prefix=f"concord-bench-{prefix}-") if keep is None
          else nullcontext(str(keep))) as tmp:
        Path(tmp).mkdir(parents=True, exist_ok=True)
        with Store.open(Path(tmp) / "bench.duckdb") as store:
            store.write_dataset("clean", source.root, source.source_format, records, parent=source.name)
            yield store


def kept_stores(folders: list[Path]) -> list[Path]:
    """The stores `bench quality --keep DIR` left under each of `folders` (DIR/SET/bench.duckdb, at any depth, so
    a folder of kept folders names them all), sorted; a ConcordError when there is none."""
    from core.errors import ConcordError
    dbs = sorted({db for folder in folders for db in Path(folder).rglob("bench.duckdb")})
    if not dbs:
        raise ConcordError(f"no kept benchmark store (SET/bench.duckdb) under {', '.join(map(str, folders))}: "
                           "make them with `bench quality --keep DIR`")
    return dbs


def refuse_training_options(args: argparse.Namespace, parser: argparse.ArgumentParser, dests: list[str],
                            mode: str) -> None:
    """Refuse (ConcordError) any of the options `dests` given with `mode` (e.g. `--collect`), which trains nothing
    and would silently ignore them: an option counts as given when its value is not the parser's default."""
    from core.errors import ConcordError
    given = [f"--{d.replace('_', '-')}" for d in dests if getattr(args, d) != parser.get_default(d)]
    if given:
        raise ConcordError(f"{mode} trains nothing: {', '.join(given)} would be ignored; leave "
                           f"{'it' if len(given) == 1 else 'them'} out")
