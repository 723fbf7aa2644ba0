"""The change tracker: Dataplane.update and Dataplane.apply keep the proxy view equal to
a full rebuild, sync what changed as before, and refuse objects edited in place."""

from __future__ import annotations

import copy
import dataclasses

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kproxy_emu import Dataplane, packets, synth
from kproxy_emu.dataplane.dataplane import changed_services
from kproxy_emu.errors import InputError
from kproxy_emu.model.objects import ZONE_LABEL
from kproxy_emu.netfilter.iptables_text import render
from kproxy_emu.proxy import ProxyView
from kproxy_emu.proxy.tracker import Added, Deleted, Updated

BASE = synth.cluster(40, endpoints=3, seed=7, terminating_share=0.2, not_ready_share=0.2)


def _view_rows(view: ProxyView) -> list:
    return [dataclasses.astuple(sp) for sp in view.service_ports]


def _edit(cluster, draw_ops):
    """A copy of the cluster with the drawn edits (replace, delete, re-add, reorder)."""
    new = copy.copy(cluster)
    new.services = dict(cluster.services)
    new.endpoint_slices = dict(cluster.endpoint_slices)
    removed_slices = []
    for op, i, j in draw_ops:
        slices = list(new.endpoint_slices)
        services = list(new.services)
        if op == "toggle" and slices:
            key = slices[i % len(slices)]
            s = new.endpoint_slices[key]
            if s.endpoints:
                eps = list(s.endpoints)
                e = eps[j % len(eps)]
                eps[j % len(eps)] = dataclasses.replace(e, ready=not e.is_ready)
                new.endpoint_slices[key] = dataclasses.replace(s, endpoints=eps)
        elif op == "drop-endpoint" and slices:
            key = slices[i % len(slices)]
            s = new.endpoint_slices[key]
            eps = list(s.endpoints)
            if eps:
                del eps[j % len(eps)]
            new.endpoint_slices[key] = dataclasses.replace(s, endpoints=eps)
        elif op == "delete-slice" and slices:
            key = slices[i % len(slices)]
            removed_slices.append(new.endpoint_slices.pop(key))
        elif op == "readd-slice" and removed_slices:
            s = removed_slices.pop()
            new.endpoint_slices[s.key] = dataclasses.replace(s)
        elif op == "delete-service" and services:
            del new.services[services[i % len(services)]]
        elif op == "readd-service" and services:
            key = services[i % len(services)]
            svc = new.services.pop(key)
            new.services[key] = dataclasses.replace(svc)
        elif op == "port" and services:
            key = services[i % len(services)]
            svc = new.services[key]
            ports = [dataclasses.replace(p, port=p.port + 1) for p in svc.ports]
            new.services[key] = dataclasses.replace(svc, ports=ports)
        elif op == "same":  # an equal object: no change
            if slices:
                key = slices[i % len(slices)]
                new.endpoint_slices[key] = copy.deepcopy(new.endpoint_slices[key])
        elif op == "reorder":
            new.endpoint_slices = dict(reversed(list(new.endpoint_slices.items())))
    return new


OPS = st.lists(
    st.tuples(
        st.sampled_from(
            [
                "toggle",
                "drop-endpoint",
                "delete-slice",
                "readd-slice",
                "delete-service",
                "readd-service",
                "port",
                "same",
                "reorder",
            ]
        ),
        st.integers(0, 1000),
        st.integers(0, 1000),
    ),
    max_size=6,
)


@pytest.mark.parametrize("mode", ["iptables", "nftables", "ipvs"])
@settings(max_examples=12, deadline=None)
@given(steps=st.lists(OPS, min_size=1, max_size=4))
def test_incremental_view_equals_full_rebuild(mode, steps):
    """After any sequence of updates the view equals one built from scratch, each sync
    names the services a whole-cluster comparison finds changed, and the iptables sync
    text is exactly the rendered payload."""
    dp = Dataplane(copy.deepcopy(BASE), mode)
    for ops in steps:
        before = dp.cluster
        new = _edit(before, ops)
        result = dp.update(new)
        assert result.ok, result.error
        assert result.changed == changed_services(before, new)
        assert _view_rows(dp.view) == _view_rows(ProxyView(new, dp.options))
        assert dp.view.total_endpoints == ProxyView(new, dp.options).total_endpoints
        if mode == "iptables":
            assert result.text == render(result.payload)
    if mode == "iptables":  # (nftables keeps stale chains a while, IPVS drains servers)
        # the node ends where a fresh Dataplane on the final cluster starts
        fresh = Dataplane(copy.deepcopy(dp.cluster), mode)
        assert dp.render(sorted=True) == fresh.render(sorted=True)
        assert dp.render(format="save") == fresh.render(format="save")


@pytest.mark.parametrize("mode", ["iptables", "nftables", "ipvs"])
def test_apply_events_equal_update(mode):
    """apply(Added/Updated/Deleted) reaches the same rules, sync by sync, as update()
    with the same change, and leaves the caller's Cluster alone."""
    base = copy.deepcopy(BASE)
    by_update = Dataplane(copy.deepcopy(base), mode)
    by_events = Dataplane(base, mode)
    slice_key = next(k for k, s in base.endpoint_slices.items() if s.endpoints)
    s = base.endpoint_slices[slice_key]
    eps = [dataclasses.replace(s.endpoints[0], ready=False), *s.endpoints[1:]]
    changed = dataclasses.replace(s, endpoints=eps)
    svc_key = next(iter(base.services))
    extra = dataclasses.replace(base.services[svc_key], name="added-svc", cluster_ip="10.96.250.9")
    new = copy.copy(by_update.cluster)
    new.endpoint_slices = {**by_update.cluster.endpoint_slices, slice_key: changed}
    new.services = {k: v for k, v in by_update.cluster.services.items() if k != svc_key}
    new.services[extra.key] = extra
    a = by_update.update(new)
    b = by_events.apply(
        [Updated(changed), Deleted("Service", *svc_key), Added(extra)],
    )
    assert (a.text, a.changed, a.extra) == (b.text, b.changed, b.extra)
    assert by_update.render() == by_events.render()
    assert base.endpoint_slices[slice_key] is s and svc_key in base.services
    assert by_events.cluster.endpoint_slices[slice_key] is changed


def test_apply_rejects_bad_events():
    dp = Dataplane(copy.deepcopy(BASE))
    svc = next(iter(dp.cluster.services.values()))
    with pytest.raises(InputError, match="added, but an object of that name exists"):
        dp.apply([Added(svc)])
    with pytest.raises(InputError, match="no object of that name"):
        dp.apply([Updated(dataclasses.replace(svc, name="nope"))])
    with pytest.raises(InputError, match="no object of that name"):
        dp.apply([Deleted("EndpointSlice", "default", "nope")])
    with pytest.raises(InputError, match="no object of that name"):  # the policy stage's
        dp.apply([Deleted("Pod", "default", "x")])
    with pytest.raises(InputError) as info:
        dp.apply([Deleted("ConfigMap", "default", "x")])
    assert info.value.field == "kind" and info.value.value == "ConfigMap"


@pytest.mark.parametrize("mode", ["iptables", "nftables", "ipvs"])
def test_edit_in_place_is_refused(mode):
    """An endpoint turned not-ready in place used to vanish from render() while process()
    still sent traffic to it; now the edit itself fails, naming object, field and value,
    and replacing the object removes the endpoint from both."""
    cluster = synth.cluster(1, endpoints=1, seed=3, type_mix={"ClusterIP": 1})
    dp = Dataplane(cluster, mode)
    ((key, s),) = cluster.endpoint_slices.items()
    svc = next(iter(cluster.services.values()))
    with pytest.raises(InputError) as info:
        s.endpoints[0].ready = False
    assert info.value.field == "ready" and info.value.value is False
    assert "Endpoint" in info.value.obj
    with pytest.raises(InputError):
        s.endpoints.append(s.endpoints[0])
    with pytest.raises(InputError):
        svc.ports[0].port = 1
    with pytest.raises(InputError):
        s.labels["x"] = "y"
    line = f"tcp 10.0.0.7:40000 -> {svc.cluster_ip}:{svc.ports[0].port}"
    before = dp.process(packets.from_strings([line], origin="pod"))
    assert before["endpoint"][0] >= 0
    gone = dataclasses.replace(s, endpoints=[dataclasses.replace(s.endpoints[0], ready=False)])
    new = copy.copy(cluster)
    new.endpoint_slices = {key: gone}
    dp.update(new)
    after = dp.process(packets.from_strings([line.replace("40000", "40001")], origin="pod"))
    assert after["endpoint"][0] < 0
    ip = s.endpoints[0].addresses[0]
    assert {"iptables": "--to-destination ", "nftables": "dnat to ", "ipvs": "-r "}[mode] + ip in (
        Dataplane(cluster, mode).render()
    )
    assert f" {ip}:" not in dp.render().replace(f"__{ip}/", "")


def test_sealed_objects_stay_usable():
    """Sealed objects compare, copy, pickle and replace like the plain ones."""
    import pickle

    cluster = copy.deepcopy(BASE)
    plain = copy.deepcopy(cluster)
    Dataplane(cluster)
    s = next(iter(cluster.endpoint_slices.values()))
    p = plain.endpoint_slices[s.key]
    assert s == p and p == s and repr(s) == repr(p)
    assert pickle.loads(pickle.dumps(s)) == p
    for clone in (copy.copy(s), copy.deepcopy(s), dataclasses.replace(s)):
        clone.name = "editable"  # the copies are ordinary objects
    assert cluster.to_manifests() == plain.to_manifests()


def test_node_zone_change_resyncs_topology():
    """The emulated node's zone label is read on each change (topology hints); a change
    of it is a full sync."""
    cluster = synth.cluster(5, endpoints=2, seed=1)
    dp = Dataplane(cluster)
    node = dp.cluster.nodes[("", dp.options.node.name)]
    moved = dataclasses.replace(node, labels={**node.labels, ZONE_LABEL: "zone-z"})
    result = dp.apply([Updated(moved)])
    assert result.full and dp.options.node.zone == "zone-z"
    assert dp.apply([]).full is False


def test_update_without_changes_is_cheap_and_empty():
    dp = Dataplane(copy.deepcopy(BASE))
    result = dp.update()
    assert result.changed == set() and not result.full
    assert np.all(dp.view.service_ports == dp.view.service_ports)


@settings(max_examples=15, deadline=None)
@given(steps=st.lists(OPS, min_size=1, max_size=5))
def test_nftables_partial_sync_from_kept_ports_equals_visiting_every_port(steps):
    """The nftables proxier's partial sync from what ports wrote before gives the same
    transactions as kube-proxy's visit of every port."""
    from kproxy_emu.netfilter.nft_text import render_transaction

    kept = Dataplane(copy.deepcopy(BASE), "nftables")
    visiting = Dataplane(copy.deepcopy(BASE), "nftables")
    visiting.backend.proxier._partial = lambda *args: False
    for ops in steps:
        a = kept.update(_edit(kept.cluster, ops))
        b = visiting.update(_edit(visiting.cluster, ops))
        ta, tb = a.payload.transaction, b.payload.transaction
        table = kept.backend.table
        assert sorted(render_transaction(table, ta).splitlines()) == sorted(
            render_transaction(table, tb).splitlines()
        )
        assert a.text.count("\n") == b.text.count("\n") and a.extra == b.extra
        assert a.payload.stale_chains == b.payload.stale_chains
    assert kept.render() == visiting.render()


@settings(max_examples=15, deadline=None)
@given(steps=st.lists(OPS, min_size=1, max_size=5))
def test_iptables_sync_from_kept_ports_equals_a_fresh_compile(steps):
    """The iptables proxier's payload from kept port rules equals a compile from scratch
    against the node's chains, and its text is render(payload)."""
    from kproxy_emu.modes.iptables import compile_ruleset

    dp = Dataplane(copy.deepcopy(BASE), "iptables")
    for ops in steps:
        existing = list(dp.backend.proxier.node.ruleset().tables["nat"].chains)
        before = dp.cluster
        result = dp.update(_edit(before, ops))
        fresh = compile_ruleset(dp.view, changed=result.changed, existing_nat_chains=existing)
        assert result.text == render(fresh)


def test_one_endpoint_change_syncs_from_kept_ports():
    """The common update is not the every-port fallback (nftables) and reuses the other
    ports' rules (iptables)."""
    for mode in ("nftables", "iptables"):
        dp = Dataplane(copy.deepcopy(BASE), mode)
        kept = dict(dp.backend.proxier._ports)
        result = dp.update(_edit(dp.cluster, [("toggle", 0, 0)]))
        assert len(result.changed) == 1
        reused = [p for k, p in dp.backend.proxier._ports.items() if kept.get(k) is p]
        assert len(reused) >= len(dp.view.service_ports) - 3
        if mode == "nftables":
            assert dp.backend.proxier._last_partial


@settings(max_examples=15, deadline=None)
@given(steps=st.lists(OPS, min_size=1, max_size=5))
def test_ipvs_sync_from_changes_equals_comparing_whole_states(steps):
    """The IPVS kernel table and the sync text from the ports' changes equal comparing
    the whole previous and new states (what the IPVS proxier does)."""
    from_changes = Dataplane(copy.deepcopy(BASE), "ipvs")
    comparing = Dataplane(copy.deepcopy(BASE), "ipvs")
    proxier = comparing.backend.proxier
    compile_state = proxier.compile

    def whole(view):
        result = compile_state(view)
        result.shared_keys = True
        return result

    proxier.compile = whole
    for ops in steps:
        a = from_changes.update(_edit(from_changes.cluster, ops))
        b = comparing.update(_edit(comparing.cluster, ops))
        assert (a.text, a.extra) == (b.text, b.extra)
        assert from_changes.render(format="save") == comparing.render(format="save")


def test_update_on_a_nodes_own_tables_reads_its_chains():
    """With a node's own iptables (IptablesOptions(tables=...)), the first update reads
    the node's chains as kube-proxy reads iptables-save: chains no port uses go (-X)."""
    from kproxy_emu.dataplane.backend import IptablesOptions
    from kproxy_emu.modes.iptables import compile_ruleset
    from kproxy_emu.netfilter.iptables_parse import parse

    cluster = copy.deepcopy(BASE)
    dump = parse(Dataplane(copy.deepcopy(cluster)).render(format="save"))
    existing = list(dump.tables["nat"].chains)
    dp = Dataplane(cluster, IptablesOptions(tables=dump))
    new = _edit(cluster, [("delete-service", 0, 0)])
    result = dp.update(new)
    assert result.ok and result.payload.tables["nat"].deleted
    expected = compile_ruleset(dp.view, changed=result.changed, existing_nat_chains=existing)
    assert result.text == render(expected)
