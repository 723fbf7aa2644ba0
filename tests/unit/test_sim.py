"""The step API (kproxy_emu.sim), through public names only: what a simulator imports."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest

import kproxy_emu
from kproxy_emu import (
    Added,
    Dataplane,
    Deleted,
    InputError,
    ProgramTimeModel,
    Simulator,
    Snapshot,
    StepSync,
    Updated,
    packets,
    synth,
)
from kproxy_emu.model import NetworkPolicy

CALIBRATION = {
    "kernel": "6.1-test",
    "runs": [
        {"mode": "iptables", "lines": 1000, "load_seconds": 0.1},
        {"mode": "iptables", "lines": 3000, "load_seconds": 0.5},
        {"mode": "nftables", "lines": 1000, "load_seconds": 0.2},
    ],
}


def _cluster(**kw):
    return synth.cluster(30, seed=3, endpoints=3, **kw)


def _not_ready(sl):
    eps = list(sl.endpoints)
    eps[0] = dataclasses.replace(eps[0], ready=False, serving=False)
    return dataclasses.replace(sl, endpoints=eps)


def _probe(sim, svc, t, sport=40000):
    line = f"tcp 10.244.9.9:{sport} -> {svc.cluster_ip}:{svc.ports[0].port} from=pod"
    return sim.process(packets.from_strings([line], ts=t))


def test_the_public_names_are_exported():
    for name in ("Simulator", "StepSync", "Snapshot", "ProgramTimeModel"):
        assert name in kproxy_emu.__all__
    assert {"Added", "Updated", "Deleted"} <= set(kproxy_emu.__all__)


@pytest.mark.parametrize("mode", ["iptables", "nftables", "ipvs", "userspace", "ebpf"])
def test_apply_process_snapshot_in_every_mode(mode):
    sim = Simulator(_cluster(), mode, seed=1, calibration=CALIBRATION)
    assert len(sim.syncs) == 1 and sim.syncs[0].full and sim.syncs[0].at == 0.0
    batch = packets.synth(sim.dataplane, 500, seed=2)
    verdicts = sim.process(batch)
    assert verdicts.dtype == packets.VERDICT_DTYPE and len(verdicts) == 500
    sl = next(iter(sim.cluster.endpoint_slices.values()))
    step = sim.apply([Updated(_not_ready(sl))], at=sim.clock + 2.0)
    assert isinstance(step, StepSync) and step.ok
    assert step.at == sim.clock
    assert (sl.namespace, sl.service_name) in step.changed
    cost = step.cost()
    assert cost["lines"] == step.lines and cost["bytes"] == step.bytes > 0
    if mode in ("iptables", "nftables"):
        assert step.predicted_program_s is not None and step.predicted_program_s > 0
        assert step.programmed_at == step.at + step.predicted_program_s
        assert "lines" in (step.program_basis or "")
    else:  # the calibration has no load times for these modes
        assert step.predicted_program_s is None and step.program_basis is None
    snap = sim.snapshot()
    assert isinstance(snap, Snapshot) and snap.clock == sim.clock and snap.mode == mode
    c = snap.counters
    assert c["packets"] == 500 == sum(c[a.name] for a in packets.Action)
    assert c["syncs"] == 2
    if mode == "ebpf":  # its CT maps are its own
        assert len(snap.conntrack) == 0
    else:
        assert len(snap.conntrack) > 0 and (snap.conntrack["expires"] > snap.clock).all()
        assert c["conntrack_entries"] >= len(snap.conntrack)
    json.dumps(snap.to_dict())  # plain data
    json.loads(sim.sync_log().splitlines()[-1])


def test_same_steps_same_seed_same_verdicts():
    def run():
        sim = Simulator(_cluster(), "iptables", seed=5, calibration=None)
        batch = packets.synth(sim.dataplane, 300, seed=1)
        out = [sim.process(batch[:150])]
        sl = next(iter(sim.cluster.endpoint_slices.values()))
        sim.apply([Updated(_not_ready(sl))], at=float(batch["ts"][149]))
        out.append(sim.process(batch[150:]))
        return np.concatenate(out)

    assert run().tobytes() == run().tobytes()


def test_the_same_events_as_the_dataplane():
    cluster = _cluster()
    sim = Simulator(cluster, "nftables", seed=1, calibration=None)
    dp = Dataplane(cluster, "nftables", seed=1)
    sl = next(iter(cluster.endpoint_slices.values()))
    svc = next(iter(cluster.services.values()))
    events = [Updated(_not_ready(sl)), Deleted("Service", svc.namespace, svc.name)]
    assert sim.apply(events, at=1.0).result.text == dp.apply(events).text
    assert sim.dataplane.render() == dp.render()
    assert svc.key not in sim.cluster.services and svc.key in cluster.services


def test_time_only_moves_forward():
    sim = Simulator(_cluster(), "iptables", calibration=None)
    svc = next(iter(sim.cluster.services.values()))
    sim.apply([], at=5.0)
    assert sim.clock == 5.0
    with pytest.raises(InputError, match="before the"):
        sim.apply([], at=4.0)
    with pytest.raises(InputError, match="before the node's clock"):
        _probe(sim, svc, 4.5)
    for bad in (float("nan"), "soon", True):
        with pytest.raises(InputError):
            sim.apply([], at=bad)
    assert _probe(sim, svc, 5.0)["action"][0] == packets.Action.DNAT
    sim.apply([])  # at the clock
    assert sim.syncs[-1].at == 5.0


def test_bad_events_are_input_errors():
    sim = Simulator(_cluster(), "iptables", calibration=None)
    svc = next(iter(sim.cluster.services.values()))
    with pytest.raises(InputError, match="exists"):
        sim.apply([Added(svc)])
    with pytest.raises(InputError, match="no object"):
        sim.apply([Deleted("NetworkPolicy", "ns", "none")])
    with pytest.raises(InputError):
        sim.apply([Deleted("ConfigMap", "ns", "x")])


def test_network_policy_events_reach_the_policy_stage():
    cluster = _cluster(pods=True)
    svc = next(iter(cluster.services.values()))
    sim = Simulator(cluster, "iptables", seed=1, policy_engine="chains", calibration=None)
    assert _probe(sim, svc, 1.0)["action"][0] == packets.Action.DNAT
    deny = NetworkPolicy(
        svc.namespace, "deny", spec={"podSelector": {}, "policyTypes": ["Ingress"]}
    )
    sim.apply([Added(deny)], at=2.0)
    assert _probe(sim, svc, 3.0, sport=40001)["action"][0] == packets.Action.DROP
    assert sim.snapshot().counters["policy_ingress"] == 1
    with pytest.raises(InputError, match="exists"):
        sim.apply([Added(deny)])
    sim.apply([Deleted("NetworkPolicy", svc.namespace, "deny")], at=4.0)
    assert _probe(sim, svc, 5.0, sport=40002)["action"][0] == packets.Action.DNAT
    assert ("deny" not in {n for _, n in sim.cluster.network_policies}) and not (
        cluster.network_policies
    )


def test_affinity_entries_in_iptables_mode():
    sim = Simulator(synth.cluster(20, seed=1, affinity_share=1.0), "iptables", calibration=None)
    sim.process(packets.synth(sim.dataplane, 200, seed=1, origin_mix={"pod": 1.0}))
    aff = sim.snapshot().affinity
    assert len(aff) > 0 and (aff["list"] >= 0).all() and (aff["client_ip"] != 0).all()


def test_the_program_time_model():
    model = ProgramTimeModel.from_calibration(CALIBRATION)
    assert model.predict("iptables", 0) == 0.0
    assert model.predict("iptables", 500) == pytest.approx(0.05)
    assert model.predict("iptables", 2000) == pytest.approx(0.3)
    assert model.predict("iptables", 4000) == pytest.approx(0.7)  # the last slope
    assert model.predict("nftables", 2000) == pytest.approx(0.4)  # one point: through 0
    assert model.predict("ipvs", 1000) is None and model.basis("ipvs") is None
    assert "kernel 6.1-test" in (model.basis("iptables") or "")
    assert ProgramTimeModel.load(None) is None


def test_the_repositorys_calibration_gives_predictions(tmp_path):
    from pathlib import Path

    path = Path(__file__).resolve().parents[2] / "benchmarks" / "kernel-calibration.json"
    model = ProgramTimeModel.load(path)
    assert model is not None and set(model.points) == {"iptables", "nftables"}
    with pytest.raises(InputError):
        ProgramTimeModel.load(tmp_path / "missing.json")


USER_SCRIPT = """\
import dataclasses
import numpy as np
from kproxy_emu import Simulator, Snapshot, StepSync, Updated, packets, synth

sim = Simulator(synth.cluster(5), "nftables", seed=1, calibration=None)
sl = next(iter(sim.cluster.endpoint_slices.values()))
step: StepSync = sim.apply([Updated(dataclasses.replace(sl))], at=1.0)
cost: dict[str, int] = step.cost()
when: float | None = step.predicted_program_s
verdicts: np.ndarray = sim.process(packets.empty_packets(0))
snap: Snapshot = sim.snapshot()
reveal_type(step.predicted_program_s)
reveal_type(snap.counters)
"""


@pytest.mark.slow
def test_a_users_strict_mypy_accepts_the_step_api(tmp_path):
    """A simulator's script using the step API passes ``mypy --strict`` against the
    installed-style package (types, not Any)."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    (tmp_path / "user.py").write_text(USER_SCRIPT)
    proc = subprocess.run(
        [sys.executable, "-m", "mypy", "--strict", "--no-incremental", "user.py"],
        cwd=tmp_path,
        env=dict(os.environ, PYTHONPATH=str(root)),
        capture_output=True,
        text=True,
    )
    out = proc.stdout + proc.stderr
    assert "error" not in out.replace("note:", ""), out
    assert 'Revealed type is "float | None"' in out
    assert 'Revealed type is "typing.Mapping[str, int]"' in out
