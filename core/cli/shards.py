"""`shards score IN … --out OUT` and `shards attach OUT --name NAME`: score sharded Parquet past one machine
(Ray Data, or one process with `--engine local`) and review the result in the app."""
from __future__ import annotations

import argparse
import sys

from core.cli import cli_progress
from core.errors import ConcordError


def register(sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser("shards", parents=[common], help="score sharded Parquet datasets (Ray) and attach the result",
                       description="Score Parquet shards of `image, caption` rows (image: a path, relative to the "
                                   "shard's folder, or the image bytes) and attach the scored shards as a dataset.")
    inner = p.add_subparsers(dest="shards_command", metavar="SUBCOMMAND", required=True)

    s = inner.add_parser("score", parents=[common], help="score every pair of the shards into OUT",
                         description="Read the shards (paths, globs, folders, fsspec URLs), decode and preprocess "
                                     "the images, embed them with a zero-shot model (--model) or a finished run's "
                                     "trained model (--run), and write one scored Parquet file per shard into OUT: "
                                     "key, similarity, consensus terms, clean_prob, weight and (unless "
                                     "--no-embeddings) both embeddings. A re-run skips shards already written; "
                                     "Ctrl-C stops between batches and keeps them. With --engine ray it joins the "
                                     "cluster at $RAY_ADDRESS, or starts a local one.")
    s.add_argument("inputs", nargs="+", metavar="IN", help="Parquet shards: files, globs, folders or fsspec URLs")
    s.add_argument("--out", required=True, help="output folder of scored shards")
    who = s.add_mutually_exclusive_group(required=True)
    who.add_argument("--run", type=int, metavar="RUN_ID", help="score with this finished run's model and mixture")
    who.add_argument("--model", help="score zero-shot with this pretrained model (e.g. open_clip:ViT-B-32:openai)")
    s.add_argument("--engine", choices=["local", "ray"], default="ray", help="ray (default) or local (one process)")
    s.add_argument("--batch-size", type=int, default=256, help="rows per batch (default 256)")
    s.add_argument("--device", default="auto", help="the embedding workers' device: auto, cpu, cuda")
    s.add_argument("--workers", type=int, default=1, help="ray: embedding actors (default 1)")
    s.add_argument("--num-gpus", type=float, default=0.0, help="ray: GPUs per embedding actor (default 0)")
    s.add_argument("--num-cpus", type=int, default=None, help="ray: CPUs of a local cluster started here")
    s.add_argument("--no-embeddings", action="store_true", help="do not write the embeddings")
    s.add_argument("--no-consensus", action="store_true", help="do not compute the consensus terms")
    s.add_argument("--calibration-pairs", type=int, default=5000,
                   help="zero-shot: pairs whose similarities fit the clean/noisy mixture (default 5000)")
    s.add_argument("--image-column", default="image")
    s.add_argument("--caption-column", default="caption")
    s.add_argument("--key-column", default="key", help="the pair id column, when the shards have one")
    s.add_argument("--split-column", default="split",
                   help="each pair's split (train, val, test, …), when the shards have one; else all are train")
    s.add_argument("--json", action="store_true", help="print the report as JSON")
    s.set_defaults(handler=score)

    a = inner.add_parser("attach", parents=[common], help="make scored shards a dataset the app can review",
                         description="Attach the scored shards in OUT as dataset NAME: Explore, Review and Export "
                                     "work on it as on an imported one, and decisions are stored as for any "
                                     "dataset.")
    a.add_argument("out", metavar="OUT", help="a folder written by `shards score`")
    a.add_argument("--name", required=True, help="the new dataset's name")
    a.add_argument("--json", action="store_true")
    a.set_defaults(handler=attach)


def score(args: argparse.Namespace, ctx) -> int:
    from core.shards.config import ShardScoreConfig
    from core.shards.pipeline import score_with_engine
    from core.shards.reader import ShardColumns
    from core.shards.scorer import scorer_spec

    config = ShardScoreConfig(engine=args.engine, batch_size=args.batch_size, embeddings=not args.no_embeddings,
                              consensus=not args.no_consensus, calibration_pairs=args.calibration_pairs,
                              device=args.device, workers=args.workers, num_gpus=args.num_gpus,
                              columns=ShardColumns(args.image_column, args.caption_column, args.key_column,
                                                   args.split_column))
    spec = scorer_spec(ctx.store, args.run, args.model)
    ctx.close()      # the workers never need the database; release it for the app
    progress, bar = cli_progress()
    try:
        report = score_with_engine(args.inputs, args.out, spec, config, progress, args.num_cpus)
    except KeyboardInterrupt:
        raise ConcordError("cancelled: the shards written so far are kept; run the same command to resume") from None
    finally:
        bar.close()
    if args.json:
        ctx.print_json(report.as_dict())
    else:
        print(report.summary())
    for path, reason in report.failed.items():
        print(f"failed shard {path}: {reason}", file=sys.stderr)
    return 1 if report.failed else 0


def attach(args: argparse.Namespace, ctx) -> int:
    from core.shards.attach import attach as attach_shards, attach_summary
    result = attach_shards(ctx.store, args.out, args.name)
    if args.json:
        ctx.print_json(result)
    else:
        print(attach_summary(result))
    return 0
