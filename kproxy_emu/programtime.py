"""A model of the kernel's programming time for kube-proxy's syncs, fitted to lab timings.

``SyncTimeModel`` predicts, per mode (i.e. per tool: iptables-restore, ``nft -f``), the wall
time of loading a sync from the sync's text lines ``L``, the lines of the ruleset already in
the kernel ``E``, and whether it rewrites rules already there (an endpoint of a programmed
Service changed, a Service deleted) or only adds (a new Service):
``seconds = c0 + c1 L + c2 L^2 + c3 L^3 + c4 E + c5 E [rewrites] + c6 L E + c7 E^2``,
coefficients >= 0 fitted to relative error (a 10 ms update weighs as much as a 100 s
load). Why each term (measured on this machine kind: kernel 6.18, nft 1.0.6, iptables-nft 1.8.9):

- ``L^2``, ``L^3``: ``nft -f`` of a whole ruleset grows faster than quadratically past
  10,000 services (1k, 2k, 5k, 10k, 15k, 20k services: 0.22, 0.89, 5.4, 26, 97, 193 s);
- ``L E``: ``iptables-restore --noflush`` rewrites KUBE-SERVICES (a line per service)
  into a table of ``E`` rules: a one-endpoint update takes 0.25 s at 5k services and 4 s
  at 20k;
- ``E``, ``E [rewrites]``, ``E^2``: ``nft -f`` of a small transaction reads the ruleset it
  changes; one that flushes existing chains costs up to 2-4x one that only adds, at small
  sizes.

The fit interpolates: outside the service counts it was fitted on the terms extrapolate a
growth that accelerates (the basis says which sizes it rests on).

The timings come from ``kproxy_emu.lab.synctime`` (``kproxy-emu calibrate --syncs``).
"""

from __future__ import annotations

import itertools
import json
import os
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np

from .errors import InputError

CHANGES = ("endpoint-added", "endpoint-removed", "service-added", "service-deleted")
TERMS = (
    "c0",
    "c1_per_line",
    "c2_per_line2",
    "c3_per_line3",
    "c4_per_loaded_line",
    "c5_per_rewritten_line",
    "c6_per_line_x_loaded",
    "c7_per_loaded_line2",
)


@dataclass
class SyncTiming:
    mode: str
    tool: str
    services: int
    kind: str  # "full" or one of CHANGES
    lines: int  # the sync's text
    loaded: int  # lines of the ruleset in the kernel before it (0 for the first load)
    seconds: float  # the tool's wall time, process start included
    rewrites: bool = True  # it changes rules already loaded (SyncResult.rewrites)


def _features(lines: float, loaded: float, rewrites: bool) -> list[float]:
    return [
        1.0,
        lines,
        lines**2,
        lines**3,
        loaded,
        loaded if rewrites else 0.0,
        lines * loaded,
        loaded**2,
    ]


def nnls(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Non-negative least squares for a handful of columns: every subset of columns
    solved by ordinary least squares, the best one whose solution is >= 0 kept (exact
    for the 8 terms here; no SciPy dependency for it)."""
    best, best_err = np.zeros(a.shape[1]), float(np.dot(b, b))
    for k in range(1, a.shape[1] + 1):
        for cols in itertools.combinations(range(a.shape[1]), k):
            sol, *_ = np.linalg.lstsq(a[:, cols], b, rcond=None)
            if (sol < 0).any():
                continue
            err = float(np.sum((a[:, cols] @ sol - b) ** 2))
            if err < best_err:
                best = np.zeros(a.shape[1])
                best[list(cols)] = sol
                best_err = err
    return best


@dataclass(frozen=True)
class SyncTimeModel:
    """Seconds a sync takes the kernel's tool, per mode (see the module doc)."""

    coefficients: Mapping[str, tuple[float, ...]]  # mode -> TERMS
    tools: Mapping[str, str]
    fitted_on: Mapping[str, tuple[int, ...]]  # mode -> service counts measured

    @classmethod
    def fit(cls, timings: Iterable[SyncTiming]) -> SyncTimeModel:
        by_mode: dict[str, list[SyncTiming]] = {}
        for t in timings:
            by_mode.setdefault(t.mode, []).append(t)
        coef, tools, sizes = {}, {}, {}
        for mode, ts in by_mode.items():
            a = np.array([_features(t.lines, t.loaded, t.rewrites) for t in ts], float)
            y = np.array([t.seconds for t in ts], float)
            w = 1.0 / np.maximum(y, 1e-4)  # relative error
            scale = np.abs(a).max(axis=0)  # columns of 1 to 1e11: scaled for the solver
            scale[scale == 0] = 1.0
            fitted = nnls(a / scale * w[:, None], y * w) / scale
            coef[mode] = tuple(float(c) for c in fitted)
            tools[mode] = ts[0].tool
            sizes[mode] = tuple(sorted({t.services for t in ts}))
        return cls(coef, tools, sizes)

    def predict(self, mode: str, lines: int, loaded: int, rewrites: bool = True) -> float | None:
        """Seconds for a sync of ``lines`` text lines onto ``loaded`` lines of rules
        (``rewrites``: it changes some of them); None when the model has no fit for
        ``mode``."""
        c = self.coefficients.get(mode)
        if c is None:
            return None
        return float(np.dot(c, _features(float(lines), float(loaded), rewrites)))

    def to_dict(self) -> dict[str, Any]:
        return {
            mode: {
                "tool": self.tools[mode],
                "services_fitted": list(self.fitted_on[mode]),
                **dict(zip(TERMS, c)),
            }
            for mode, c in self.coefficients.items()
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> SyncTimeModel:
        coef, tools, sizes = {}, {}, {}
        for mode, entry in data.items():
            try:
                coef[mode] = tuple(float(entry[t]) for t in TERMS)
                tools[mode] = str(entry["tool"])
                sizes[mode] = tuple(int(s) for s in entry["services_fitted"])
            except (KeyError, TypeError, ValueError):
                raise InputError(
                    f"needs {', '.join(TERMS)}, tool and services_fitted",
                    field=f"sync_model.{mode}",
                ) from None
        return cls(coef, tools, sizes)


def validation(model: SyncTimeModel, timings: Iterable[SyncTiming]) -> list[dict[str, Any]]:
    """Per (mode, services, kind): measured median seconds, predicted, and the error
    relative to the measurement."""
    groups: dict[tuple[str, int, str], list[SyncTiming]] = {}
    for t in timings:
        groups.setdefault((t.mode, t.services, t.kind), []).append(t)
    rows = []
    for (mode, n, kind), ts in sorted(groups.items()):
        measured = float(np.median([t.seconds for t in ts]))
        predicted = model.predict(
            mode,
            int(np.median([t.lines for t in ts])),
            int(np.median([t.loaded for t in ts])),
            ts[0].rewrites,
        )
        rows.append(
            {
                "mode": mode,
                "services": n,
                "kind": kind,
                "measured_s": measured,
                "predicted_s": predicted,
                "error": None if predicted is None else predicted / measured - 1.0,
            }
        )
    return rows


def timings_to_json(timings: Iterable[SyncTiming]) -> list[dict[str, Any]]:
    return [asdict(t) for t in timings]


def timings_from_json(rows: Iterable[Mapping[str, Any]]) -> list[SyncTiming]:
    try:
        return [SyncTiming(**dict(r)) for r in rows]
    except TypeError as exc:
        raise InputError(f"not a sync timing ({exc})", field="sync_runs") from None


CalibrationArg = Mapping[str, Any] | str | Path | Literal["auto"] | None
# modes whose syncs are loaded by a tool the calibration times (runs[].load_seconds)
_LOADED_BY = {"iptables": "iptables-restore", "nftables": "nft -f"}


@dataclass(frozen=True)
class ProgramTimeModel:
    """Kernel programming time of a sync, from a calibration's ruleset loads.

    ``points[mode]``: (text lines, seconds) of the calibration's loads, by lines; a sync
    of ``lines`` lines is predicted by linear interpolation through (0, 0) and those
    points, and beyond the largest by the last segment's slope."""

    points: Mapping[str, tuple[tuple[float, float], ...]]
    source: str
    kernel: str = ""
    syncs: SyncTimeModel | None = None  # the calibration's sync_model, when it has one
    sync_kernel: str = ""  # the kernel the sync model was measured on

    @classmethod
    def from_calibration(
        cls, calibration: Mapping[str, Any], source: str = "calibration"
    ) -> ProgramTimeModel:
        """The load times of a ``kproxy-emu calibrate`` file (its ``runs``)."""
        points: dict[str, list[tuple[float, float]]] = {}
        runs = calibration.get("runs", [])
        if not isinstance(runs, list):
            raise InputError("must be a list", field="runs", value=type(runs).__name__)
        for run in runs:
            if not isinstance(run, Mapping):
                continue
            mode, lines, seconds = run.get("mode"), run.get("lines"), run.get("load_seconds")
            if mode in _LOADED_BY and isinstance(lines, int) and isinstance(seconds, float):
                points.setdefault(str(mode), []).append((float(lines), seconds))
        syncs = calibration.get("sync_model")
        if syncs is not None and not isinstance(syncs, Mapping):
            raise InputError("must be a mapping", field="sync_model", value=type(syncs).__name__)
        return cls(
            {m: tuple(sorted(p)) for m, p in points.items()},
            source,
            str(calibration.get("kernel", "")),
            SyncTimeModel.from_dict(syncs) if syncs else None,
            str(calibration.get("sync_kernel", calibration.get("kernel", ""))),
        )

    @classmethod
    def load(cls, calibration: CalibrationArg = "auto") -> ProgramTimeModel | None:
        """A model from a calibration: a mapping, a file, ``"auto"`` (the file in
        ``$KPROXY_EMU_CALIBRATION``, else ~/.cache/kproxy-emu/calibration.json, when one
        exists) or None (no model)."""
        if calibration is None:
            return None
        if isinstance(calibration, Mapping):
            return cls.from_calibration(calibration)
        if calibration == "auto":
            default = Path(
                os.environ.get(
                    "KPROXY_EMU_CALIBRATION",
                    Path.home() / ".cache" / "kproxy-emu" / "calibration.json",
                )
            )
            if not default.exists():
                return None
            calibration = default
        try:
            data = json.loads(Path(calibration).read_text())
        except (OSError, ValueError) as exc:
            raise InputError(
                f"cannot read the calibration file ({exc})", field="calibration", value=calibration
            ) from None
        if not isinstance(data, Mapping):
            raise InputError("not a calibration file", field="calibration", value=calibration)
        return cls.from_calibration(data, str(calibration))

    def predict(
        self, mode: str, lines: int, loaded: int = 0, rewrites: bool = True
    ) -> float | None:
        """Seconds the kernel takes to load a sync of ``lines`` text lines in ``mode`` onto
        ``loaded`` lines of rules already installed (0: into empty tables; ``rewrites``:
        it changes rules already there, else it only adds); None when the calibration has
        no loads of that mode. The sync model when it covers the mode, else the
        interpolation of whole-ruleset loads (which ignores ``loaded`` and ``rewrites``)."""
        if self.syncs is not None and mode in self.syncs.coefficients:
            return self.syncs.predict(mode, lines, loaded, rewrites)
        pts = self.points.get(mode)
        if not pts:
            return None
        xs = [0.0] + [p[0] for p in pts]
        ys = [0.0] + [p[1] for p in pts]
        if lines <= xs[-1]:
            return float(np.interp(float(lines), xs, ys))
        slope = (ys[-1] - ys[-2]) / (xs[-1] - xs[-2]) if xs[-1] > xs[-2] else 0.0
        return ys[-1] + (lines - xs[-1]) * slope

    def basis(self, mode: str) -> str | None:
        """What a prediction for ``mode`` rests on, in words (None: no prediction)."""
        if self.syncs is not None and mode in self.syncs.coefficients:
            sizes = ", ".join(str(n) for n in self.syncs.fitted_on[mode])
            on = f" on kernel {self.sync_kernel}" if self.sync_kernel else ""
            return (
                f"{self.syncs.tools[mode]} wall time of full loads and single-change syncs "
                f"at {sizes} services{on} ({self.source}), fitted in the sync's lines "
                "and the lines already loaded"
            )
        kernel = f" on kernel {self.kernel}" if self.kernel else ""
        pts = self.points.get(mode)
        if not pts:
            return None
        sizes = ", ".join(f"{int(x)}" for x, _ in pts)
        return (
            f"{_LOADED_BY[mode]} wall time of whole rulesets of {sizes} lines{kernel} "
            f"({self.source}), interpolated linearly in the sync's lines"
        )
