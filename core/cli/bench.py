"""`bench NAME …`: run a benchmark (`python -m core bench --help` lists them).

Benchmarks are discovered by name and only the one asked for is imported (several import torch at the top),
so building the command line stays light for every other command.
"""
from __future__ import annotations

import argparse
import ast
import functools
import importlib
import pkgutil
from pathlib import Path

import core.benchmarks


def _source(module: str) -> ast.Module:
    """A benchmark module's source, parsed (not imported)."""
    return ast.parse((Path(core.benchmarks.__path__[0]) / f"{module}.py").read_text(encoding="utf-8"))


def _registers(tree: ast.Module) -> bool:
    """Whether a module defines `register` at its top level: a benchmark does, a helper module the benchmarks
    share (`headroom`, `_diagnose`) does not, and is no command."""
    return any(isinstance(node, ast.FunctionDef) and node.name == "register" for node in tree.body)


@functools.cache
def _modules() -> dict[str, str]:
    """Benchmark name -> module name, without importing them: `import_` is `import`, `npc_diagnose` is
    `npc-diagnose` (the name each module registers)."""
    return {m.name.rstrip("_").replace("_", "-"): m.name for m in pkgutil.iter_modules(core.benchmarks.__path__)
            if not m.name.startswith("_") and _registers(_source(m.name))}


def benchmark_names() -> list[str]:
    """The benchmarks' names, sorted."""
    return sorted(_modules())


def _summary(name: str) -> str:
    """The first line of a benchmark module's docstring, read from its source (not imported)."""
    doc = ast.get_docstring(_source(_modules()[name])) or ""
    return doc.strip().splitlines()[0] if doc.strip() else ""


def register(sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    names = benchmark_names()
    p = sub.add_parser("bench", parents=[common], help="measure speed and quality (figures for docs/benchmarks.md)",
                       formatter_class=argparse.RawDescriptionHelpFormatter,
                       description="Run a benchmark; `python -m core bench NAME --help` shows its options.",
                       epilog="benchmarks:\n" + "\n".join(f"  {n:<16} {_summary(n)}" for n in names))
    p.add_argument("benchmark", choices=names, metavar="BENCHMARK", help=", ".join(names))
    p.add_argument("options", nargs=argparse.REMAINDER, help="the benchmark's own options")
    p.set_defaults(handler=run, _common=common)


def run(args: argparse.Namespace, ctx) -> int:
    """Import the benchmark asked for, parse its options with its own parser and run it."""
    parser = argparse.ArgumentParser(prog="python -m core bench")
    bench_sub = parser.add_subparsers(dest="benchmark", metavar="BENCHMARK", required=True)
    importlib.import_module(f"core.benchmarks.{_modules()[args.benchmark]}").register(bench_sub, args._common)
    inner = parser.parse_args([args.benchmark, *args.options])
    if getattr(inner, "db", None) is not None:
        ctx.db = inner.db
    return inner.handler(inner, ctx)
