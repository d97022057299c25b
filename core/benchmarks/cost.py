"""`bench cost`: the cost of one epoch of each method against a B1 epoch on the same data, model and device.

A noisy copy of dataset D's clean originals goes into a temporary database (never the user's), with the
meta-data seed a run would get. Each method is built on the same cached inputs, past its warm-up (NPC and
MSCN cost a B1 epoch while they warm up); then the methods take turns batch by batch over the same epoch
order, so a busy machine slows all of them alike. An epoch is the method's `begin_epoch` (MSCN: redraw the
random meta negatives), its batches (timed, scaled to a whole epoch) and its `end_epoch` (MSCN: purification).
NPC's memory bank is built once before its first epoch (the paper's default), so its build is timed apart.
Figures: seconds per epoch and the ratio to B1 (issues #7 and #8 ask for at most 4×).
"""
from __future__ import annotations

import argparse
import json
import math
import os
import platform
import time

import numpy as np
import torch

from core.benchmarks import (add_output_options, add_training_options, check_ranges, check_training,
                             repeated_options, scratch_store, write_section)


def register(sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser("cost", parents=[common], help="seconds per epoch of each method against B1",
                       description=__doc__)
    p.add_argument("--dataset", default="demo", help="dataset whose clean originals are used (default demo)")
    p.add_argument("--methods", default="npc,npc-released,mscn", help="comma-separated methods compared with b1")
    p.add_argument("--noise", type=float, default=0.4, help="noise ratio of the copy (default 0.4)")
    p.add_argument("--kind", default="hard", help="noise kind: ncr, decl, hard (default hard)")
    p.add_argument("--batches", type=int, default=0, help="batches timed per method (default 0: a whole epoch)")
    add_training_options(p, set_help="a setting for every method, e.g. batch_size=256 (repeatable)")
    add_output_options(p)
    p.set_defaults(handler=run)


def run(args: argparse.Namespace, ctx) -> int:
    from core.cli import cli_progress
    from core.cli.train import parse_sets
    from core.methods import make_config, method_class
    from core.models import DEFAULT_MODEL
    from core.noise import inject_noise_copy
    from core.training import prepare, start_run

    names = ["b1"] + [m.strip() for m in args.methods.split(",") if m.strip() and m.strip() != "b1"]
    model = args.model or DEFAULT_MODEL
    sets = parse_sets(args.sets)
    check_ranges(args, {"batches": 0}, ["noise"])
    check_training(args, {name: sets for name in names + ["mscn"]})
    progress, bar = cli_progress()
    try:
        with scratch_store(ctx.store, args.dataset, "cost") as store:
            inject_noise_copy(store, "clean", "noisy", args.noise, args.kind, 0, k=args.k)
            run_id = start_run(store, "noisy", "mscn", model=model, device=args.device, settings=sets)  # seeds meta
            run_ctx = prepare(store, store.run(run_id), progress)
    finally:
        bar.close()
    methods = {}
    for name in names:
        config = make_config(name, sets)
        warm = {"warmup_epochs": 0} if hasattr(config, "warmup_epochs") else {}
        methods[name] = method_class(name)(make_config(name, sets | warm), run_ctx)
        methods[name].setup()
    sync = torch.cuda.synchronize if run_ctx.inputs.device.type == "cuda" else (lambda: None)

    def timed(call) -> float:
        sync()
        t = time.perf_counter()
        call()
        sync()
        return time.perf_counter() - t

    bank_s = {n: timed(lambda m=m: m.build_bank(0)) for n, m in methods.items() if hasattr(m, "build_bank")}
    bs = methods["b1"].config.batch_size
    order = np.random.default_rng(0).permutation(run_ctx.data.train)
    n_batches = math.ceil(len(order) / bs)
    n_timed = n_batches if args.batches <= 0 else min(args.batches, n_batches)
    first = {n: 1 if n in bank_s else 0 for n in names}     # NPC: epoch 1, its bank is built already
    edges = {n: timed(lambda m=m, n=n: m.begin_epoch(first[n])) for n, m in methods.items()}
    batch_s = dict.fromkeys(names, 0.0)
    for b in range(n_timed):
        batch = order[b * bs:(b + 1) * bs]
        for name, method in methods.items():
            batch_s[name] += timed(lambda: method.train_batch(0, batch))
            method.step += 1
    for name, method in methods.items():
        edges[name] += timed(lambda: method.end_epoch(0))
    per_epoch = {n: batch_s[n] * n_batches / n_timed + edges[n] for n in names}
    figures = {"dataset": args.dataset, "noise": f"{args.kind} {args.noise}", "model": model,
               "device": str(run_ctx.inputs.device), "regime": run_ctx.regime, "pairs": int(len(order)),
               "batch_size": bs, "batches_timed": n_timed, "bank_build_s": {k: round(v, 2) for k, v in bank_s.items()},
               "seconds_per_epoch": {k: round(v, 2) for k, v in per_epoch.items()},
               "ratio_to_b1": {k: round(v / per_epoch["b1"], 2) for k, v in per_epoch.items()},
               "cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads()}
    command = (f"python -m core bench cost --dataset {args.dataset} --methods {args.methods} --noise {args.noise} "
               f"--kind {args.kind}" + (f" --batches {args.batches}" if args.batches else "")
               + f" --device {args.device}" + repeated_options(args))
    if not args.no_docs:
        write_section(f"cost: {args.dataset} {figures['device']}", markdown(figures, command))
    print(json.dumps(figures) if args.json else markdown(figures, command))
    return 0


def markdown(f: dict, command: str) -> str:
    s, r = f["seconds_per_epoch"], f["ratio_to_b1"]
    lines = [f"## Cost of an epoch (`bench cost`, {f['device']})", "",
             f"Command: `{command}` ({f['pairs']} training pairs, batch {f['batch_size']}, {f['regime']} regime, "
             f"{f['model']}; {f['batches_timed']} batches timed per method, interleaved; {f['cpu_count']} CPU "
             f"cores, {platform.machine()}).", "",
             "| method | s/epoch | × b1 |", "|---|---|---|"]
    lines += [f"| {name} | {s[name]:.1f} | {r[name]:.2f} |" for name in s]
    lines += ["", "Memory bank build, once before NPC's first epoch (clean selection + faiss): "
              + ", ".join(f"{n} {v:.1f} s" for n, v in f["bank_build_s"].items()) + "."] if f["bank_build_s"] else []
    return "\n".join(lines)
