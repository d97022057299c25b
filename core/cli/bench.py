"""`bench NAME …`: run a benchmark (`python -m core bench --help` lists them)."""
from __future__ import annotations

import argparse
import importlib
import pkgutil

import core.benchmarks


def register(sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser("bench", parents=[common], help="measure speed and quality (figures for docs/benchmarks.md)")
    bench_sub = p.add_subparsers(dest="benchmark", metavar="BENCHMARK")
    bench_sub.required = True
    for m in sorted(pkgutil.iter_modules(core.benchmarks.__path__), key=lambda m: m.name):
        if not m.name.startswith("_"):
            importlib.import_module(f"core.benchmarks.{m.name}").register(bench_sub, common)
