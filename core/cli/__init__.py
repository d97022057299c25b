"""The command line: `python -m core COMMAND …`.

Each command lives in its own module of this package and exposes `register(subparsers)`, which adds
its parser and sets `handler(args, ctx) -> int`. Modules are discovered, so a command lands with its
issue by adding one file. Errors meant for people (`ConcordError`) print one line and exit 1;
`--debug` shows the traceback.
"""
from __future__ import annotations

import argparse
import importlib
import json
import os
import pkgutil
import sys
import traceback
from dataclasses import dataclass, field
from typing import Any, Callable

from core.errors import ConcordError
from core.progress import Progress, format_eta

COMMAND_ORDER = ["import", "demo", "noise", "datasets", "delete", "embed", "train", "runs", "evaluate",
                 "decide", "meta", "export", "shards", "bench"]


@dataclass
class Context:
    """What a command handler gets besides its arguments: the store (opened on first use) and output."""

    db: str | None
    json_output: bool = False
    _store: Any = field(default=None, repr=False)

    @property
    def store(self):  # -> core.store.Store, imported lazily to keep start-up light
        if self._store is None:
            from core.store import Store
            self._store = Store.open(self.db)
        return self._store

    def close(self) -> None:
        if self._store is not None:
            self._store.close()
            self._store = None

    def print_json(self, obj: Any) -> None:
        print(json.dumps(obj, default=str))


def common_options() -> argparse.ArgumentParser:
    """Options every subcommand accepts (after the subcommand name, too)."""
    parent = argparse.ArgumentParser(add_help=False)
    parent.add_argument("--db", default=argparse.SUPPRESS,
                        help="DuckDB file (default: $CONCORD_DB or $CONCORD_HOME/concord.duckdb)")
    parent.add_argument("--debug", action="store_true", default=argparse.SUPPRESS,
                        help="show tracebacks on errors")
    return parent


def _command_modules() -> list[str]:
    """The command modules of this package, in `COMMAND_ORDER`."""
    return sorted((m.name for m in pkgutil.iter_modules(__path__) if not m.name.startswith("_")),
                  key=lambda n: (COMMAND_ORDER.index(n.rstrip("_")) if n.rstrip("_") in COMMAND_ORDER else 99, n))


def _invoked(argv: list[str]) -> str | None:
    """The command module `argv` names (None when it names none, e.g. `--help`): only that module is imported,
    so a light command pays for no other command's imports."""
    rest = iter(argv)
    for token in rest:
        if token == "--db":
            next(rest, None)
        elif not token.startswith("-"):
            return next((m for m in _command_modules() if m.rstrip("_") == token), None)
    return None


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    """The parser of every command, or of command module `only`."""
    parser = argparse.ArgumentParser(prog="python -m core", description="Concord: find and fix mismatched "
                                     "image-caption pairs.", parents=[common_options()])
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for name in _command_modules():
        if only is None or name == only:
            importlib.import_module(f"{__name__}.{name}").register(sub, common_options())
    return parser


class ProgressBar:
    """Renders a `Progress` on stderr as one updating line (only when stderr is a terminal or forced)."""

    def __init__(self, enabled: bool | None = None) -> None:
        self.enabled = sys.stderr.isatty() if enabled is None else enabled
        self._last = ""

    def __call__(self, p: Progress) -> None:
        if not self.enabled:
            return
        snap = p.snapshot()
        total = snap["total"]
        frac = snap["fraction"] or 0.0
        bar = "#" * int(frac * 30)
        count = f"{snap['step']}/{total}" if total else str(snap["step"])
        rate = f"{snap['rate']:.1f}/s" if snap["rate"] else ""
        metrics = " ".join(f"{k}={v:.4g}" for k, v in list(snap["metrics"].items())[:3])
        line = f"\r{snap['message'][:40]:<40} [{bar:<30}] {count} {rate} eta {format_eta(snap['eta'])} {metrics}"
        if line != self._last:
            sys.stderr.write(line[:160].ljust(len(self._last)))
            sys.stderr.flush()
            self._last = line

    def close(self) -> None:
        if self.enabled and self._last:
            sys.stderr.write("\n")


def cli_progress() -> tuple[Progress, ProgressBar]:
    """A progress object wired to a terminal progress bar, for handlers of long commands."""
    bar = ProgressBar()
    return Progress(listener=bar), bar


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    args = build_parser(_invoked(argv)).parse_args(argv)
    debug = getattr(args, "debug", False)
    ctx = Context(db=getattr(args, "db", None), json_output=getattr(args, "json", False))
    handler: Callable[[argparse.Namespace, Context], int] = args.handler
    try:
        return int(handler(args, ctx) or 0)
    except ConcordError as exc:
        if debug:
            traceback.print_exc()
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:     # the reader (`| head`) stopped reading: nothing is wrong, nothing more to print
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1
    except Exception as exc:  # noqa: BLE001 - the one place that turns crashes into one line
        if debug:
            traceback.print_exc()
        else:
            print(f"error: {type(exc).__name__}: {exc} (run with --debug for the traceback)", file=sys.stderr)
        return 2
    finally:
        ctx.close()
