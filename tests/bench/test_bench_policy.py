"""bench-policy: the NetworkPolicy stage's sweep (pods x policies x form) and synth's
policies."""

import json

import pytest

from kproxy_emu import synth
from kproxy_emu.bench import policy
from kproxy_emu.errors import InputError
from kproxy_emu.policy import compile_policies


def test_synth_policies_are_seeded_and_leave_the_cluster_alone():
    base = synth.cluster(30, endpoints=3, pods=True, seed=5)
    with_pol = synth.cluster(30, endpoints=3, pods=True, seed=5, policies=40)
    again = synth.cluster(30, endpoints=3, pods=True, seed=5, policies=40)
    assert sorted(base.services) == sorted(with_pol.services)
    assert [p.pod_ips for p in base.pods.values()] == [p.pod_ips for p in with_pol.pods.values()]
    assert len(with_pol.network_policies) == 40
    assert [p.spec for p in with_pol.network_policies.values()] == [
        p.spec for p in again.network_policies.values()
    ]
    kinds = {name.rsplit("-", 1)[0] for _, name in with_pol.network_policies}
    assert kinds == set(synth.POLICY_KINDS)
    assert len(compile_policies(with_pol.network_policies.values())) == 40  # all valid
    assert all("team" in ns.labels for ns in with_pol.namespaces.values())
    assert not base.network_policies and "team" not in next(iter(base.namespaces.values())).labels
    only = synth.cluster(10, pods=True, policies=5, policy_mix={"default-deny": 1})
    assert all(p.name.startswith("default-deny") for p in only.network_policies.values())
    with pytest.raises(InputError):
        synth.cluster(10, policies=5, policy_mix={"deny-all": 1})


def test_sweep_records():
    recs = policy.sweep([60], [0, 10], ["none", "chains", "identity"], packets=2000, repeats=1)
    assert len(recs) == 6
    by = {(r["policies"], r["engine"]): r for r in recs}
    assert by[(10, "chains")]["policy_rules"] > by[(0, "chains")]["policy_rules"]
    assert by[(10, "identity")]["map_entries"] > 0
    # both forms decide alike: the same share denied
    assert by[(10, "chains")]["denied_share"] == by[(10, "identity")]["denied_share"]
    assert by[(0, "none")]["denied_share"] == 0
    assert "ns/pkt" in policy.table(recs)


def test_cli(cli, tmp_path):
    out = tmp_path / "p.json"
    r = cli(
        "bench-policy",
        "--pods",
        "40",
        "--policies",
        "5",
        "--packets",
        "500",
        "--repeats",
        "1",
        "--json",
        str(out),
    )
    assert r.returncode == 0, r.stderr
    data = json.loads(out.read_text())
    assert data["kind"] == "bench-policy" and len(data["records"]) == 3
    bad = cli("bench-policy", "--policy-engines", "ebpf")
    assert bad.returncode == 2 and "--policy-engines" in bad.stderr
