"""``clustviz batch --dataset … --projectors umap,clusterplot --all -o out.parquet``.

Submits a batch job to a running server, follows it with a progress bar, and streams the
points to the output file as the server exports them (``.parquet``; ``.arrow``, an Arrow IPC
stream; ``.json``, one JSON object per line). ``--resume JOB_ID`` follows an existing job
instead (after an interrupted client, say). Exit code 0: every item done; 1: some failed;
2: an error (the server's answer, or why it could not be reached, is printed).
"""

from __future__ import annotations

import argparse
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
    batch.add_argument("--resume", metavar="JOB_ID", help="follow an existing job")
    batch.add_argument("-o", "--output", required=True, help=", ".join(RESULT_FORMATS))
    batch.add_argument("--quiet", action="store_true", help="no progress bar")
    args = parser.parse_args(argv)
    if Path(args.output).suffix.lower() not in RESULT_FORMATS:  # before a job is submitted
        parser.error(f"-o {args.output!r}: the suffix must be one of {', '.join(RESULT_FORMATS)}")

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


if __name__ == "__main__":
    sys.exit(main())
