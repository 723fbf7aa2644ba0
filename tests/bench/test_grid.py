"""``kproxy-emu sweep``: bench cells as Dask tasks (kproxy_emu.bench.grid): the same
records as bench, streamed to disk, resumed, failures retried and reported; on a
LocalCluster and on a scheduler and a worker started as separate processes."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytest.importorskip("distributed")

from kproxy_emu.bench import grid, sweep
from kproxy_emu.errors import InputError

ROOT = Path(__file__).resolve().parents[2]
GRID = {"modes": ["iptables", "nftables"], "services": [30, 60], "packets": 300, "repeat": 1}


def _bench_records(grid_dict):
    """The same cells run one by one by bench (its sweep, no disruption pass)."""
    out = []
    for seed in grid_dict.get("seed", [0]) if isinstance(grid_dict.get("seed"), list) else [0]:
        spec = sweep.BenchSpec(
            services=grid_dict["services"],
            modes=grid_dict["modes"],
            packets=grid_dict["packets"],
            repeat=grid_dict["repeat"],
            seed=seed,
            disruption=False,
        )
        out += sweep.run(spec, progress=False)["records"]
    return out


def _same(a, b):
    key = lambda r: r["cell"] + r["flow"]  # noqa: E731
    da = sorted((grid.deterministic(r) for r in a), key=key)
    db = sorted((grid.deterministic(r) for r in b), key=key)
    assert da == db


def test_grid_file_is_checked(tmp_path):
    assert len(grid.cells(grid.parse_grid({**GRID, "seeds": [0, 1]}))) == 8
    for bad, field in (
        ({"modes": ["iptables"]}, "services"),
        ({**GRID, "bogus": 1}, "bogus"),
        ({**GRID, "modes": []}, "modes"),
        ({**GRID, "seed": 1, "seeds": [2]}, "seeds"),
    ):
        with pytest.raises(InputError) as info:
            grid.cells(grid.parse_grid(bad))
        assert info.value.field == field
    with pytest.raises(InputError, match="--packets"):
        grid.cells(grid.parse_grid({**GRID, "packets": 5}))
    (tmp_path / "g.yaml").write_text("modes: [iptables\n")
    with pytest.raises(InputError, match="not YAML"):
        grid.load_grid(str(tmp_path / "g.yaml"))


def test_local_cluster_gives_benchs_records_and_resumes(tmp_path):
    g = grid.parse_grid(GRID)
    res = grid.run(g, tmp_path, workers=2, processes=False, progress=False, plot=False)
    assert (res.cells, res.ran, res.skipped_done, res.failed) == (4, 4, 0, [])
    assert len(res.records) == 8
    _same(res.records, _bench_records(GRID))
    r = res.records[0]
    assert r["machine"]["cores"] and r["machine"]["python"] and "kproxy_emu" in r["machine"]
    assert r["params"]["seed"] == r["seed"] == 0 and r["cell"] == sweep.cell_key(r["params"])
    lines = (tmp_path / "records.jsonl").read_text().splitlines()
    assert len(lines) == 8
    # a re-run runs nothing; a cut last line (a crash mid-write) makes its cell run again
    (tmp_path / "records.jsonl").write_text("\n".join(lines[:-1]) + "\n" + lines[-1][:20])
    again = grid.run(g, tmp_path, workers=2, processes=False, progress=False, plot=False)
    assert (again.ran, again.skipped_done) == (1, 3)
    assert len(json.loads((tmp_path / "records.json").read_text())) == 8
    csv = (tmp_path / "records.csv").read_text().splitlines()
    assert len(csv) == 9 and "machine.cpu" in csv[0] and "sync_full.lines" in csv[0]


_CALLS: dict[str, int] = {}


def _flaky(params, isolate):
    """Fails the first time for every cell, always for the 60-service nftables cell."""
    key = sweep.cell_key(params)
    _CALLS[key] = _CALLS.get(key, 0) + 1
    if params["mode"] == "nftables" and params["services"] == 60:
        raise RuntimeError("injected failure")
    if _CALLS[key] == 1:
        raise RuntimeError("transient")
    return grid.run_grid_cell(params, isolate=False)


def test_failed_cells_are_retried_and_reported_without_losing_others(tmp_path):
    _CALLS.clear()
    g = grid.parse_grid(GRID)
    res = grid.run(
        g, tmp_path, workers=2, processes=False, progress=False, plot=False, task=_flaky, retries=1
    )
    assert res.ran == 3 and len(res.records) == 6
    assert [f["params"]["services"] for f in res.failed] == [60]
    assert "injected failure" in res.failed[0]["error"]
    assert all(n == 2 for n in _CALLS.values())  # one retry each
    assert len((tmp_path / "failed.jsonl").read_text().splitlines()) == 1
    # the next run retries only the failed cell
    res = grid.run(g, tmp_path, workers=1, processes=False, progress=False, plot=False)
    assert (res.ran, res.skipped_done, res.failed) == (1, 3, [])
    _same(res.records, _bench_records(GRID))


def test_scheduler_and_worker_as_separate_processes(tmp_path, cli):
    """As a user runs it on several machines: `dask scheduler`, `dask worker`, then
    `kproxy-emu sweep --scheduler` (loopback; both processes always killed)."""
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    sched_file = tmp_path / "scheduler.json"
    common = dict(env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=tmp_path)
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "distributed.cli.dask_scheduler", "--host", "127.0.0.1",
             "--port", "0", "--no-dashboard", "--scheduler-file", str(sched_file)],
            start_new_session=True,
            **common,
        )
    ]  # fmt: skip
    try:
        deadline = time.monotonic() + 30
        while not sched_file.exists() and time.monotonic() < deadline:
            time.sleep(0.1)
        assert sched_file.exists(), "the scheduler did not start"
        procs.append(
            subprocess.Popen(
                [sys.executable, "-m", "distributed.cli.dask_worker", "--scheduler-file",
                 str(sched_file), "--nthreads", "1", "--nworkers", "1", "--no-dashboard",
                 "--host", "127.0.0.1"],
                start_new_session=True,
                **common,
            )
        )  # fmt: skip
        address = json.loads(sched_file.read_text())["address"]
        (tmp_path / "grid.yaml").write_text(json.dumps(GRID))
        out = tmp_path / "out"
        res = cli(
            "sweep", tmp_path / "grid.yaml", "--scheduler", address, "--out", out,
            "--no-progress", "--no-plot",
        )  # fmt: skip
        assert res.returncode == 0, res.stdout + res.stderr
        assert "4 cells: 4 run" in res.stdout
        records = json.loads((out / "records.json").read_text())
        _same(records, _bench_records(GRID))
        # a forked child per cell in the worker: its own peak memory
        assert all(r["peak_rss_mb"] > 10 for r in records)
    finally:
        for p in procs:
            try:
                os.killpg(p.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
        for p in procs:
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(p.pid, signal.SIGKILL)
                p.wait()
