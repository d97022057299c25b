"""`bench npc-cost`: the cost of an NPC epoch against a B1 epoch on the same data, model and device.

A noisy copy of dataset D's clean originals goes into a temporary database (never the user's). B1, NPC and
NPC with the released arithmetic are built on the same cached inputs; NPC's memory bank is built at once
(timed apart), then the methods take turns batch by batch over the same epoch order, so a busy machine
slows all of them alike. Figures: seconds per epoch of each (batches timed, scaled to a whole epoch) and
the ratio to B1 (issue #7 asks for at most 4×).
"""
from __future__ import annotations

import argparse
import json
import math
import os
import platform
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from core.benchmarks import write_section

METHODS = ("b1", "npc", "npc-released")


def register(sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser("npc-cost", parents=[common], help="seconds per epoch of NPC against B1",
                       description=__doc__)
    p.add_argument("--dataset", default="demo", help="dataset whose clean originals are used (default demo)")
    p.add_argument("--noise", type=float, default=0.4, help="noise ratio of the copy (default 0.4)")
    p.add_argument("--kind", default="hard", help="noise kind: ncr, decl, hard (default hard)")
    p.add_argument("--batches", type=int, default=0, help="batches timed per method (default 0: a whole epoch)")
    p.add_argument("--model", default=None, help="model (default concord-tiny)")
    p.add_argument("--device", default="auto")
    p.add_argument("--set", dest="sets", action="append", default=[], metavar="KEY=VALUE",
                   help="a setting for every method, e.g. batch_size=256 (repeatable)")
    p.add_argument("--no-docs", action="store_true", help="do not write docs/benchmarks.md")
    p.add_argument("--json", action="store_true")
    p.set_defaults(handler=run)


def run(args: argparse.Namespace, ctx) -> int:
    from core.cli import cli_progress
    from core.cli.train import parse_sets
    from core.methods import make_config, method_class
    from core.models import DEFAULT_MODEL
    from core.noise import clean_records, inject_noise_copy
    from core.store import Store
    from core.training import prepare, start_run

    model = args.model or DEFAULT_MODEL
    source = ctx.store.dataset(args.dataset)
    records = clean_records(ctx.store.dataset_records(source.id))
    sets = parse_sets(args.sets)
    progress, bar = cli_progress()
    try:
        with tempfile.TemporaryDirectory(prefix="concord-bench-npc-cost-") as tmp, \
                Store.open(Path(tmp) / "bench.duckdb") as store:
            store.write_dataset("clean", source.root, source.source_format, records, parent=source.name)
            inject_noise_copy(store, "clean", "noisy", args.noise, args.kind, 0)
            run_id = start_run(store, "noisy", "npc", model=model, device=args.device, settings=sets)
            run_ctx = prepare(store, store.run(run_id), progress)
    finally:
        bar.close()
    methods = {}
    for name in METHODS:
        values = sets | ({"warmup_epochs": 0} if name != "b1" else {})
        methods[name] = method_class(name)(make_config(name, values), run_ctx)
        methods[name].setup()
    sync = torch.cuda.synchronize if run_ctx.inputs.device.type == "cuda" else (lambda: None)
    t0 = time.perf_counter()
    methods["npc"].begin_epoch(0)
    bank_s = time.perf_counter() - t0
    methods["npc-released"].begin_epoch(0)
    bs = methods["b1"].config.batch_size
    order = np.random.default_rng(0).permutation(run_ctx.data.train)
    n_batches = math.ceil(len(order) / bs)
    timed = n_batches if args.batches <= 0 else min(args.batches, n_batches)
    seconds = dict.fromkeys(METHODS, 0.0)
    for b in range(timed):
        batch = order[b * bs:(b + 1) * bs]
        for name, method in methods.items():
            sync()
            t = time.perf_counter()
            method.train_batch(0, batch)
            sync()
            seconds[name] += time.perf_counter() - t
            method.step += 1
    per_epoch = {name: s * n_batches / timed for name, s in seconds.items()}
    figures = {"dataset": args.dataset, "noise": f"{args.kind} {args.noise}", "model": model,
               "device": str(run_ctx.inputs.device), "regime": run_ctx.regime, "pairs": int(len(order)),
               "batch_size": bs, "batches_timed": timed, "bank_build_s": round(bank_s, 2),
               "clean_in_bank": int(methods["npc"].clean.sum()), "shared_forward": bool(methods["npc"]._shared),
               "seconds_per_epoch": {k: round(v, 2) for k, v in per_epoch.items()},
               "ratio_to_b1": {k: round(v / per_epoch["b1"], 2) for k, v in per_epoch.items() if k != "b1"},
               "cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads()}
    command = (f"python -m core bench npc-cost --dataset {args.dataset} --noise {args.noise} --kind {args.kind}"
               + (f" --batches {args.batches}" if args.batches else "") + f" --device {args.device}"
               + "".join(f" --set {s}" for s in args.sets))
    if not args.no_docs:
        write_section(f"npc-cost: {args.dataset} {figures['device']}", markdown(figures, command))
    print(json.dumps(figures) if args.json else markdown(figures, command))
    return 0


def markdown(f: dict, command: str) -> str:
    s, r = f["seconds_per_epoch"], f["ratio_to_b1"]
    return "\n".join([
        f"## NPC cost (`bench npc-cost`, {f['device']})", "",
        f"Command: `{command}` ({f['pairs']} training pairs, batch {f['batch_size']}, {f['regime']} regime, "
        f"{f['model']}; {f['batches_timed']} batches timed per method, interleaved; {f['cpu_count']} CPU cores, "
        f"{platform.machine()}).", "",
        "| method | s/epoch | × b1 |", "|---|---|---|",
        f"| b1 | {s['b1']:.1f} | 1.00 |",
        f"| npc | {s['npc']:.1f} | {r['npc']:.2f} |",
        f"| npc-released | {s['npc-released']:.1f} | {r['npc-released']:.2f} |", "",
        f"Memory bank build (clean selection + faiss): {f['bank_build_s']:.1f} s, {f['clean_in_bank']} clean pairs.",
    ])
