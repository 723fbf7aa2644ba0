"""``kproxy-emu sweep GRID.yaml``: bench cells on a Dask cluster (kproxy_emu.bench.grid).

The main CLI registers it with ``add_parser(subparsers)``.
"""

from __future__ import annotations

import argparse
import time
from typing import Any

from ..errors import InputError


def add_parser(sub: Any) -> None:
    p = sub.add_parser(
        "sweep",
        help="run a grid of bench cells as tasks on Dask (a LocalCluster or --scheduler)",
    )
    p.add_argument("grid", metavar="GRID.yaml", help="the grid: bench parameters, lists swept")
    p.add_argument(
        "--scheduler",
        metavar="tcp://HOST:8786",
        help="a running Dask scheduler (`dask scheduler`, workers by `dask worker`); "
        "default: a LocalCluster on this machine",
    )
    p.add_argument(
        "--workers",
        type=int,
        metavar="N",
        help="LocalCluster worker processes, one thread each (default: the CPUs)",
    )
    p.add_argument(
        "--out",
        default="sweep-out",
        metavar="DIR",
        help="results: records.jsonl (as cells finish; a re-run skips cells already there), "
        "records.json, records.csv, plot.png (default sweep-out)",
    )
    p.add_argument(
        "--retries", type=int, default=2, metavar="N", help="retries of a failed cell (2)"
    )
    p.add_argument(
        "--no-isolate",
        action="store_true",
        help="measure in the worker itself, not a forked child per cell (peak_rss_mb is "
        "then the worker's)",
    )
    p.add_argument("--no-plot", action="store_true", help="no plot.png")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_sweep)


def cmd_sweep(args: argparse.Namespace) -> int:
    import importlib.util

    from ..bench import grid

    if importlib.util.find_spec("distributed") is None:
        raise InputError("sweep needs Dask: pip install 'kproxy-emu[sweep]'", field="sweep")
    if args.workers is not None and args.workers < 1:
        raise InputError("must be at least 1", field="--workers", value=args.workers)
    if args.retries < 0:
        raise InputError("must be 0 or more", field="--retries", value=args.retries)
    spec = grid.load_grid(args.grid)
    start = time.perf_counter()
    result = grid.run(
        spec,
        args.out,
        scheduler=args.scheduler,
        workers=args.workers,
        retries=args.retries,
        isolate=not args.no_isolate,
        progress=not args.no_progress,
        plot=not args.no_plot,
    )
    print(
        f"{result.cells} cells: {result.ran} run, {result.skipped_done} already in "
        f"{args.out}, {result.skipped} skipped (the mode cannot hold the cluster), "
        f"{len(result.failed)} failed; {len(result.records)} records in "
        f"{args.out}/records.json and records.csv ({time.perf_counter() - start:.0f} s)"
    )
    for item in result.failed:
        first = item["error"].splitlines()[0]
        print(
            f"failed: {item['cell']} {item['params']['mode']} {item['params']['services']}: {first}"
        )
    if result.failed:
        print(
            f"(the failed cells are in {args.out}/failed.jsonl; run the sweep again to retry them)"
        )
        return 1
    return 0
