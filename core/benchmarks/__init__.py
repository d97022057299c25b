"""Benchmarks behind `python -m core bench NAME`: one module per benchmark, each exposing
`register(subparsers, common)` like a CLI command. Figures go to stdout (JSON with `--json`) and
to `docs/benchmarks.md`.

Importing a benchmark binds its name in this module's namespace, so the code here never calls the builtin `map`
(the `map` benchmark shadows it once imported)."""

import argparse
import tempfile
from contextlib import contextmanager, nullcontext
from pathlib import Path
from typing import Callable, Iterable, Iterator, TypeVar

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


T = TypeVar("T")


def option_list(text: str, option: str, parse: Callable[[str], T], expected: str) -> list[T]:
    """The comma-separated values of `option` read by `parse` (a ValueError for one it refuses); a ConcordError
    naming the option and `expected` (what it takes) for a bad value or none at all, so that a benchmark refuses
    its options before it makes or trains anything."""
    from core.errors import ConcordError
    items = [t.strip() for t in str(text).split(",") if t.strip()]
    if not items:
        raise ConcordError(f"{option} takes {expected}, got {text!r}")
    out = []
    for item in items:
        try:
            out.append(parse(item))
        except ValueError:
            raise ConcordError(f"{option} takes {expected}, got {item!r}") from None
    return out


def counts(text: str, option: str, minimum: int = 1) -> list[int]:
    """`option`'s comma-separated whole numbers, each at least `minimum` (pair counts, decision steps)."""
    def parse(item: str) -> int:
        n = int(item)
        if n < minimum:
            raise ValueError(item)
        return n
    return option_list(text, option, parse, f"comma-separated whole numbers of at least {minimum}")


def _ratio(item: str) -> float:
    """A ratio within [0, 1] (NaN refused); a ValueError otherwise."""
    r = float(item)
    if not 0.0 <= r <= 1.0:
        raise ValueError(item)
    return r


def ratios(text: str, option: str) -> list[float]:
    """`option`'s comma-separated ratios, each within [0, 1] (noise ratios)."""
    return option_list(text, option, _ratio, "comma-separated ratios within [0, 1]")


def names(text: str, option: str, known: Iterable[str], what: str) -> list[str]:
    """`option`'s comma-separated names, each one of `known` (`what` they are: noise kinds, methods, steps)."""
    known = list(known)

    def parse(item: str) -> str:
        if item not in known:
            raise ValueError(item)
        return item
    return option_list(text, option, parse, f"comma-separated {what} ({', '.join(known)})")


def check_ranges(args: argparse.Namespace, at_least: dict[str, int] | None = None,
                 within_unit: Iterable[str] = ()) -> None:
    """Refuse (ConcordError naming the option) a number option out of range: `at_least` maps dests to their
    least value (whole numbers), `within_unit` names dests that are ratios within [0, 1]. An option left at None
    (e.g. `--epochs`, each method's own default) passes."""
    from core.errors import ConcordError
    flag = lambda d: "--" + d.replace("_", "-")  # noqa: E731
    for dest, least in (at_least or {}).items():
        value = getattr(args, dest, None)
        if value is not None and value < least:
            raise ConcordError(f"{flag(dest)} takes a whole number of at least {least}, got {value}")
    for dest in within_unit:
        value = getattr(args, dest, None)
        if value is not None:
            try:
                _ratio(str(value))
            except ValueError:
                raise ConcordError(f"{flag(dest)} takes a ratio within [0, 1], got {value}") from None


def check_training(args: argparse.Namespace, settings: dict[str, dict[str, str]]) -> None:
    """Refuse, before any dataset is read or network trained, what `core.training.start_run` would refuse only
    when the run starts: `--k` below 1, an unknown `--model` or `--device`, and for each method (each key of
    `settings`) with its `--set`s and `--epochs` what `core.training.check_request` refuses (a model it cannot
    run, a setting out of range, NPC's warm-up, a fused score's trusted split that cannot be)."""
    from core.models import DEFAULT_MODEL, model_info, resolve_device
    from core.training import check_request
    check_ranges(args, {"k": 1, "epochs": 1})
    model = args.model or DEFAULT_MODEL
    model_info(model)
    resolve_device(args.device)
    epochs = getattr(args, "epochs", None)
    for method, values in settings.items():
        check_request(method, model, values | ({} if epochs is None else {"epochs": epochs}))


def repeated_options(args: argparse.Namespace) -> str:
    """The `add_training_options` a command line that reproduces a benchmark repeats: `--k` where it is not the
    default, and every `--set`."""
    from core.noise import DEFAULT_K
    return (f" --k {args.k}" if args.k != DEFAULT_K else "") + "".join(f" --set {s}" for s in args.sets)


def check_new_folder(keep: Path | None) -> None:
    """Refuse (ConcordError) a `--keep` folder that exists, so no earlier benchmark's store is mixed in."""
    from core.errors import ConcordError
    if keep is not None and keep.exists():
        raise ConcordError(f"{keep} exists: --keep names a new folder, so no earlier benchmark's store is mixed in")


@contextmanager
def scratch_store(user_store, dataset: str, prefix: str, keep: Path | None = None) -> Iterator:
    """A store in a temporary folder (never the user's) holding dataset `dataset`'s clean originals (injected
    noise undone) as `clean`, for noisy copies made with `core.noise.inject_noise_copy`. With `keep`, the store
    is made in that new folder instead and left there (its runs, scores and cached signals, for inspection)."""
    from core.noise import clean_records
    from core.store import Store
    check_new_folder(keep)
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
        raise ConcordError(f"no kept benchmark store (SET/bench.duckdb) under {', '.join(str(f) for f in folders)}: "
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
