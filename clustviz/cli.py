"""``clustviz batch --dataset … --projectors umap,clusterplot --all -o out.parquet`` and
``clustviz map --dataset … [--method opentsne] -o map.parquet``.

Submits a batch job to a running server, follows it with a progress bar, and streams the
points to the output file as the server exports them (``.parquet``; ``.arrow``, an Arrow IPC
stream; ``.json``, one JSON object per line). ``--resume JOB_ID`` follows an existing job
instead (after an interrupted client, say). Exit code 0: every item done; 1: some failed;
2: an error (the server's answer, or why it could not be reached, is printed).

``map`` asks for a global map of every row of a dataset (the same request names the same map:
one already made is not fitted again), follows it with a progress bar and writes its points
(one row per guess: preamble, guess, token_id, cluster_id, x, y). Exit code 0: the map is done;
1: its fit failed; 2: an error.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

import httpx

from clustviz.client import RESULT_FORMATS, Client, ClientError


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="clustviz")
    commands = parser.add_subparsers(dest="command", required=True)
    batch = commands.add_parser("batch", help="run a batch job and save its points")
    batch.add_argument("--url", default=os.environ.get("CLUSTVIZ_URL", "http://127.0.0.1:8000"))
    batch.add_argument("--api-key", default=os.environ.get("CLUSTVIZ_API_KEY"))
    batch.add_argument("--dataset", help="dataset id (see GET /datasets)")
    batch.add_argument("--projectors", help="comma-separated, e.g. umap,clusterplot")
    scope = batch.add_mutually_exclusive_group()
    scope.add_argument("--all", action="store_true", help="every preamble of the dataset")
    scope.add_argument("--preamble", action="append", help="a preamble (repeatable)")
    batch.add_argument("--seed", type=int)
    batch.add_argument("--align", metavar="MAP_ID", help="align every layout to this global map")
    batch.add_argument("--resume", metavar="JOB_ID", help="follow an existing job")
    batch.add_argument("-o", "--output", required=True, help=", ".join(RESULT_FORMATS))
    batch.add_argument("--quiet", action="store_true", help="no progress bar")
    maps = commands.add_parser("map", help="make (or find) a global map and save its points")
    maps.add_argument("--url", default=os.environ.get("CLUSTVIZ_URL", "http://127.0.0.1:8000"))
    maps.add_argument("--api-key", default=os.environ.get("CLUSTVIZ_API_KEY"))
    maps.add_argument("--dataset", required=True, help="dataset id (see GET /datasets)")
    maps.add_argument("--method", help="umap (default), opentsne, pacmap, torchdr_umap")
    maps.add_argument("--fit-on", help="auto (default), points, cluster_means, sample")
    maps.add_argument("--supervised", action="store_true", help="fit on the cluster ids (umap)")
    maps.add_argument("--sample-size", type=int)
    maps.add_argument(
        "--params", type=json.loads, help="the method's, as JSON: '{\"n_iter\": 500}'"
    )
    maps.add_argument("--seed", type=int)
    maps.add_argument("-o", "--output", required=True, help=", ".join(RESULT_FORMATS))
    maps.add_argument("--quiet", action="store_true", help="no progress bar")
    args = parser.parse_args(argv)
    if Path(args.output).suffix.lower() not in RESULT_FORMATS:  # before a job is submitted
        parser.error(f"-o {args.output!r}: the suffix must be one of {', '.join(RESULT_FORMATS)}")
    if args.command == "map":
        return _map(args)

    with Client(args.url, api_key=args.api_key) as client:
        try:
            if args.resume:
                job_id = args.resume
            else:
                if not (args.dataset and args.projectors and (args.all or args.preamble)):
                    parser.error("--dataset, --projectors and --all/--preamble are required")
                job_id = client.submit_batch(
                    args.dataset,
                    projectors=[name.strip() for name in args.projectors.split(",") if name],
                    preambles=None if args.all else args.preamble,
                    seed=args.seed,
                    align=None if args.align is None else {"map": args.align},
                )
                print(f"job {job_id} (resume with --resume {job_id})", file=sys.stderr)
            status = client.wait(job_id, progress=not args.quiet)
            written = client.download_results(job_id, args.output)
        except ClientError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
        except httpx.TransportError as exc:  # no answer at all: not "some items failed" (1)
            print(f"error: {args.url} did not answer: {exc}", file=sys.stderr)
            return 2
    print(
        f"{status['state']}: {status['done']} done, {status['failed']} failed of "
        f"{status['total']}; {written / 2**20:.1f} MB of points written to {args.output}",
        file=sys.stderr,
    )
    return 0 if status["failed"] == 0 else 1


def _map(args: argparse.Namespace) -> int:
    with Client(args.url, api_key=args.api_key) as client:
        try:
            status = client.submit_map(
                args.dataset,
                method=args.method,
                fit_on=args.fit_on,
                supervised=args.supervised,
                sample_size=args.sample_size,
                params=args.params,
                seed=args.seed,
            )
            print(f"map {status['id']}", file=sys.stderr)
            status = client.wait_map(status["id"], progress=not args.quiet)
            if status["state"] != "done":
                error = status.get("error") or {}
                print(f"{status['state']}: {error.get('detail', '')}", file=sys.stderr)
                return 1
            written = client.download_map(status["id"], args.output)
        except ClientError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
        except httpx.TransportError as exc:
            print(f"error: {args.url} did not answer: {exc}", file=sys.stderr)
            return 2
    print(f"done: {written / 2**20:.1f} MB of points written to {args.output}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
