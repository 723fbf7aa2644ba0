"""The sync-time model: the fit, its predictions, and where the Dataplane and the step API
report them (kproxy_emu/programtime.py; the lab measurements are tests/lab)."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from kproxy_emu import Dataplane, ProgramTimeModel, Simulator, synth
from kproxy_emu.errors import InputError
from kproxy_emu.programtime import (
    SyncTimeModel,
    SyncTiming,
    nnls,
    timings_from_json,
    timings_to_json,
    validation,
)

TRUE = {
    # c0, per line, per line^2, per line^3, per loaded line, per loaded line when
    # rewriting, per line x loaded line, per loaded line^2
    "iptables": (0.004, 8e-6, 0.0, 0.0, 2e-6, 0.0, 5e-10, 0.0),
    "nftables": (0.003, 3e-6, 1.2e-9, 3e-15, 0.0, 3e-6, 0.0, 2e-12),
}


def _timings(mode: str, sizes, tool="t") -> list[SyncTiming]:
    c = TRUE[mode]
    out = []
    for n in sizes:
        full = 14 * n
        rows = [("full", full, 0, True), ("endpoint-added", 20, full, True)]
        rows += [("service-added", 15, full, False), ("service-deleted", n // 2, full, True)]
        for kind, lines, loaded, rewrites in rows:
            x = [1.0, lines, lines**2, lines**3, loaded, loaded if rewrites else 0.0]
            x += [lines * loaded, loaded**2]
            out.append(
                SyncTiming(mode, tool, n, kind, lines, loaded, float(np.dot(c, x)), rewrites)
            )
    return out


def test_nnls_matches_the_unconstrained_solution_when_it_is_feasible_and_clips_when_not():
    rng = np.random.default_rng(1)
    a = rng.uniform(0, 1, (40, 3))
    assert np.allclose(nnls(a, a @ np.array([1.0, 2.0, 3.0])), [1, 2, 3])
    # orthogonal columns: the constrained optimum is the unconstrained one clipped at 0
    q, _ = np.linalg.qr(rng.normal(size=(40, 3)))
    assert np.allclose(nnls(q, q @ np.array([1.0, 2.0, -3.0])), [1, 2, 0])


@pytest.mark.parametrize("mode", ["iptables", "nftables"])
def test_the_fit_recovers_the_terms_and_predicts_sizes_it_did_not_see(mode):
    model = SyncTimeModel.fit(_timings(mode, [1000, 2000, 5000]))
    assert model.fitted_on[mode] == (1000, 2000, 5000)
    assert np.allclose(model.coefficients[mode], TRUE[mode], rtol=1e-3, atol=1e-12)
    rows = validation(model, _timings(mode, [3000, 20000]))
    assert len(rows) == 8 and all(abs(r["error"]) < 1e-3 for r in rows)
    assert model.predict("ipvs", 10, 10) is None


def test_an_update_that_rewrites_costs_what_the_loaded_rules_cost():
    model = SyncTimeModel.fit(_timings("nftables", [1000, 5000, 10000]))
    adds = model.predict("nftables", 20, 140_000, rewrites=False)
    rewrite = model.predict("nftables", 20, 140_000, rewrites=True)
    assert adds is not None and rewrite is not None
    assert rewrite - adds == pytest.approx(3e-6 * 140_000, rel=1e-3)


def test_the_model_and_timings_round_trip_through_json():
    timings = _timings("iptables", [1000, 4000])
    model = SyncTimeModel.fit(timings)
    again = SyncTimeModel.from_dict(model.to_dict())
    assert again == model
    assert timings_from_json(timings_to_json(timings)) == timings
    with pytest.raises(InputError, match=r"sync_model\.iptables"):
        SyncTimeModel.from_dict({"iptables": {"c0": 1}})
    with pytest.raises(InputError, match="sync_runs"):
        timings_from_json([{"mode": "x"}])


def _calibration() -> dict:
    model = SyncTimeModel.fit(_timings("iptables", [500, 1000, 2000]))
    return {
        "kernel": "6.1-test",
        "runs": [{"mode": "iptables", "lines": 1000, "load_seconds": 0.1}],
        "sync_model": model.to_dict(),
    }


def test_the_program_time_model_prefers_the_sync_model():
    model = ProgramTimeModel.from_calibration(_calibration(), "cal.json")
    c = TRUE["iptables"]
    assert model.predict("iptables", 300, 14_000) == pytest.approx(
        c[0] + 300 * c[1] + 14_000 * c[4] + 300 * 14_000 * c[6], rel=1e-3
    )
    assert "single-change syncs at 500, 1000, 2000 services" in (model.basis("iptables") or "")
    # nftables has no sync model: the old interpolation (none here: no nftables loads)
    assert model.predict("nftables", 300) is None
    with pytest.raises(InputError, match="sync_model"):
        ProgramTimeModel.from_calibration({"sync_model": [1, 2]})


def _one_endpoint_more(cluster):
    sl = next(iter(cluster.endpoint_slices.values()))
    eps = [*sl.endpoints, dataclasses.replace(sl.endpoints[0], addresses=["10.250.0.9"])]
    new = dataclasses.replace(cluster, endpoint_slices=dict(cluster.endpoint_slices))
    new.endpoint_slices[sl.key] = dataclasses.replace(sl, endpoints=eps)
    return new


def _one_service_more(cluster):
    extra = synth.cluster(1, endpoints=2, seed=9)
    new = dataclasses.replace(
        cluster, services=dict(cluster.services), endpoint_slices=dict(cluster.endpoint_slices)
    )
    ((key, svc),) = extra.services.items()
    new.services[(key[0], "brand-new")] = dataclasses.replace(
        svc, name="brand-new", cluster_ip="172.31.9.9", cluster_ips=["172.31.9.9"]
    )
    return new


def test_every_sync_carries_its_prediction_and_whether_it_rewrites():
    cluster = synth.cluster(50, endpoints=3, seed=2)
    dp = Dataplane(cluster, "iptables", seed=1)
    full = dp.syncs[-1]
    assert full.full and full.rewrites and full.predicted_program_s is None
    assert dp.loaded_lines == full.lines
    dp.program_model = ProgramTimeModel.from_calibration(_calibration())
    update = dp.update(_one_endpoint_more(dp.cluster))
    assert not update.full and update.rewrites
    c = TRUE["iptables"]
    assert update.predicted_program_s == pytest.approx(
        c[0] + update.lines * c[1] + full.lines * c[4] + update.lines * full.lines * c[6],
        rel=1e-3,
    )
    added = dp.update(_one_service_more(dp.cluster))
    assert not added.full and not added.rewrites  # a new Service only


def test_the_simulator_predicts_with_the_sync_model():
    from kproxy_emu import Updated

    sim = Simulator(synth.cluster(40, endpoints=3, seed=4), "iptables", calibration=_calibration())
    sl = next(iter(sim.cluster.endpoint_slices.values()))
    eps = [*sl.endpoints, dataclasses.replace(sl.endpoints[0], addresses=["10.250.0.7"])]
    step = sim.apply([Updated(dataclasses.replace(sl, endpoints=eps))], at=2.0)
    assert step.predicted_program_s is not None
    assert step.predicted_program_s == step.result.predicted_program_s
    assert "single-change syncs" in (step.program_basis or "")
