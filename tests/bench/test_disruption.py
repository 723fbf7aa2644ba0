"""The disruption pass: when one endpoint of a Service is removed or added, which client
flows move. Established flows stay on their endpoint through conntrack in every kube-proxy
mode (those on a removed endpoint keep going to it); new connections of the same clients
are drawn again by the random modes (about 1 - 1/N move) and mostly kept by IPVS's Maglev
scheduler; the same seed gives the same records."""

import math

import pytest

from kproxy_emu.bench import disruption
from kproxy_emu.dataplane import IpvsOptions
from kproxy_emu.errors import InputError

FLOWS = 4000
KUBE_PROXY_MODES = ("iptables", "nftables", "ipvs", "userspace")


@pytest.fixture(scope="module")
def records():
    recs = disruption.run(KUBE_PROXY_MODES, flows=FLOWS, seed=0)
    return {(r["mode"], r["variant"], r["change"]): r for r in recs}


def test_every_mode_and_ipvs_scheduler_has_a_record_per_change(records):
    rows = [("iptables", None), ("nftables", None)]
    rows += [("ipvs", s) for s in ("rr", "sh", "mh")] + [("userspace", None)]
    assert sorted(records, key=str) == sorted(
        [(m, v, c) for m, v in rows for c in ("remove", "add")], key=str
    )
    for r in records.values():
        assert r["flow"] == "disruption" and r["flows"] == FLOWS
        assert r["served_before"] == FLOWS  # every client reached the Service
        assert r["endpoints"] == 10
        assert r["endpoints_after"] == (9 if r["change"] == "remove" else 11)


def test_established_flows_keep_their_endpoint_in_every_kube_proxy_mode(records):
    for key, r in records.items():
        assert r["established_ct_hit"] == 1.0, key
        assert r["established_moved"] == 0.0, key  # flows whose endpoint stayed
        assert r["established_moved_removed"] == 0.0, key
        assert r["established_dropped"] == 0.0, key
        if r["change"] == "remove":
            # about one flow in ten was on the removed endpoint: all still sent there
            assert 0.05 * FLOWS < r["removed_flows"] < 0.15 * FLOWS, key
            assert r["kept_flows"] == FLOWS - r["removed_flows"]
            on_removed = r["removed_flows"] / FLOWS
            assert r["established_to_removed"] == pytest.approx(on_removed, abs=1e-4), key
            assert r["established_broken"] == r["established_to_removed"], key
        else:
            assert r["removed_flows"] == 0 and r["established_broken"] == 0.0, key


def test_new_connections_of_removed_endpoint_flows_all_move(records):
    for key, r in records.items():
        assert r["new_failed"] == 0.0, key
        if r["change"] == "remove":
            assert r["new_moved_removed"] == 1.0, key
            share = r["removed_flows"] / FLOWS
            kept = r["new_moved_excluding_removed"] * (1 - share)
            assert r["new_moved"] == pytest.approx(share + kept, abs=2e-4), key


@pytest.mark.parametrize("mode", ["iptables", "nftables"])
@pytest.mark.parametrize("change", ["remove", "add"])
def test_random_modes_redraw_new_connections(records, mode, change):
    """A random pick over N' endpoints keeps a flow's endpoint with probability 1/N':
    within four binomial standard deviations of 1 - 1/N' over the flows counted."""
    r = records[(mode, None, change)]
    p = r["random_expectation"]
    assert p == pytest.approx(1 - 1 / r["endpoints_after"], abs=1e-4)
    n = r["kept_flows"]
    assert abs(r["new_moved_excluding_removed"] - p) < 4 * math.sqrt(p * (1 - p) / n)


def test_ipvs_maglev_keeps_most_new_connections_source_hashing_does_not(records):
    """mh (Maglev) moves the removed endpoint's flows and ~1 % of the others; an added
    endpoint takes about 1/(N+1). sh fills its 256 buckets by walking the destination list
    in turn (ip_vs_sh_reassign): a destination more or less shifts nearly every bucket,
    so its new connections move about as much as random picks."""
    mh_rm, mh_add = records[("ipvs", "mh", "remove")], records[("ipvs", "mh", "add")]
    assert mh_rm["new_moved_excluding_removed"] < 0.03
    assert mh_add["new_moved"] < 2 / mh_add["endpoints_after"]
    for change in ("remove", "add"):
        sh = records[("ipvs", "sh", change)]
        assert sh["new_moved_excluding_removed"] > 0.5 * sh["random_expectation"]


def test_same_seed_same_records_and_the_seed_matters():
    a = disruption.run(["iptables", "ipvs"], flows=500, seed=5)
    b = disruption.run(["iptables", "ipvs"], flows=500, seed=5)
    c = disruption.run(["iptables", "ipvs"], flows=500, seed=6)
    assert a == b
    assert a != c


@pytest.mark.parametrize("frontend", ["nodePort", "clusterIP"])
def test_other_frontends(frontend):
    recs = disruption.measure("nftables", flows=300, frontend=frontend, changes=["remove"])
    (r,) = recs
    assert r["frontend"] == frontend and r["served_before"] == 300
    assert r["established_moved"] == 0.0 and r["removed_flows"] > 0


def test_an_options_object_is_measured_as_given():
    (r,) = disruption.run([IpvsOptions(scheduler="mh")], flows=200, seed=1)[:1]
    assert (r["mode"], r["variant"]) == ("ipvs", "mh")


@pytest.mark.parametrize(
    "kwargs, field",
    [
        (dict(endpoints=1), "endpoints"),
        (dict(flows=0), "flows"),
        (dict(frontend="externalIP"), "frontend"),
        (dict(changes=["scale"]), "changes"),
    ],
)
def test_bad_input(kwargs, field):
    with pytest.raises(InputError) as err:
        disruption.measure("iptables", **kwargs)
    assert err.value.field == field
