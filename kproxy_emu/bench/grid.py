"""``kproxy-emu sweep GRID.yaml``: a grid of bench cells run as tasks on Dask (distributed).

The grid file is a mapping of bench parameters; a list sweeps that parameter, a scalar
fixes it, and the cells are every combination (modes x services x endpoints x ...)::

    modes: [iptables, nftables, ipvs]
    services: [1000, 3000]
    endpoints: [5, 10]
    popularity: [uniform, zipf]
    seed: [0, 1]
    packets: 20000
    repeat: 3

Keys: ``modes`` (or ``mode``), ``services``, ``endpoints``, ``packets``,
``new_flow_share``, ``popularity``, ``seed`` (or ``seeds``), ``repeat``, ``origin_mix``
(a mapping, or a list of them), ``calibration``, ``ipvs_conn_tab_bits``,
``userspace_payload_bytes``: the flags of ``bench``, so the current bench flags are one
cell. Each cell is one task running bench's own ``run_cell`` (in a forked child, as
bench measures peak memory, unless ``isolate`` is off) and returns the same two records
(new, established), annotated the same way (``cell``, ``params``, ``machine``).

Results are appended to ``DIR/records.jsonl`` as cells complete; a re-run skips the cells
whose two records are there (keyed by ``cell``, the hash of the cell's parameters). A cell
a mode cannot hold (bench's "skipped") goes to ``DIR/skipped.jsonl`` (also not re-run); a
cell that fails is retried by Dask (``retries``), then reported in ``DIR/failed.jsonl``
and re-run next time, without losing the others. At the end ``DIR/records.json``,
``DIR/records.csv`` and ``DIR/plot.png`` (with matplotlib) hold every record of the grid.
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import os
import pickle
import traceback
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from ..errors import InputError, KproxyError
from . import sweep

# grid key -> BenchSpec field (plural and singular spellings)
_KEYS = {
    "modes": "mode",
    "mode": "mode",
    "services": "services",
    "endpoints": "endpoints",
    "packets": "packets",
    "new_flow_share": "new_flow_share",
    "popularity": "popularity",
    "seed": "seed",
    "seeds": "seed",
    "repeat": "repeat",
    "origin_mix": "origin_mix",
    "calibration": "calibration",
    "ipvs_conn_tab_bits": "ipvs_conn_tab_bits",
    "userspace_payload_bytes": "userspace_payload_bytes",
}
RECORDS = "records.jsonl"
SKIPPED = "skipped.jsonl"
FAILED = "failed.jsonl"


def load_grid(path: str) -> dict[str, list[Any]]:
    """The grid file's parameters, each as its list of values."""
    import yaml

    try:
        data = yaml.safe_load(Path(path).read_text())
    except OSError as exc:
        raise InputError(f"cannot read ({exc.strerror})", file=path) from None
    except yaml.YAMLError as exc:
        raise InputError(f"not YAML ({exc})", file=path) from None
    return parse_grid(data, path)


def parse_grid(data: object, path: str = "grid") -> dict[str, list[Any]]:
    if not isinstance(data, dict):
        raise InputError("must be a mapping of bench parameters", file=path)
    grid: dict[str, list[Any]] = {}
    for key, value in data.items():
        name = _KEYS.get(str(key))
        if name is None:
            raise InputError(
                f"not a bench parameter (parameters: {', '.join(sorted(set(_KEYS)))})",
                file=path,
                field=str(key),
            )
        if name in grid:
            raise InputError("given twice (singular and plural)", file=path, field=str(key))
        values = value if isinstance(value, list) else [value]
        if not values:
            raise InputError("an empty list makes no cells", file=path, field=str(key))
        grid[name] = values
    for need, key in (("mode", "modes"), ("services", "services")):
        if need not in grid:
            raise InputError(f"the grid needs {key}", file=path, field=key)
    return grid


def cells(grid: dict[str, list[Any]]) -> list[dict[str, Any]]:
    """Every combination of the grid's values as a cell's parameters (CELL_PARAMS),
    checked as bench checks its flags; duplicates dropped, grid order kept."""
    base = sweep.BenchSpec()
    names = list(grid)
    out: dict[str, dict[str, Any]] = {}
    for combo in itertools.product(*(grid[n] for n in names)):
        values = dict(zip(names, combo))
        mode, services = values.pop("mode"), values.pop("services")
        spec = dataclasses.replace(base, **values)
        spec.services, spec.modes = [services], [mode]
        spec.validate()
        if spec.origin_mix is not None and not isinstance(spec.origin_mix, dict):
            raise InputError("must be a mapping of origin to share", field="origin_mix")
        params = sweep.cell_params(mode, services, spec)
        out.setdefault(sweep.cell_key(params), params)
    return list(out.values())


def spec_of(params: dict[str, Any]) -> sweep.BenchSpec:
    """The BenchSpec of one cell (disruption off: a cell is the sweep's records)."""
    fields = {k: v for k, v in params.items() if k not in ("mode", "services")}
    return sweep.BenchSpec(
        services=[params["services"]], modes=[params["mode"]], disruption=False, **fields
    )


def _forked(fn: Callable[[], list[dict]]) -> list[dict]:
    """``fn()`` in a forked child (its own peak memory, as bench measures it). os.fork
    itself: a Dask worker is a daemon process, which multiprocessing may not fork."""
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: run, send, leave without running the parent's cleanups
        os.close(r)
        code = 0
        try:
            payload = pickle.dumps(("ok", fn()))
        except InputError as exc:
            payload = pickle.dumps(("skipped", str(exc)))
        except BaseException as exc:
            payload = pickle.dumps(
                ("error", f"{type(exc).__name__}: {exc}\n{traceback.format_exc()}")
            )
            code = 1
        with os.fdopen(w, "wb") as f:
            f.write(payload)
        os._exit(code)
    os.close(w)
    with os.fdopen(r, "rb") as f:
        data = f.read()
    _, status = os.waitpid(pid, 0)
    if not data:
        raise KproxyError(f"the measuring process died (wait status {status})")
    kind, payload = pickle.loads(data)
    if kind == "skipped":
        raise InputError(payload)
    if kind == "error":
        raise KproxyError(payload)
    return payload  # type: ignore[no-any-return]


def run_grid_cell(params: dict[str, Any], isolate: bool = True) -> dict[str, Any]:
    """One cell as a task: ``{"cell", "params", "records"}`` (bench's two records,
    annotated), or ``{"cell", "params", "skipped": reason}`` when the mode cannot hold
    the cluster. Other errors raise (Dask retries the task)."""
    spec = spec_of(params)
    key = sweep.cell_key(params)
    mode, services = params["mode"], params["services"]

    def measure() -> list[dict]:
        return sweep.run_cell(mode, services, spec)

    try:
        records = _forked(measure) if isolate else measure()
    except InputError as exc:
        return {"cell": key, "params": params, "skipped": str(exc)}
    return {
        "cell": key,
        "params": params,
        "records": sweep.annotate(records, params, sweep.machine_info()),
    }


def _read_jsonl(path: Path) -> Iterator[dict[str, Any]]:
    if not path.exists():
        return
    for line in path.read_text().splitlines():
        try:
            item = json.loads(line)
        except ValueError:  # a line cut by a crash: that cell runs again
            continue
        if isinstance(item, dict):
            yield item


def done_cells(out: Path) -> set[str]:
    """Cells whose results are on disk: both records in records.jsonl, or skipped."""
    flows: dict[str, set[str]] = {}
    for rec in _read_jsonl(out / RECORDS):
        flows.setdefault(str(rec.get("cell")), set()).add(str(rec.get("flow")))
    done = {c for c, f in flows.items() if {"new", "established"} <= f}
    done |= {str(item.get("cell")) for item in _read_jsonl(out / SKIPPED)}
    return done


def _append(path: Path, items: list[dict[str, Any]]) -> None:
    """Lines appended in one write, flushed and synced: a crash leaves whole lines."""
    text = "".join(json.dumps(i, sort_keys=False) + "\n" for i in items)
    with open(path, "a") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())


@dataclasses.dataclass
class SweepResult:
    cells: int  # in the grid
    skipped_done: int  # already on disk, not run again
    ran: int
    skipped: int  # the mode cannot hold the cluster
    failed: list[dict[str, Any]]
    records: list[dict[str, Any]]  # every record on disk for this grid's cells


def run(
    grid: dict[str, list[Any]],
    out: str | Path,
    *,
    scheduler: str | None = None,
    workers: int | None = None,
    threads_per_worker: int = 1,
    processes: bool = True,
    retries: int = 2,
    isolate: bool = True,
    progress: bool = True,
    plot: bool = True,
    task: Callable[..., dict[str, Any]] = run_grid_cell,
) -> SweepResult:
    """Run the grid's cells not yet on disk in ``out`` on a Dask cluster: the scheduler at
    ``scheduler`` (tcp://host:8786), else a LocalCluster of ``workers`` processes (default:
    the CPUs) with ``threads_per_worker`` threads each (``processes`` False: threads of this
    process). Records stream into ``out``/records.jsonl; the end writes records.json,
    records.csv and plot.png."""
    from distributed import Client, LocalCluster, as_completed
    from tqdm import tqdm  # type: ignore[import-untyped]

    todo_all = cells(grid)
    outdir = Path(out)
    try:
        outdir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise InputError(f"cannot create ({exc.strerror})", field="--out", value=str(out)) from None
    done = done_cells(outdir)
    todo = [p for p in todo_all if sweep.cell_key(p) not in done]
    failed: list[dict[str, Any]] = []
    ran = skipped = 0
    if todo:
        if scheduler:
            cluster = None
            try:
                client = Client(scheduler, timeout="20s")
            except OSError as exc:
                raise KproxyError(f"cannot reach the Dask scheduler {scheduler}: {exc}") from None
        else:
            cluster = LocalCluster(
                n_workers=workers or os.cpu_count() or 1,
                threads_per_worker=threads_per_worker,
                processes=processes,
                dashboard_address=None,
            )
            client = Client(cluster)
        try:
            futures = {
                client.submit(
                    task,
                    params,
                    isolate,
                    key=f"kproxy-emu-cell-{sweep.cell_key(params)}",
                    retries=retries,
                    pure=False,
                ): params
                for params in todo
            }
            bar = tqdm(total=len(futures), desc="sweep", unit="cell", disable=not progress)
            for future in as_completed(futures):
                params = futures[future]
                key = sweep.cell_key(params)
                bar.update(1)
                if future.status == "error":
                    error = future.exception()
                    why = f"{type(error).__name__}: {error}"
                    item = {"cell": key, "params": params, "error": why}
                    failed.append(item)
                    _append(outdir / FAILED, [item])
                    where = f"{params['mode']}, {params['services']} services"
                    bar.write(f"cell {key} ({where}) failed: {why.splitlines()[0]}")
                    continue
                result = future.result()
                ran += 1
                if "skipped" in result:
                    skipped += 1
                    _append(outdir / SKIPPED, [result])
                else:
                    _append(outdir / RECORDS, result["records"])
                future.release()
            bar.close()
        finally:
            client.close()
            if cluster is not None:
                cluster.close()
    keys = {sweep.cell_key(p) for p in todo_all}
    records = [r for r in _read_jsonl(outdir / RECORDS) if r.get("cell") in keys]
    _finish(outdir, records, plot)
    return SweepResult(len(todo_all), len(todo_all) - len(todo), ran, skipped, failed, records)


def _finish(outdir: Path, records: list[dict[str, Any]], plot: bool) -> None:
    from . import report

    (outdir / "records.json").write_text(json.dumps(records, indent=1) + "\n")
    (outdir / "records.csv").write_text(report.csv_text(records))
    if plot and records:
        import importlib.util

        if importlib.util.find_spec("matplotlib") is not None:
            report.plot({"records": records}, str(outdir / "plot.png"))


def deterministic(record: dict[str, Any]) -> dict[str, Any]:
    """A record without its timings and the machine (what two runs of one cell on any
    machines agree on: verdicts, costs, sync sizes, drop reasons, predictions)."""
    return {k: v for k, v in record.items() if k not in TIMING_FIELDS and k != "machine"}


# fields that time something on the host (they differ from run to run)
TIMING_FIELDS = frozenset(
    {
        "compile_s",
        "prepare_s",
        "update_s",
        "peak_rss_mb",
        "roofline_scan_ns_per_rule",
        "roofline_hash_ns_per_lookup",
        "ns_per_packet",
        "ns_min",
        "ns_max",
        "mpps",
        "ns_per_rule",
        "roofline_ratio",
        "dram_ns",
        "dram_floor_ns",
        "dram_floor_ratio",
    }
)
