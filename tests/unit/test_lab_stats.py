"""The lab's pure parts (no root needed): chi-square, verdict classification, the
calibration fit, source-port allocation."""

import itertools
import math

import numpy as np
import pytest

from kproxy_emu.lab.calibrate import fit
from kproxy_emu.lab.compare import chi2_sf, chi2_stat
from kproxy_emu.lab.replay import PortAllocator, Probe, classify
from kproxy_emu.lab.topology import LabError, LabPlan


@pytest.mark.parametrize(
    "x, dof, p",
    [
        (3.841458820694124, 1, 0.05),
        (6.634896601021214, 1, 0.01),
        (5.991464547107979, 2, 0.05),
        (11.070497693516351, 5, 0.05),
        (23.209251158954356, 10, 0.01),
        (124.3421134, 100, 0.05),
        (1.0, 1, 0.31731050786291415),
        (0.5, 3, 0.9188914116936569),
    ],
)
def test_chi2_sf_matches_tables(x, dof, p):
    assert chi2_sf(x, dof) == pytest.approx(p, rel=1e-6)


def test_chi2_sf_edges_and_monotone():
    assert chi2_sf(0.0, 4) == 1.0 and chi2_sf(-1.0, 4) == 1.0
    assert chi2_sf(1e4, 3) < 1e-300 + 1e-12
    xs = np.linspace(0.01, 60, 200)
    ps = [chi2_sf(float(x), 7) for x in xs]
    assert all(a >= b for a, b in itertools.pairwise(ps))
    # dof 2 has a closed form: exp(-x/2)
    for x in (0.3, 2.0, 9.0, 40.0):
        assert chi2_sf(x, 2) == pytest.approx(math.exp(-x / 2), rel=1e-9)


def test_chi2_stat_uniform_draws_pass_and_skew_fails():
    rng = np.random.default_rng(4)
    counts = np.bincount(rng.integers(0, 4, 2000), minlength=4).tolist()
    stat, dof = chi2_stat(counts, [0.25] * 4)
    assert dof == 3 and chi2_sf(stat, dof) > 1e-3
    stat, dof = chi2_stat([700, 500, 400, 400], [0.25] * 4)
    assert chi2_sf(stat, dof) < 1e-6


P = Probe("tcp", "10.0.0.2", 40000, "172.30.0.41", 80, "pod")


@pytest.mark.parametrize(
    "client, reply, served, want",
    [
        ("answered", ("10.180.0.1", 80, "10.0.0.2", 40000), True, ("DNAT", "10.180.0.1:80", False)),
        ("answered", ("10.180.0.1", 80, "10.0.0.1", 61000), True, ("DNAT", "10.180.0.1:80", True)),
        ("answered", ("172.30.0.41", 80, "10.0.0.2", 40000), True, ("ACCEPT", None, False)),
        ("refused", None, False, ("REJECT", None, False)),
        ("timeout", None, False, ("DROP", None, False)),
        # confirmed at POSTROUTING, then dropped in INPUT although a listener waits
        ("timeout", ("172.30.0.41", 80, "10.0.0.2", 40000), True, ("DROP", None, False)),
        # accepted towards an address nobody in the lab answers for
        ("timeout", ("172.30.0.41", 80, "10.0.0.2", 40000), False, ("ACCEPT", None, False)),
        ("refused", ("10.180.0.1", 80, "10.0.0.2", 40000), True, ("REJECT", None, False)),
        ("answered", None, True, ("UNKNOWN", None, False)),
        # a host client's own packet dropped in OUTPUT (send fails with EPERM, no ICMP follows)
        ("dropped", None, False, ("DROP", None, False)),
    ],
)
def test_classify(client, reply, served, want):
    assert classify(P, client, reply, served, 0.001).signature == want


def test_classify_late_client_is_not_a_drop():
    """A timeout whose conntrack entry saw the answer pass: the client was off the CPU."""
    reply = ("10.180.0.1", 80, "10.0.0.2", 40000)
    r = classify(P, "timeout", reply, True, 0.6, seen_reply=True)
    assert r.signature == ("DNAT", "10.180.0.1:80", False) and r.client == "answered"
    assert classify(P, "timeout", reply, True, 0.6).signature == ("DROP", None, False)


def test_fit_shares_one_slope_across_drifting_runs():
    pts = []
    for run, offset in ((100, 40_000.0), (1000, 55_000.0), (5000, 47_000.0)):
        for rules in (12, run // 2, run + 11):
            pts.append((run, rules, offset + 14.0 * rules))
    slope, base = fit(pts)
    assert slope == pytest.approx(14.0)
    assert 40_000 < base < 55_000


def test_ports_are_never_reused_and_skip_listeners():
    alloc = PortAllocator({1025, 1027}, low=1025, high=1030)
    assert [alloc.take("a") for _ in range(4)] == [1026, 1028, 1029, 1030]
    assert alloc.take("b") == 1026
    with pytest.raises(LabError, match="exhausted"):
        alloc.take("a")


def test_plan_places_gateway_outside_used_addresses():
    plan = LabPlan.build(["192.168.0.2"], None, ["10.0.0.0/30"], ["10.0.0.1"], [])
    assert plan.gateway == "10.0.0.2" and plan.node_addrs == [("192.168.0.2", 32)]
    with pytest.raises(LabError, match="no free address"):
        LabPlan.build(["192.168.0.2"], None, ["10.0.0.0/30"], ["10.0.0.1", "10.0.0.2"], [])


def test_lab_refuses_clearly_without_root_or_tools(monkeypatch):
    from kproxy_emu.lab import env

    monkeypatch.setattr(env.os, "geteuid", lambda: 1000)
    with pytest.raises(env.LabUnavailable, match="needs root"):
        env.check()
    monkeypatch.setattr(env.os, "geteuid", lambda: 0)
    real_which = env.shutil.which
    monkeypatch.setattr(
        env.shutil, "which", lambda tool: None if tool in ("nft", "nfacct") else real_which(tool)
    )
    with pytest.raises(env.LabUnavailable, match=r"nft \(Debian package nftables\)"):
        env.check("nftables")
    with pytest.raises(env.LabUnavailable, match=r"nfacct \(Debian package nfacct\)"):
        env.check("iptables")
    with pytest.raises(env.LabUnavailable, match="not 'ipvs'"):
        env.check("ipvs")
    assert "nfacct" in env.unavailable_reason("iptables")  # the reason tests skip with
